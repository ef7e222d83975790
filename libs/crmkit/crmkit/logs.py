"""Structured JSON logs with correlation ids, and no personal data.

Every line is one JSON object with the service, process kind and, inside a request or
an event handler, the correlation id. Log calls pass ids and counts, never names,
emails or phone numbers; the formatter only emits the message and the `extra` keys
listed in SAFE_FIELDS, so a stray object cannot leak a whole record into the log.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

SAFE_FIELDS = (
    "event_id",
    "event_type",
    "stream_id",
    "version",
    "count",
    "topic",
    "partition",
    "offset",
    "projection",
    "method",
    "path",
    "route",
    "status",
    "duration_ms",
    "url",
    "child",
    "reason",
    "subject",
    "code",
    "error",
    "problems",  # crmkit.profile: variable names and why they are unsafe, never a secret's value
)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, process: str) -> None:
        super().__init__()
        self.service = service
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "process": self.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (cid := correlation_id.get()) is not None:
            line["correlation_id"] = cid
        for key in SAFE_FIELDS:
            if key in record.__dict__:
                line[key] = record.__dict__[key]
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(service: str, process: str, level: str = "INFO") -> None:
    """Send every logger's output to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, process))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("kafka", "pymongo", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
