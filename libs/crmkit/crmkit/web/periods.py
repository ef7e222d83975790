"""The one bound every report's `from`/`to` shares.

A report's cost grows with its period (more facts read, more buckets over time), so a
period is capped like a page is: a request past the cap is a 422 naming it, rather
than minutes of work for one call.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from marshmallow import ValidationError

from crmkit import clock

MAX_PERIOD_DAYS = 5 * 366


def check_period(start: date | None, end: date | None, *, start_field: str = "from", end_field: str = "to") -> None:
    """Refuse a period longer than MAX_PERIOD_DAYS (an open end counts up to now)."""
    if start is None:
        return
    if end is None:
        now = clock.now()
        end = now if isinstance(start, datetime) else now.date()
    if end - start > timedelta(days=MAX_PERIOD_DAYS):
        raise ValidationError(
            {
                start_field: [f"the period may span at most {MAX_PERIOD_DAYS} days"],
                end_field: [f"the period may span at most {MAX_PERIOD_DAYS} days"],
            }
        )
