"""Sales: deals created per second through REST, and Kanban board read latency.

`run(env, deals=1000, clients=8, reads=200)` starts `crm serve contacts grpc` (every
deal is checked against contacts over gRPC) and `crm serve sales api` beside the bench's
servers, creates one contact, POSTs `deals` deals from `clients` threads (spread over the
default pipeline's stages), folds the deals read model in this process (what the worker
does), then times `reads` sequential GET /v1/pipelines/default/board (50 deals per column).

Standalone: `python -m bench.sales [--deals N]` starts its own servers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from bench.environment import Environment, wait_ready
from bench.measure import Http
from bench.stats import latency_summary, rate
from crmkit import stack

STAGES = ("qualification", "needs_analysis", "proposal", "negotiation")


def run(env: Environment, deals: int = 1000, clients: int = 8, reads: int = 200) -> dict[str, Any]:
    grpc_port, http_port = stack.free_port(), stack.free_port()
    extra = {
        **env.env,
        "CRM_CONTACTS_GRPC_PORT": str(grpc_port),
        "CRM_CONTACTS_GRPC_TARGET": f"127.0.0.1:{grpc_port}",
        "CRM_CONTACTS_METRICS_PORT": str(stack.free_port()),
        "CRM_SALES_HTTP_PORT": str(http_port),
        "CRM_SALES_DATABASE": "bench_sales",
        "CRM_SALES_TOPIC": "bench.sales.events",
    }
    stack.ensure_topics(env.kafka_bootstrap, ["bench.sales.events"])
    with contextlib.ExitStack() as cleanup:
        logs = open(env.home / "log" / "sales.log", "ab")  # noqa: SIM115 - closed by the exit stack
        cleanup.callback(logs.close)
        for service, process in (("contacts", "grpc"), ("sales", "api")):
            proc = subprocess.Popen(
                [sys.executable, "-m", "crmkit.cli", "serve", service, process],
                env={**os.environ, **extra},
                stdout=logs,
                stderr=subprocess.STDOUT,
            )
            cleanup.callback(stack.stop_process, proc)
            if process == "api":
                wait_ready(f"http://127.0.0.1:{http_port}", proc)
        contacts = Http(env.api_url, env.token)
        status, body = contacts.request("POST", "/v1/contacts", {"first_name": "Bench", "email": "b@example.com"})
        assert status == 201, body
        contact_id = json.loads(body)["id"]
        sales_url = f"http://127.0.0.1:{http_port}"

        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        counter = iter(range(deals))

        def client() -> None:
            http = Http(sales_url, env.token)
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                began = time.perf_counter()
                code, payload = http.request(
                    "POST",
                    "/v1/deals",
                    {
                        "title": f"Deal {n}",
                        "contact_id": contact_id,
                        "amount": f"{100 + n}.50",
                        "currency": "USD",
                        "stage": STAGES[n % 4],
                        "owner": f"owner{n % 5}",
                    },
                )
                with lock:
                    latencies.append(time.perf_counter() - began)
                    if code != 201:
                        errors.append(f"{code} {payload[:200]!r}")

        began = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - began
        if errors:
            raise RuntimeError(f"{len(errors)} deal creates failed, e.g. {errors[:3]}")

        os.environ.update(extra)
        from crmkit.service import spec_for

        spec = spec_for("sales")
        runtime = spec.runtime()
        try:
            views = [p for p in spec.projections(runtime) if getattr(p, "name", "") in ("deals", "pipelines")]
            for batch in runtime.store.scan():
                for view in views:
                    view.handle(batch)
        finally:
            runtime.close()
        http = Http(sales_url, env.token)
        board_latencies = []
        for _ in range(reads):
            started = time.perf_counter()
            code, payload = http.request("GET", "/v1/pipelines/default/board")
            board_latencies.append(time.perf_counter() - started)
            assert code == 200, payload[:200]
        counted = sum(c["count"] for c in json.loads(payload)["columns"])
    return {
        "deals": deals,
        "clients": clients,
        "seconds": round(seconds, 3),
        "deals_per_s": rate(deals, seconds),
        "create_latency": latency_summary(latencies),
        "board_deals": counted,
        "board_latency": latency_summary(board_latencies),
    }


def main(argv: list[str] | None = None) -> int:
    from bench import environment

    parser = argparse.ArgumentParser(prog="python -m bench.sales", description=__doc__)
    parser.add_argument("--deals", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args(argv)
    with environment.started() as env:
        print(json.dumps(run(env, args.deals, args.clients, args.reads), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
