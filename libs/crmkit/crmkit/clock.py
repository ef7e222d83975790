"""The platform's notion of "now", which tests and drills can move forward.

`now()` is real UTC time (millisecond precision) plus an offset: the number of seconds
in `CRM_CLOCK_OFFSET_SECONDS` (read on every call; a process started with it keeps it)
plus the number written in the file named by `CRM_CLOCK_FILE` (re-read at most once a
second). The file moves the clock of processes that are already running: an
end-to-end test writes `40000000` into it and, within a second, every process that
reads this clock lives some 463 days later. A missing, empty or unreadable file counts
as 0.

A testing aid only: never set either variable in production. Services whose timers or
SLA decisions tests move (contacts' lifecycle timers, the service desk, messaging's
leases, back-off and quiet hours) read this clock.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timedelta

from crmkit.events import utcnow

OFFSET_VARIABLE = "CRM_CLOCK_OFFSET_SECONDS"
FILE_VARIABLE = "CRM_CLOCK_FILE"
RECHECK_SECONDS = 1.0

_lock = threading.Lock()
_file_cache: dict[str, tuple[float, float]] = {}  # path -> (monotonic time read, seconds)


def _file_offset(path: str) -> float:
    with _lock:
        cached = _file_cache.get(path)
        if cached is not None and time.monotonic() - cached[0] < RECHECK_SECONDS:
            return cached[1]
        try:
            with open(path, encoding="ascii") as fh:
                raw = fh.read().strip()
            seconds = float(raw) if raw else 0.0
        except (OSError, ValueError):
            seconds = 0.0
        _file_cache[path] = (time.monotonic(), seconds)
        return seconds


def offset() -> timedelta:
    """How far this process's clock is moved: the variable plus the file."""
    raw = os.environ.get(OFFSET_VARIABLE, "").strip()
    seconds = float(raw) if raw else 0.0
    path = os.environ.get(FILE_VARIABLE, "").strip()
    if path:
        seconds += _file_offset(path)
    return timedelta(seconds=seconds)


def now() -> datetime:
    """Aware UTC, millisecond precision, shifted by the offset."""
    moment = utcnow() + offset()
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
