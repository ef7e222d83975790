"""Full-stack bench: `crm up` as users run it, load from this (separate) process, each figure beside a raw one.

`python -m bench.stack` (what `make bench-stack` runs) starts `crm up` with every service and
worker on free ports and a temporary CRM_DATA_DIR (gunicorn at its defaults, rate limit off),
then measures, in this order and in the same run:

1. contacts created / s: `POST /v1/contacts` from `--clients` threads  vs  raw `insert_one` from as many
   threads, of documents shaped like the stored events, on the same MongoDB-protocol server;
2. create -> listed: after each 201, `GET /v1/contacts?q=<its unique name>` until it is there (p50/p99);
3. gRPC `GetContact` p50/p99 (one client, the admin token)  vs  raw `find_one` of the same contacts' events;
4. tickets / s and deals / s (REST, `--clients` threads)  vs  contacts / s of step 1.

`--profile SECONDS` then drives creates once more with py-spy sampling the contacts api's
gunicorn workers (not during the timed steps) and prints where a create's time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench import cpu, measure, report
from bench.environment import Environment
from bench.measure import Http
from bench.stats import latency_summary, rate
from crmkit import stack

SERVICES = {"contacts": "CONTACTS", "sales": "SALES", "service-desk": "SERVICEDESK", "messaging": "MESSAGING"}
CONTACTS_DATABASE = "crm_contacts"  # crm up's default database of the contacts service
STAGES = ("qualification", "needs_analysis", "proposal", "negotiation")
READY_TIMEOUT = 120.0
LISTED_TIMEOUT = 30.0  # seconds a created contact may take to be listed before the run is declared broken


def log(message: str) -> None:
    print(f"bench-stack: {message}", file=sys.stderr, flush=True)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the context manager, which stops crm up


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=1000, help="contacts created (default 1000)")
    parser.add_argument(
        "--warmup", type=int, default=300, help="creates before the timed ones, while the stack settles (default 300)"
    )
    parser.add_argument("--clients", type=int, default=8, help="REST client threads and raw writers (default 8)")
    parser.add_argument("--listed", type=int, default=200, help="create -> listed samples (default 200)")
    parser.add_argument("--grpc", type=int, default=1000, help="GetContact samples, as many find_one (default 1000)")
    parser.add_argument("--tickets", type=int, default=500, help="tickets opened (default 500; 0 skips)")
    parser.add_argument("--deals", type=int, default=500, help="deals created (default 500; 0 skips)")
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        help="seconds of creates sampled by py-spy after the timed steps (default 0: none)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep crm up's data dir and logs after the run")
    return parser.parse_args(argv)


class Stack:
    """`crm up` as a subprocess on free ports, its data under a temp dir: every service's api, grpc and worker."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.kafka_port, self.mongo_port = stack.free_port(), stack.free_port()
        self.http: dict[str, int] = {}
        self.grpc: dict[str, int] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
        self.env.update(
            {
                "CRM_DATA_DIR": str(home),
                "CRM_KAFKA_PORT": str(self.kafka_port),
                "CRM_MONGO_PORT": str(self.mongo_port),
                "CRM_MESSAGING_SMTP_PORT": str(stack.free_port()),
                "CRM_RATE_LIMIT_PER_MINUTE": "0",
                "CRM_LOG_LEVEL": "WARNING",
            }
        )
        for service, key in SERVICES.items():
            self.http[service], self.grpc[service] = stack.free_port(), stack.free_port()
            self.env.update(
                {
                    f"CRM_{key}_HTTP_PORT": str(self.http[service]),
                    f"CRM_{key}_GRPC_PORT": str(self.grpc[service]),
                    f"CRM_{key}_METRICS_PORT": str(stack.free_port()),
                }
            )
        self.output = home / "crm-up.out"
        self.process: subprocess.Popen | None = None
        self.token = ""

    @property
    def mongo_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.http[service]}"

    def start(self) -> None:
        with open(self.output, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "crmkit.cli", "up"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self.token = self._admin_token()
        for service in SERVICES:
            self._wait(lambda s=service: _ready(self.url(s)), f"{service} ready")
            self._wait(lambda s=service: _grpc_serving(f"127.0.0.1:{self.grpc[s]}"), f"{service}'s gRPC serving")

    def _admin_token(self) -> str:
        printed = self._wait(lambda: "Ctrl-C" in self.output.read_text() and self.output.read_text(), "crm up's banner")
        lines = printed.splitlines()
        return lines[lines.index("Admin token (12h):") + 1].strip()

    def _wait(self, check: Any, what: str) -> Any:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"crm up exited with {self.process.returncode}; see {self.output}")
            with contextlib.suppress(OSError):
                if result := check():
                    return result
            time.sleep(0.2)
        raise TimeoutError(f"waited {READY_TIMEOUT}s for {what}; see {self.output}")

    def stop(self) -> None:
        if self.process is not None:
            stack.stop_process(self.process, timeout=60)

    def environment(self) -> Environment:
        """The contacts api as bench.measure's helpers expect it."""
        return Environment(
            self.home, f"127.0.0.1:{self.kafka_port}", self.mongo_url, self.url("contacts"), self.token, self.env
        )


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
        return response.status == 200


