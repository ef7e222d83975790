"""The platform's notion of "now", which tests and drills can move forward.

`now()` is real UTC time (millisecond precision) plus an offset: the number of seconds
in `CRM_CLOCK_OFFSET_SECONDS` (read on every call; a process started with it keeps it)
plus the number written in the file named by `CRM_CLOCK_FILE` (re-read at most once a
second). The file moves the clock of processes that are already running: an
end-to-end test writes `40000000` into it and, within a second, every process that
reads this clock lives some 463 days later. A missing, empty or unreadable file counts
as 0.

A testing aid only: never set either variable in production.

One "now" for the domain: every use case and domain decision takes its time from
`now()` (or from a `Clock` injected in its place: `SalesBook(runtime, clock=...)`,
`MessageDesk(..., clock=...)`, the timers' `now=`), so tests move one clock for all of
it. Two other notions of time remain, each on purpose:
- `crmkit.events.utcnow()`, the wall clock, for what records when something really
  happened or measures it: the event store's commit times, projection lag and
  heartbeats, dead letters, token and key issue times (a moved clock must not make a
  token expire or a projection look stalled);
- `time.monotonic()` for durations and timeouts (leases in memory, retry waits, caches).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from crmkit.events import utcnow
from crmkit.settings import Current, Env

OFFSET_VARIABLE = "CRM_CLOCK_OFFSET_SECONDS"
FILE_VARIABLE = "CRM_CLOCK_FILE"
RECHECK_SECONDS = 1.0

Clock = Callable[[], datetime]  # what a use case takes where it needs "now" (default: `now`)

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


def _read(env: Env) -> tuple[float, str | None]:
    return env.number(OFFSET_VARIABLE, 0.0), env.optional(FILE_VARIABLE)


_settings = Current(_read)  # the two variables, read again only when one of them moves


def offset() -> timedelta:
    """How far this process's clock is moved: the variable plus the file."""
    seconds, path = _settings()
    if path:
        seconds += _file_offset(path)
    return timedelta(seconds=seconds)


def now() -> datetime:
    """Aware UTC, millisecond precision, shifted by the offset."""
    moment = utcnow() + offset()
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
