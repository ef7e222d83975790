"""Service desk figures: tickets opened/s through REST, and the SLA sweep over 100,000 open tickets.

`run(env, tickets=2000, clients=8, open_tickets=100_000, due=100)`:
1. starts `crm serve contacts grpc` (the contact check) and `crm serve service-desk api`
   against the bench's servers, creates one contact through the contacts api, and
   opens `tickets` tickets with `clients` concurrent REST clients (each asks contacts
   over gRPC, chooses the SLA policy, seals the customer's text, appends, publishes);
2. seeds `open_tickets` open tickets in bulk (`EventStore.start_streams` in batches of
   1000, projected with bulk writes), `due` of them opened three hours ago so their
   15-minute first-response target is overdue, then times `TicketDesk.sweep()`:
   once finding and breaching the `due` tickets, then again (the view has not applied
   the breaches yet, so the same tickets are re-checked and nothing new is recorded).

Each breached ticket costs a stream load and an append; on nx-27017 a stream load takes
~0.5-1.5 s once the events collection holds 100,000 documents (it does not seem to use
the (stream_id, version) index well), so `due` stays small: the sweep's own query
over the 100,000 open tickets is what this figure is about.

Standalone: `python -m bench.servicedesk [--open-tickets N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from typing import Any

from bench.environment import Environment, wait_ready
from bench.measure import Http
from bench.stats import latency_summary, rate
from crmkit import stack
from crmkit.events import Metadata, NewEvent, new_id

POLICY = {
    "name": "bench",
    "targets": {"normal": {"first_response": 15, "next_response": 60, "resolution": 480}},
    "business_hours": None,
    "holidays": [],
    "customer_tiers": [],
    "escalation": {"action": "none"},
}


def open_through_rest(url: str, token: str, contact_id: str, count: int, clients: int) -> dict[str, Any]:
    """`count` tickets from `clients` threads, each on its own keep-alive connection (as contacts are created)."""
    latencies: list[float] = []
    errors: list[Any] = []
    lock = threading.Lock()
    per_client = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]

    def client(n: int) -> None:
        http = Http(url, token)
        for i in range(n):
            began = time.perf_counter()
            status, body = http.request(
                "POST",
                "/v1/tickets",
                {
                    "subject": f"سفارش {i} نرسیده",
                    "description": "bench",
                    "contact_id": contact_id,
                    "channel": "email",
                    "type": "complaint",
                },
            )
            with lock:
                latencies.append(time.perf_counter() - began)
                if status != 201:
                    errors.append((status, body[:200]))
        http.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in per_client]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} ticket opens failed, e.g. {errors[:3]}")
    return {
        "tickets": count,
        "clients": clients,
        "seconds": round(seconds, 3),
        "per_s": rate(count, seconds),
        **latency_summary(latencies),
    }


def seed_and_sweep(open_tickets: int, due: int, batch: int = 1000) -> dict[str, Any]:
    from crm_servicedesk import projections
    from crm_servicedesk.commands import TicketDesk
    from crm_servicedesk.domain import SlaPolicy, Ticket
    from crmkit import clock
    from crmkit.service import spec_for

    runtime = spec_for("service-desk").runtime()
    try:
        spec_for("service-desk").prepare(runtime)
        desk = TicketDesk(runtime)
        view = projections.tickets_view(runtime.db, runtime.store, runtime.settings.topic)
        timeline = SlaPolicy.define(new_id(), POLICY).timeline_from(clock.now())  # the versions a ticket keeps
        now = clock.now()
        began = time.perf_counter()
        meta = Metadata(actor="bench")
        for start in range(0, open_tickets, batch):
            streams = []
            for n in range(start, min(start + batch, open_tickets)):
                opened = (
                    now - timedelta(hours=3)
                    if n % max(1, open_tickets // due) == 0 and n // max(1, open_tickets // due) < due
                    else now
                )
                ticket = Ticket.open(
                    new_id(),
                    {"subject": f"seeded {n}", "contact_id": "bench-contact", "channel": "web", "type": "question"},
                    timeline,
                    None,
                    opened,
                )
                streams.append((ticket.id, Ticket.aggregate_type, [NewEvent(e.type, e.data) for e in ticket.pending]))
            stored, _ = runtime.store.start_streams(streams, meta)
            view.handle(runtime.store.open(stored))
        seeded = time.perf_counter() - began
        began = time.perf_counter()
        first = desk.sweep()
        sweep_due = time.perf_counter() - began
        began = time.perf_counter()
        second = desk.sweep(now + timedelta(minutes=1))
        sweep_idle = time.perf_counter() - began
        runtime.flush()
    finally:
        runtime.close()
    return {
        "open_tickets": open_tickets,
        "seed_seconds": round(seeded, 2),
        "seed_per_s": rate(open_tickets, seeded),
        "sweep_due": first["due"],
        "sweep_breaches": first["breaches"],
        "sweep_seconds": round(sweep_due, 3),
        "repeat_sweep_due": second["due"],
        "repeat_sweep_breaches": second["breaches"],
        "repeat_sweep_seconds": round(sweep_idle, 3),
    }


def run(
    env: Environment, tickets: int = 2000, clients: int = 8, open_tickets: int = 100_000, due: int = 100
) -> dict[str, Any]:
    """Both figures, against the bench's servers (`env`)."""
    grpc_port, http_port = stack.free_port(), stack.free_port()
    extra = {
        "CRM_CONTACTS_GRPC_PORT": str(grpc_port),
        "CRM_CONTACTS_METRICS_PORT": str(stack.free_port()),
        "CRM_SERVICEDESK_HTTP_PORT": str(http_port),
        "CRM_CONTACTS_GRPC_TARGET": f"127.0.0.1:{grpc_port}",
    }
    os.environ.update(extra)
    stack.ensure_topics(env.env["CRM_KAFKA_BOOTSTRAP"], ["crm.servicedesk.events"])
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "crmkit.cli", "serve", *args],
            env={**os.environ, **env.env, **extra},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for args in (("contacts", "grpc"), ("service-desk", "api"))
    ]
    try:
        url = f"http://127.0.0.1:{http_port}"
        wait_ready(url, processes[1])
        desk, contacts = Http(url, env.token), Http(env.api_url, env.token)
        status, body = contacts.request(
            "POST", "/v1/contacts", {"first_name": "Bench", "email": f"bench-{new_id()}@example.org"}
        )
        assert status == 201, body
        contact = json.loads(body)
        desk.request("POST", "/v1/sla-policies", {"name": "bench", "targets": POLICY["targets"]})
        deadline = time.monotonic() + 30
        while (
            desk.request(
                "POST",
                "/v1/tickets",
                {  # warm-up; waits for the grpc process too
                    "subject": "warm",
                    "contact_id": contact["id"],
                    "channel": "web",
                    "type": "question",
                },
            )[0]
            != 201
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("could not open a ticket")
            time.sleep(0.5)
        desk.close()
        contacts.close()
        opened = open_through_rest(url, env.token, contact["id"], tickets, clients)
    finally:
        for process in processes:
            stack.stop_process(process)
    return {"open": opened, "sweep": seed_and_sweep(open_tickets, due)}


def main(argv: list[str] | None = None) -> int:
    from bench import environment

    parser = argparse.ArgumentParser(prog="python -m bench.servicedesk", description=__doc__)
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--open-tickets", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=100)
    args = parser.parse_args(argv)
    with environment.started() as env:
        os.environ.update(env.env)
        print(
            json.dumps(
                run(env, tickets=args.tickets, clients=args.clients, open_tickets=args.open_tickets, due=args.due),
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
