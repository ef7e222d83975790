"""The service desk's notion of "now", which tests (and drills) can move forward.

Every SLA decision (due times, remaining time, the breach sweep) and every time the
ticket records (`opened_at`, `at`) reads `now()`. `CRM_CLOCK_OFFSET_SECONDS` (read on
every call, default 0) shifts it: an end-to-end test starts the real worker with the
clock a day ahead to make tickets overdue without waiting. Never set it in production.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from crmkit.events import utcnow

OFFSET_VARIABLE = "CRM_CLOCK_OFFSET_SECONDS"


def offset() -> timedelta:
    raw = os.environ.get(OFFSET_VARIABLE, "").strip()
    return timedelta(seconds=float(raw)) if raw else timedelta(0)


def now() -> datetime:
    """Aware UTC, millisecond precision, shifted by the offset."""
    moment = utcnow() + offset()
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
