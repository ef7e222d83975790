"""Business-hours arithmetic: examples, then properties (hypothesis) across zones, DST, holidays and pauses."""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from crm_servicedesk import business_hours as bh

TEHRAN = ZoneInfo("Asia/Tehran")
BERLIN = ZoneInfo("Europe/Berlin")
# Saturday to Wednesday, 08:00-16:00 in Tehran, Nowruz off
IRAN_WEEK = bh.Calendar(
    "Asia/Tehran", frozenset({5, 6, 0, 1, 2}), time(8), time(16), frozenset({date(2026, 3, 21), date(2026, 3, 22)})
)
BERLIN_WEEK = bh.Calendar("Europe/Berlin", frozenset({0, 1, 2, 3, 4}), time(9), time(17))


def local(zone: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=zone)


def test_adding_within_a_day_and_across_the_weekend_in_tehran() -> None:
    wednesday = local(TEHRAN, 2026, 1, 7, 15, 0)  # Wednesday 15:00; Thursday and Friday are off
    assert bh.add_minutes(wednesday, 30, IRAN_WEEK) == local(TEHRAN, 2026, 1, 7, 15, 30)
    assert bh.add_minutes(wednesday, 90, IRAN_WEEK) == local(TEHRAN, 2026, 1, 10, 8, 30)  # Saturday
    assert bh.minutes_between(wednesday, local(TEHRAN, 2026, 1, 10, 8, 30), IRAN_WEEK) == 90


def test_a_start_outside_hours_waits_for_the_next_working_morning() -> None:
    thursday_night = local(TEHRAN, 2026, 1, 8, 22, 0)
    assert bh.add_minutes(thursday_night, 60, IRAN_WEEK) == local(TEHRAN, 2026, 1, 10, 9, 0)
    assert bh.add_minutes(thursday_night, 0, IRAN_WEEK) == thursday_night


def test_holidays_are_skipped() -> None:
    before_nowruz = local(TEHRAN, 2026, 3, 18, 15, 0)  # Wednesday; Sat 21 and Sun 22 are holidays
    assert bh.add_minutes(before_nowruz, 120, IRAN_WEEK) == local(TEHRAN, 2026, 3, 23, 9, 0)


def test_ending_exactly_at_close_is_close_not_the_next_morning() -> None:
    monday = local(BERLIN, 2026, 1, 5, 9, 0)
    assert bh.add_minutes(monday, 480, BERLIN_WEEK) == local(BERLIN, 2026, 1, 5, 17, 0)


def test_dst_changes_the_offset_but_not_the_working_day() -> None:
    friday = local(BERLIN, 2026, 3, 27, 16, 0)  # clocks go forward on Sunday 29 March
    due = bh.add_minutes(friday, 120, BERLIN_WEEK)
    assert due == local(BERLIN, 2026, 3, 30, 10, 0)
    assert due.astimezone(UTC).hour == 8  # CEST: UTC+2 now
    always = bh.Calendar.always()
    saturday_night = local(BERLIN, 2026, 3, 28, 23, 0)
    assert bh.minutes_between(saturday_night, local(BERLIN, 2026, 3, 29, 4, 0), always) == 4 * 60  # 5 wall hours


def test_pauses_stop_the_clock() -> None:
    monday = local(BERLIN, 2026, 1, 5, 9, 0)
    pause = (local(BERLIN, 2026, 1, 5, 10, 0), local(BERLIN, 2026, 1, 5, 12, 0))
    assert bh.add_minutes(monday, 120, BERLIN_WEEK, [pause]) == local(BERLIN, 2026, 1, 5, 13, 0)
    assert bh.minutes_between(monday, local(BERLIN, 2026, 1, 5, 13, 0), BERLIN_WEEK, [pause]) == 120
    open_pause = (local(BERLIN, 2026, 1, 5, 10, 0), None)
    assert bh.minutes_between(monday, local(BERLIN, 2026, 1, 9, 13, 0), BERLIN_WEEK, [open_pause]) == 60


CALENDARS = st.sampled_from(
    [
        IRAN_WEEK,
        BERLIN_WEEK,
        bh.Calendar("Europe/Berlin", frozenset({0, 1, 2, 3, 4, 5}), time(1, 30), time(3, 15)),  # spans the DST hour
        bh.Calendar("America/New_York", frozenset({0, 2, 4}), time(0, 0), None, frozenset({date(2026, 11, 2)})),
        bh.Calendar.always(),
    ]
)
INSTANTS = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC))
MINUTES = st.integers(min_value=0, max_value=20_000)


@st.composite
def pauses(draw: st.DrawFn) -> list[bh.Pause]:
    found = []
    for start in draw(st.lists(INSTANTS, max_size=3)):
        length = draw(st.integers(min_value=1, max_value=10_000))
        found.append((start, start + timedelta(minutes=length)))
    return found


@settings(max_examples=150, deadline=None)
@given(CALENDARS, INSTANTS, MINUTES, MINUTES, pauses())
def test_adding_is_associative(calendar: bh.Calendar, start: datetime, x: int, y: int, paused: list[bh.Pause]) -> None:
    assert bh.add_minutes(start, x + y, calendar, paused) == bh.add_minutes(
        bh.add_minutes(start, x, calendar, paused), y, calendar, paused
    )


@settings(max_examples=150, deadline=None)
@given(CALENDARS, INSTANTS, MINUTES, pauses())
def test_between_undoes_add(calendar: bh.Calendar, start: datetime, x: int, paused: list[bh.Pause]) -> None:
    assert bh.minutes_between(start, bh.add_minutes(start, x, calendar, paused), calendar, paused) == x


@settings(max_examples=100, deadline=None)
@given(CALENDARS, INSTANTS, INSTANTS, INSTANTS)
def test_between_is_additive_and_never_more_than_wall_time(
    calendar: bh.Calendar, a: datetime, b: datetime, c: datetime
) -> None:
    a, b, c = sorted((a, b, c))
    ab, bc = bh.between(a, b, calendar), bh.between(b, c, calendar)
    assert ab + bc == bh.between(a, c, calendar)
    assert timedelta(0) <= ab <= b - a
