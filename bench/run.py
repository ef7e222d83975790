"""One bench run: start everything, measure the four figures beside their raw ones, report, stop everything."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench import environment, imports, measure, messaging, report, sales, servicedesk


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the context managers, which stop every process


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--contacts", type=int, default=2000, help="contacts created through REST (default 2000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent REST clients and raw writers (default 8)")
    parser.add_argument("--reads", type=int, default=1000, help="GET samples, and raw find_one samples (default 1000)")
    parser.add_argument(
        "--latency-samples",
        type=int,
        default=300,
        help="append->consumed samples, and raw produce->consumed samples (default 300)",
    )
    parser.add_argument("--batch", type=int, default=1000, help="raw insert_many batch size (default 1000)")
    parser.add_argument(
        "--import-rows", type=int, default=100_000, help="rows of the bulk import measured (default 100000; 0 skips it)"
    )
    parser.add_argument("--deals", type=int, default=1000, help="sales deals via REST (default 1000; 0 skips)")
    parser.add_argument(
        "--messages",
        type=int,
        default=1000,
        help="messages sent through the messaging worker to the local sinks (default 1000; 0 skips it)",
    )
    parser.add_argument(
        "--open-tickets",
        type=int,
        default=100_000,
        help="open tickets the SLA sweep is timed over (default 100000; 0 skips the service desk)",
    )
    parser.add_argument(
        "--rebuild-events",
        type=int,
        default=0,
        help="events stored beforehand so the rebuild is timed over a store of that size "
        "(e.g. 1000000; default 0: the contacts created above)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs even after a good run")
    return parser.parse_args(argv)


def measure_all(env: environment.Environment, args: argparse.Namespace) -> dict[str, Any]:
    os.environ.update(env.env)  # the bench's own runtime (rebuild, append+publish) uses the same servers and names
    from crmkit.service import spec_for

    spec = spec_for(environment.SERVICE)
    runtime = spec.runtime()
    try:
        warmup = min(50, args.contacts)
        log(f"warming up the api with {warmup} creates")
        warm = measure.create_contacts(env, warmup, args.clients, first=0)
        if warm.errors:
            raise RuntimeError(f"creating contacts failed: {warm.errors[:3]}")

        log(f"(1) creating {args.contacts} contacts through REST with {args.clients} clients")
        created = measure.create_contacts(env, args.contacts, args.clients, first=warmup)
        if created.errors:
            raise RuntimeError(f"{len(created.errors)} creates failed, e.g. {created.errors[:3]}")
        template = runtime.db["events"].find_one({"stream_id": created.ids[0]})
        template.pop("_id", None)
        log("(1) raw insert_one / insert_many of documents shaped like our events")
        raw_inserts = measure.raw_inserts(env, template, args.contacts, args.clients, args.batch)

        log(f"(2) {args.reads} sequential GET /v1/contacts/{{id}}, then as many raw find_one")
        reads = measure.read_latency(env, created.ids, args.reads)

        log("(4) rebuilding the contacts projection from the event store")
        if args.rebuild_events:
            log(f"(4) storing {args.rebuild_events} more ContactCreated events to rebuild from")
            measure.seed_contacts(runtime, args.rebuild_events)
        rebuilt = measure.rebuild_rate(env, runtime, spec, args.batch)

        log(f"(3) {args.latency_samples} append+publish -> consumed, then as many raw produce -> consumed")
        kafka = measure.kafka_latency(env, runtime, args.latency_samples)

        imported = None
        if args.import_rows:
            log(f"(5) importing {args.import_rows} CSV rows: POST /v1/imports, then the worker's ImportRunner")
            imported = imports.run(env, runtime, rows=args.import_rows, batch=args.batch)

        desk = None
        if args.open_tickets:
            log(f"(6) service desk: tickets opened / s through REST, SLA sweep over {args.open_tickets} open tickets")
            desk = servicedesk.run(env, clients=args.clients, open_tickets=args.open_tickets)

        sent = None
        if args.messages:
            log(f"(7) sending {args.messages} messages (email over SMTP, SMS to a file) through the messaging worker")
            sent = messaging.run(env, messages=args.messages)

        sold = None
        if args.deals:
            log(f"(6) creating {args.deals} deals through the sales REST api, then reading the board")
            sold = sales.run(env, deals=args.deals, clients=args.clients)
    finally:
        runtime.close()

    return {
        "create": {
            "contacts": len(created.ids),
            "clients": args.clients,
            "seconds": round(created.seconds, 3),
            "ours_per_s": measure.rate(len(created.ids), created.seconds),
            "request_latency": measure.latency_summary(created.latencies),
            "raw": raw_inserts,
        },
        "read": reads,
        "kafka": kafka,
        "rebuild": rebuilt,
        "import": imported,
        "servicedesk": desk,
        "messaging": sent,
        "sales": sold,
        "api": {
            "workers": environment.API_WORKERS,
            "threads": environment.API_THREADS,
            "rate_limit": "off (CRM_RATE_LIMIT_PER_MINUTE=0)",
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.now(UTC)
    began = time.perf_counter()
    log("starting Kafka (Tansu), MongoDB (nx-27017) and the contacts api on free ports")
    with environment.started(keep=args.keep_logs) as env:
        log(f"ready after {time.perf_counter() - began:.1f}s ({env.api_url})")
        figures = measure_all(env, args)
    figures["total_seconds"] = round(time.perf_counter() - began, 1)
    print(report.table(figures))
    path = report.save(figures, started)
    print(f"\nfigures and machine info: {path} (whole run {figures['total_seconds']}s)")
    return 0
