"""The report period cap (crmkit.web.periods): a bound every report's from/to shares."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from marshmallow import ValidationError

from crmkit.web.periods import MAX_PERIOD_DAYS, check_period

START = datetime(2020, 1, 1, tzinfo=UTC)


def test_a_period_up_to_the_cap_is_accepted() -> None:
    check_period(START, START + timedelta(days=MAX_PERIOD_DAYS))
    check_period(date(2020, 1, 1), date(2020, 1, 1) + timedelta(days=MAX_PERIOD_DAYS))
    check_period(None, START)  # the report's own default start applies


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (START, START + timedelta(days=MAX_PERIOD_DAYS, seconds=1)),
        (datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)),
        (date(1900, 1, 1), date(2020, 1, 1)),
        (datetime(1900, 1, 1, tzinfo=UTC), None),  # an open end counts up to now
        (date(1900, 1, 1), None),
    ],
)
def test_a_longer_period_is_refused_naming_the_cap_on_both_fields(start, end) -> None:
    with pytest.raises(ValidationError) as refused:
        check_period(start, end)
    assert refused.value.messages == {
        "from": [f"the period may span at most {MAX_PERIOD_DAYS} days"],
        "to": [f"the period may span at most {MAX_PERIOD_DAYS} days"],
    }