def _grpc_serving(target: str) -> bool:
    from crmkit.testing import grpc_serving

    return grpc_serving(target)


@contextlib.contextmanager
def running(keep: bool) -> Iterator[Stack]:
    home = Path(tempfile.mkdtemp(prefix="crm-bench-stack-"))
    subject = Stack(home)
    failed = True
    try:
        subject.start()
        yield subject
        failed = False
    finally:
        subject.stop()
        if failed or keep:
            log(f"crm up's data and logs kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def creates(subject: Stack, count: int, clients: int, warmup: int) -> dict[str, Any]:
    """POST /v1/contacts from `clients` threads (after `warmup` creates), then raw insert_one from as many threads."""
    env = subject.environment()
    warm = measure.create_contacts(env, max(warmup, clients), clients, first=0)
    if warm.errors:
        raise RuntimeError(f"creating contacts failed: {warm.errors[:3]}")
    assert subject.process is not None
    before, driver = cpu.snapshot(subject.process.pid), time.process_time()
    run = measure.create_contacts(env, count, clients, first=10_000)
    if run.errors:
        raise RuntimeError(f"{len(run.errors)} creates failed, e.g. {run.errors[:3]}")
    time.sleep(2)  # the workers finish projecting and publishing the last creates: their CPU is the creates'
    ours_cpu = {
        **cpu.per_operation(before, cpu.snapshot(subject.process.pid), len(run.ids)),
        "load driver (this process)": round((time.process_time() - driver) * 1000 / len(run.ids), 2),
    }
    with MongoClient(subject.mongo_url, tz_aware=True) as client:
        template = client[CONTACTS_DATABASE]["events"].find_one({"stream_id": run.ids[0]})
    template.pop("_id", None)
    before, driver = cpu.snapshot(subject.process.pid), time.process_time()
    raw = measure.raw_inserts(env, template, count, clients, batch=1000, with_many=False)
    raw_cpu = {
        **cpu.per_operation(before, cpu.snapshot(subject.process.pid), count),
        "load driver (this process)": round((time.process_time() - driver) * 1000 / count, 2),
    }
    return {
        "contacts": len(run.ids),
        "clients": clients,
        "seconds": round(run.seconds, 3),
        "warmup": {"contacts": len(warm.ids), "per_s": rate(len(warm.ids), warm.seconds)},
        "ours_per_s": rate(len(run.ids), run.seconds),
        "request_latency": latency_summary(run.latencies),
        "raw": raw,
        "ids": run.ids,
        "cpu_ms_per_create": ours_cpu,
        "cpu_ms_per_raw_insert": raw_cpu,
    }


def create_to_listed(subject: Stack, samples: int) -> dict[str, Any]:
    """One client: POST a contact with a unique last name, then GET /v1/contacts?q=<name> until it is listed."""
    http = Http(subject.url("contacts"), subject.token)
    lags: list[float] = []
    polls = 0
    try:
        for _ in range(samples):
            name = "Lst" + uuid.uuid4().hex[:12]
            status, payload = http.request("POST", "/v1/contacts", {"first_name": "Bench", "last_name": name})
            created = time.perf_counter()
            if status != 201:
                raise RuntimeError(f"POST /v1/contacts answered {status}: {payload[:200]!r}")
            contact_id = json.loads(payload)["id"]
            path = "/v1/contacts?" + urllib.parse.urlencode({"q": name})
            while True:
                polls += 1
                status, listing = http.request("GET", path)
                if status == 200 and contact_id.encode() in listing:
                    lags.append(time.perf_counter() - created)
                    break
                if time.perf_counter() - created > LISTED_TIMEOUT:
                    raise TimeoutError(f"contact {contact_id} not listed {LISTED_TIMEOUT}s after its 201")
                time.sleep(0.002)
    finally:
        http.close()
    return {**latency_summary(lags), "polls_per_sample": round(polls / samples, 1)}


def grpc_reads(subject: Stack, ids: list[str], samples: int, warmup: int = 50) -> dict[str, Any]:
    """Sequential GetContact (one channel, the admin token) of random created contacts; raw find_one of the same."""
    from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
    from crmkit import rpc

    rng = random.Random(7)
    picks = [rng.choice(ids) for _ in range(samples + warmup)]
    ours: list[float] = []
    with rpc.token_channel(f"127.0.0.1:{subject.grpc['contacts']}", subject.token) as channel:
        stub = contacts_pb2_grpc.ContactDirectoryStub(channel)
        for i, contact_id in enumerate(picks):
            began = time.perf_counter()
            stub.GetContact(contacts_pb2.GetContactRequest(contact_id=contact_id), timeout=5)
            if i >= warmup:
                ours.append(time.perf_counter() - began)
    raw: list[float] = []
    with MongoClient(subject.mongo_url, tz_aware=True) as client:
        events = client[CONTACTS_DATABASE]["events"]
        for i, contact_id in enumerate(picks):
            began = time.perf_counter()
            if events.find_one({"stream_id": contact_id}) is None:
                raise RuntimeError(f"no stored event for contact {contact_id}")
            if i >= warmup:
                raw.append(time.perf_counter() - began)
    return {"ours": latency_summary(ours), "raw": latency_summary(raw)}


def posts(url: str, token: str, path: str, bodies: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """POST every body to `path` from `clients` threads, each on its own keep-alive connection; all must be 201."""
    errors: list[str] = []
    lock = threading.Lock()

    def client(share: list[dict[str, Any]]) -> None:
        http = Http(url, token)
        try:
            for body in share:
                status, payload = http.request("POST", path, body)
                if status != 201:
                    with lock:
                        errors.append(f"{status} {payload[:200]!r}")
        finally:
            http.close()

    threads = [threading.Thread(target=client, args=(bodies[i::clients],)) for i in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} POST {path} failed, e.g. {errors[:3]}")
    return {"count": len(bodies), "clients": clients, "seconds": round(seconds, 3), "per_s": rate(len(bodies), seconds)}


def tickets_and_deals(subject: Stack, contact_id: str, tickets: int, deals: int, clients: int) -> dict[str, Any]:
    """Tickets (service desk) and deals (sales), each checked against contacts over gRPC, after a small warm-up."""
    out: dict[str, Any] = {}
    if tickets:

        def ticket(n: int) -> dict[str, Any]:
            return {
                "subject": f"سفارش {n} نرسیده",
                "description": "bench",
                "contact_id": contact_id,
                "channel": "email",
                "type": "complaint",
            }

        url = subject.url("service-desk")
        posts(url, subject.token, "/v1/tickets", [ticket(n) for n in range(clients * 2)], clients)
        out["tickets"] = posts(url, subject.token, "/v1/tickets", [ticket(n) for n in range(tickets)], clients)
    if deals:

        def deal(n: int) -> dict[str, Any]:
            return {
                "title": f"Deal {n}",
                "contact_id": contact_id,
                "amount": f"{100 + n}.50",
                "currency": "USD",
                "stage": STAGES[n % 4],
                "owner": f"owner{n % 5}",
            }

        url = subject.url("sales")
        posts(url, subject.token, "/v1/deals", [deal(n) for n in range(clients * 2)], clients)
        out["deals"] = posts(url, subject.token, "/v1/deals", [deal(n) for n in range(deals)], clients)
    return out


def rows(figures: dict[str, Any]) -> list[tuple[str, str, float, float, str]]:
    """(metric, unit, ours, raw, raw's name), as bench.report prints them."""
    create, listed, grpc = figures["create"], figures["listed"], figures["grpc"]
    out = [
        (
            "full stack: contacts created / s (REST)",
            "/s",
            create["ours_per_s"],
            create["raw"]["insert_one_per_s"],
            f"insert_one/s, {create['raw']['insert_one_clients']} threads",
        ),
        ("full stack: create -> listed p50", "ms", listed["p50_ms"], 0.0, "none"),
        ("full stack: create -> listed p99", "ms", listed["p99_ms"], 0.0, "none"),
        ("full stack: gRPC GetContact p50", "ms", grpc["ours"]["p50_ms"], grpc["raw"]["p50_ms"], "find_one p50"),
        ("full stack: gRPC GetContact p99", "ms", grpc["ours"]["p99_ms"], grpc["raw"]["p99_ms"], "find_one p99"),
    ]
    for kind in ("tickets", "deals"):
        if kind in figures["others"]:
            out.append(
                (
                    f"full stack: {kind} created / s (REST)",
                    "/s",
                    figures["others"][kind]["per_s"],
                    create["ours_per_s"],
                    "contacts created / s (REST), same run",
                )
            )
    return out


def render_cpu(create: dict[str, Any]) -> str:
    """CPU per create beside CPU per raw insert_one, by process: on 2 cores, what bounds the rates."""
    ours, raw = create["cpu_ms_per_create"], create["cpu_ms_per_raw_insert"]
    lines = [f"CPU ms per operation, by process (a create / a raw insert_one; {os.cpu_count()} cores):"]
    lines += [f"  {ours.get(part, 0.0):8.2f}  {raw.get(part, 0.0):8.2f}  {part}" for part in {**ours, **raw}]
    total_ours, total_raw = sum(ours.values()), sum(raw.values())
    lines.append(f"  {total_ours:8.2f}  {total_raw:8.2f}  total (x{total_ours / max(total_raw, 0.001):.1f})")
    return "\n".join(lines)


def measure_all(subject: Stack, args: argparse.Namespace) -> dict[str, Any]:
    before = os.getloadavg()
    log(f"(1) {args.contacts} POST /v1/contacts from {args.clients} threads, then raw insert_one as many")
    create = creates(subject, args.contacts, args.clients, args.warmup)
    ids = create.pop("ids")
    log(
        f"    {create['ours_per_s']}/s (warm-up {create['warmup']['per_s']}/s), "
        f"raw {create['raw']['insert_one_per_s']}/s"
    )
    log(f"(2) {args.listed} creates, each polled in GET /v1/contacts?q= until listed")
    listed = create_to_listed(subject, args.listed)
    log(f"    p50 {listed['p50_ms']} ms, p99 {listed['p99_ms']} ms")
    log(f"(3) {args.grpc} gRPC GetContact, then as many raw find_one")
    grpc = grpc_reads(subject, ids, args.grpc)
    log(f"(4) {args.tickets} tickets and {args.deals} deals from {args.clients} threads")
    others = tickets_and_deals(subject, ids[0], args.tickets, args.deals, args.clients)
    figures: dict[str, Any] = {
        "create": create,
        "listed": listed,
        "grpc": grpc,
        "others": others,
        "stack": "crm up, every service's api/grpc/worker; gunicorn defaults; rate limit off",
        "load_average_before": before,
    }
    if args.profile:
        from bench import profile

        log(f"(5) {args.profile:.0f}s of creates with py-spy sampling the contacts api workers")
        try:
            figures["profile"] = profile.creates(subject, args.profile, args.clients)
        except RuntimeError as error:  # the figures measured above are kept and printed all the same
            log(f"    no profile: {error}")
            figures["profile_error"] = str(error)
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.now(UTC)
    began = time.perf_counter()
    log("starting crm up (every service and worker) on free ports")
    with running(args.keep_logs) as subject:
        log(f"ready after {time.perf_counter() - began:.1f}s")
        figures = measure_all(subject, args)
    figures["total_seconds"] = round(time.perf_counter() - began, 1)
    table = rows(figures)
    print(report.render(table))
    print("\n" + render_cpu(figures["create"]))
    if "profile" in figures:
        from bench import profile

        print("\n" + profile.render(figures["profile"]))
    path = report.save(figures, started, table, prefix="stack")
    print(f"\nfigures and machine info: {path} (whole run {figures['total_seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
