"""Gunicorn settings for every service's api process (`--config python:crmkit.gunicorn_conf`)."""

from typing import Any

from prometheus_client import multiprocess

from crmkit.settings import chassis

workers = chassis().api_workers
worker_class = "gthread"
threads = chassis().api_threads
graceful_timeout = 20  # SIGTERM: finish in-flight requests, then exit
timeout = 60
# the request line's cap (gunicorn's default is 4094 bytes): 8190, gunicorn's largest bounded value, so that a
# list query every parameter of which is at its documented maxLength (Text fields percent-encoded from
# non-Latin script: up to 12 bytes of the line a character) is still served instead of answered 414 (issue 18)
limit_request_line = 8190
accesslog = None  # the app records requests as metrics; logs carry no personal data
control_socket_disable = True  # several api processes run side by side; nothing uses it
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "crmkit.logs.JsonFormatter", "service": "gunicorn", "process": "api"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}


def child_exit(server: Any, worker: Any) -> None:  # noqa: ARG001 - gunicorn's hook signature
    """Drop a dead worker's live gauges from the merged /metrics."""
    if chassis().multiprocess_metrics:
        multiprocess.mark_process_dead(worker.pid)
