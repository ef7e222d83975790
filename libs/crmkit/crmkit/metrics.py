"""The Prometheus metrics that matter, defined once for every service.

Labels carry the service name, so one dashboard serves all four. The api process runs
under gunicorn with several workers, so it uses prometheus_client's multiprocess mode
when PROMETHEUS_MULTIPROC_DIR is set (crmkit.web sets it up); the grpc and worker
processes serve their own registry on their metrics port.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

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
EVENTS_APPENDED = Counter(
    "crm_events_appended_total", "Events appended to the event store.", ["service", "type"]
)
EVENTS_PUBLISHED = Counter(
    "crm_events_published_total", "Events acknowledged by Kafka.", ["service", "path"]
)
PUBLISH_FAILURES = Counter(
    "crm_publish_failures_total", "Sends Kafka did not acknowledge (the sweeper retries).", ["service"]
)
PUBLISH_LAG = Histogram(
    "crm_publish_lag_seconds",
    "Time from append to Kafka acknowledgement.",
    ["service", "path"],
    buckets=LAG_BUCKETS,
)
UNPUBLISHED = Gauge(
    "crm_outbox_unpublished_events", "Stored events not yet acknowledged by Kafka.", ["service"],
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
EVENTS_PROJECTED = Counter(
    "crm_events_projected_total", "Events applied by a projection.", ["service", "projection"]
)
POISON_EVENTS = Counter(
    "crm_poison_events_total", "Messages a projector could not parse and skipped.", ["service", "projection"]
)


def render() -> tuple[bytes, str]:
    """The exposition for this process, merging gunicorn workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve(port: int) -> None:
    """Expose /metrics on `port` for a process that has no Flask app (grpc, worker)."""
    start_http_server(port, addr=os.environ.get("CRM_METRICS_ADDR", "0.0.0.0"))
