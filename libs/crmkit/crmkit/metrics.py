"""The Prometheus metrics that matter, defined once for every service.

Labels carry the service name, so one dashboard serves all four. The api process runs
under gunicorn with several workers, so it uses prometheus_client's multiprocess mode
when PROMETHEUS_MULTIPROC_DIR is set (crmkit.web sets it up); the grpc and worker
processes serve their own registry on their metrics port.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from crmkit.settings import chassis

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)

HTTP_LATENCY = Histogram(
    "crm_http_request_duration_seconds",
    "REST request latency by route and status.",
    ["service", "method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
GRPC_LATENCY = Histogram(
    "crm_grpc_request_duration_seconds",
    "gRPC call latency by method and status code.",
    ["service", "method", "code"],
    buckets=LATENCY_BUCKETS,
)
EVENTS_APPENDED = Counter("crm_events_appended_total", "Events appended to the event store.", ["service", "type"])
EVENTS_PUBLISHED = Counter("crm_events_published_total", "Events acknowledged by Kafka.", ["service", "path"])
GROUP_COMMIT_SIZE = Histogram(
    "crm_group_commit_requests",
    "Requests whose inserts shared one round trip to MongoDB (crmkit.groupcommit), by collection.",
    ["collection"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
PUBLISH_FAILURES = Counter(
    "crm_publish_failures_total", "Sends Kafka did not acknowledge (the sweeper retries).", ["service"]
)
PRODUCERS_RENEWED = Counter(
    "crm_kafka_producers_renewed_total",
    "Failed Kafka producers replaced by a new one (e.g. the broker came back empty).",
    ["service"],
)
PUBLISH_LAG = Histogram(
    "crm_publish_lag_seconds",
    "Time from append to Kafka acknowledgement.",
    ["service", "path"],
    buckets=LAG_BUCKETS,
)
UNPUBLISHED = Gauge(
    "crm_outbox_unpublished_events",
    "Stored events not yet acknowledged by Kafka.",
    ["service"],
    multiprocess_mode="max",
)
CONSUMER_LAG = Gauge(
    "crm_consumer_lag_messages",
    "Messages between a projector's position and the partition's end.",
    ["service", "projection", "topic", "partition"],
    multiprocess_mode="max",
)
PROJECTION_LAG = Gauge(
    "crm_projection_lag_seconds",
    "Age of the newest event a projection has applied, when it applied it.",
    ["service", "projection"],
    multiprocess_mode="max",
)
EVENTS_PROJECTED = Counter("crm_events_projected_total", "Events applied by a projection.", ["service", "projection"])
POISON_EVENTS = Counter(
    "crm_poison_events_total",
    "Messages a projector could not parse (parked as dead letters).",
    ["service", "projection"],
)
EVENTS_PARKED = Counter(
    "crm_events_parked_total",
    "Records a projection parked as dead letters (unreadable, foreign, or failing past the retries).",
    ["service", "projection"],
)
DEADLETTERS = Gauge(
    "crm_deadletters_parked",
    "Dead letters currently parked for a projection (as of its last heartbeat).",
    ["service", "projection"],
    multiprocess_mode="max",
)
PROJECTION_FAILURES = Counter(
    "crm_projection_failures_total",
    "Failed attempts to apply: kind=event (something in the batch cannot be applied), outage (a dependency "
    "away, retried without end), other.",
    ["service", "projection", "kind"],
)
PROJECTION_RETRIES = Counter(
    "crm_projection_retries_total",
    "Events tried again alone after failing, before being parked.",
    ["service", "projection"],
)
PROJECTION_STALLED = Gauge(
    "crm_projection_stalled",
    "1 while a projection is behind its topic and has not advanced for CRM_PROJECTION_STALL_SECONDS.",
    ["service", "projection"],
    multiprocess_mode="max",
)
UNREADABLE_PERSONAL_FIELDS = Counter(
    "crm_unreadable_personal_fields_total",
    "Sealed personal fields that could not be opened for a reason other than erasure (read as null).",
    ["service"],
)
REACTION_FAILURES = Counter(
    "crm_reaction_failures_total",
    "Reactions to another service's events (a contact's erasure or merge) that failed; retried.",
    ["service", "kind"],
)
JOB_RUNS = Counter(
    "crm_job_runs_total",
    "Passes of a worker's periodic job (crmkit.periodic), by outcome: ok or failed (retried).",
    ["service", "job", "outcome"],
)
JOB_SECONDS = Histogram(
    "crm_job_seconds", "How long a periodic job's successful pass took.", ["service", "job"], buckets=LAG_BUCKETS
)


def render() -> tuple[bytes, str]:
    """The exposition for this process, merging gunicorn workers in multiprocess mode."""
    if chassis().multiprocess_metrics:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


Readiness = Callable[[], tuple[int, dict[str, Any]]]


def serve(port: int, readiness: Readiness | None = None) -> ThreadingHTTPServer:
    """Serve /metrics on `port` for a process that has no Flask app (grpc, worker).

    With `readiness` (the worker's), /readyz answers with its status code and JSON body,
    and /healthz says the process is alive; every other path is the metrics, as before.
    """
    server = ThreadingHTTPServer((chassis().metrics_addr, port), _handler(readiness))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


def _handler(readiness: Readiness | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if readiness is not None and path in ("/readyz", "/healthz"):
                status, body = readiness() if path == "/readyz" else (200, {"status": "ok"})
                self._send(status, json.dumps(body).encode(), "application/json")
            else:
                self._send(200, *render())

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # probes come every few seconds: no log line each
            pass

    return Handler
