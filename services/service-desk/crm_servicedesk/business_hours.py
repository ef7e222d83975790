"""Business-hours arithmetic: pure functions over aware datetimes, no I/O.

A `Calendar` says when work happens: an IANA time zone, the working weekdays (any set,
so a Saturday-to-Wednesday week is just {5, 6, 0, 1, 2}), the daily hours in local
time, and holidays (local dates). Pauses are UTC intervals during which the clock
stops (a ticket waiting on the customer).

Everything reduces to one idea: the calendar and the pauses define a sorted list of
disjoint *working intervals* in UTC. `add` walks them until the wanted amount of
working time is used up; `between` sums their overlap with [a, b). Because both use
the same intervals, `between(a, add(a, x)) == x` and `add(a, x + y) == add(add(a, x), y)`
hold exactly (datetime arithmetic is exact to the microsecond).

Daylight saving: local hours are converted to instants with zoneinfo per day, so a
09:00-17:00 day is 8 hours of work on both sides of a transition; a day whose
transition falls inside the working window is as long as the wall clock says (7 or 9
hours). A local time that does not exist (in the spring gap) is read with the offset
in force before the gap, as zoneinfo does (fold=0).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MINUTE = timedelta(minutes=1)
MAX_DAYS = 3660  # how far `add` looks for working time (10 years) before giving up

Pause = tuple[datetime, datetime | None]  # [start, end); end None = still paused


@dataclass(frozen=True)
class Calendar:
    time_zone: str = "UTC"
    working_days: frozenset[int] = frozenset({0, 1, 2, 3, 4})  # Monday = 0 … Sunday = 6
    start: time = time(9, 0)
    end: time | None = time(17, 0)  # None = midnight at the end of the day (24:00)
    holidays: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.working_days:
            raise ValueError("a calendar needs at least one working day")
        if self.end is not None and self.end <= self.start:
            raise ValueError("the working day must end after it starts")
        ZoneInfo(self.time_zone)  # raises for an unknown zone

    @classmethod
    def always(cls) -> Calendar:
        """Around the clock, every day (24/7 support)."""
        return cls("UTC", frozenset(range(7)), time(0, 0), None)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def window(self, day: date) -> tuple[datetime, datetime] | None:
        """The working interval of one local date, in UTC (None on a day off)."""
        if day.weekday() not in self.working_days or day in self.holidays:
            return None
        zone = self.zone
        start = datetime.combine(day, self.start, zone).astimezone(UTC)
        if self.end is None:
            end = datetime.combine(day + timedelta(days=1), time(0, 0), zone).astimezone(UTC)
        else:
            end = datetime.combine(day, self.end, zone).astimezone(UTC)
        return (start, end) if end > start else None

    def windows(self, since: datetime, until: datetime | None = None) -> Iterator[tuple[datetime, datetime]]:
        """Working intervals that end after `since`, in order, one per working day, lazily;
        with `until`, only those of the local days up to it (a bounded piece of a `Timeline`).

        Touching intervals (24/7) are not merged: merging would read ahead without end.
        """
        day = since.astimezone(self.zone).date() - timedelta(days=1)
        last = until.astimezone(self.zone).date() if until is not None else None
        for offset in range(MAX_DAYS + 2):
            current = day + timedelta(days=offset)
            if last is not None and current > last:
                return
            found = self.window(current)
            if found is not None and found[1] > since:
                yield found


@dataclass(frozen=True)
class Timeline:
    """Calendars in force one after another: each piece is (from, calendar), in order of
    `from`; the first piece's `from` is None (in force since always), and each lasts until
    the next one's. Used wherever a `Calendar` is (`windows` has the same meaning), so a
    due time is computed piecewise: working time counts under the calendar in force at
    each instant, e.g. new hours from an effective time on.
    """

    pieces: tuple[tuple[datetime | None, Calendar], ...]

    def __post_init__(self) -> None:
        if not self.pieces or self.pieces[0][0] is not None:
            raise ValueError("a timeline starts with a calendar in force since always")
        starts = [_utc(start) for start, _ in self.pieces[1:]]  # type: ignore[arg-type]
        if starts != sorted(starts):
            raise ValueError("a timeline's pieces are in order of their start")

    def windows(self, since: datetime, until: datetime | None = None) -> Iterator[tuple[datetime, datetime]]:
        """Each piece's windows clipped to the piece's span, in order (empty clips left out)."""
        since = _utc(since)
        for index, (start, calendar) in enumerate(self.pieces):
            end = self.pieces[index + 1][0] if index + 1 < len(self.pieces) else None
            if end is not None and end <= since:
                continue
            if until is not None and start is not None and start > until:
                return
            bound = min(end, until) if end is not None and until is not None else end or until
            for window_start, window_end in calendar.windows(max(since, start) if start else since, bound):
                clipped = (
                    max(window_start, start) if start else window_start,
                    min(window_end, end) if end else window_end,
                )
                if end is not None and clipped[0] >= end:
                    break
                if clipped[1] > clipped[0] and clipped[1] > since:
                    yield clipped


Schedule = Calendar | Timeline  # what working time is counted against


def _normalise(pauses: Iterable[Pause], far: datetime) -> list[tuple[datetime, datetime]]:
    """Pauses sorted and merged; an open pause lasts until `far`."""
    spans = sorted((_utc(start), _utc(end) if end is not None else far) for start, end in pauses)
    merged: list[tuple[datetime, datetime]] = []
    for start, end in spans:
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _subtract(
    window: tuple[datetime, datetime], pauses: Sequence[tuple[datetime, datetime]]
) -> Iterator[tuple[datetime, datetime]]:
    start, end = window
    for p_start, p_end in pauses:
        if p_end <= start:
            continue
        if p_start >= end:
            break
        if p_start > start:
            yield start, p_start
        start = max(start, p_end)
        if start >= end:
            return
    if start < end:
        yield start, end


def working_intervals(
    calendar: Schedule, since: datetime, pauses: Iterable[Pause] = ()
) -> Iterator[tuple[datetime, datetime]]:
    """The instants the clock runs from `since` on: calendar windows minus pauses, clipped to `since`."""
    since = _utc(since)
    far = since + timedelta(days=MAX_DAYS + 2)
    spans = _normalise(pauses, far)
    for window in calendar.windows(since):
        for start, end in _subtract(window, spans):
            if end > since:
                yield max(start, since), end


def add(start: datetime, amount: timedelta, calendar: Schedule, pauses: Iterable[Pause] = ()) -> datetime:
    """The instant at which `amount` of working time has passed since `start`.

    `add(start, 0) == start`. When the amount runs out exactly at the end of a working
    interval, that end is the answer (not the next morning). Raises ValueError if the
    calendar has no working time within MAX_DAYS (e.g. everything a holiday).
    """
    start = _utc(start)
    if amount < timedelta(0):
        raise ValueError("amount must not be negative")
    if amount == timedelta(0):
        return start
    left = amount
    for window_start, window_end in working_intervals(calendar, start, pauses):
        length = window_end - window_start
        if length >= left:
            return window_start + left
        left -= length
    raise ValueError("no working time left in the calendar within the next ten years")


def between(a: datetime, b: datetime, calendar: Schedule, pauses: Iterable[Pause] = ()) -> timedelta:
    """Working time in [a, b) (zero when b <= a)."""
    a, b = _utc(a), _utc(b)
    total = timedelta(0)
    if b <= a:
        return total
    for window_start, window_end in working_intervals(calendar, a, pauses):
        if window_start >= b:
            break
        total += min(window_end, b) - window_start
    return total


def add_minutes(start: datetime, minutes: int, calendar: Schedule, pauses: Iterable[Pause] = ()) -> datetime:
    return add(start, minutes * MINUTE, calendar, pauses)


def minutes_between(a: datetime, b: datetime, calendar: Schedule, pauses: Iterable[Pause] = ()) -> float:
    return between(a, b, calendar, pauses) / MINUTE


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return moment.astimezone(UTC)
