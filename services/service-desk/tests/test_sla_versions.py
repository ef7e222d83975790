"""SLA policies and calendars that change: versions in force from an effective time, clocks counted
piecewise across them, a country's holidays expanded into stored dates, breaches found late recorded
at their due time, and a recompute that changes nothing the second time (examples, then hypothesis)."""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_servicedesk import business_hours as bh
from crm_servicedesk import holiday_sources
from crm_servicedesk.catalogue import UPCASTERS
from crm_servicedesk.domain import PRIORITIES, TARGETS, SlaPolicy, Ticket
from crmkit.events import RecordedEvent, new_id, parse_time, rfc3339

TEHRAN = ZoneInfo("Asia/Tehran")
BERLIN_WEEK = bh.Calendar("Europe/Berlin", frozenset({0, 1, 2, 3, 4}), time(9), time(17))
IRAN_WEEK = bh.Calendar("Asia/Tehran", frozenset({5, 6, 0, 1, 2}), time(8), time(16))
ALWAYS = bh.Calendar.always()
IRAN_HOURS = {
    "time_zone": "Asia/Tehran",
    "working_days": ["saturday", "sunday", "monday", "tuesday", "wednesday"],
    "start": "08:00",
    "end": "16:00",
}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def targets(**normal: int | None) -> dict:
    return {p: {t: (normal.get(t) if p == "normal" else None) for t in TARGETS} for p in PRIORITIES}


def policy(**fields: object) -> SlaPolicy:
    defined = SlaPolicy.define(
        "p-1",
        {
            "name": "Standard",
            "description": None,
            "targets": targets(first_response=60),
            "business_hours": None,
            "holidays": [],
            "customer_tiers": [],
            "escalation": {"action": "none", "assignee": None, "group": None},
            "enabled": True,
            **fields,
        },
    )
    defined.pending = []
    return defined


def opened(at: datetime, sla: SlaPolicy, keep: bool = False) -> Ticket:
    """A ticket opened at `at` under `sla`; its pending events dropped unless `keep`."""
    ticket = Ticket.open(
        "t-1",
        {"subject": "s", "contact_id": "c-1", "channel": "web", "type": "question", "priority": "normal"},
        sla.timeline_from(at),
        None,
        at,
    )
    if not keep:
        ticket.pending = []
    return ticket


def due(ticket: Ticket, target: str, now: datetime) -> datetime | None:
    return {t["target"]: t["due_at"] for t in ticket.sla(now)}[target]


# --- the calendar timeline ------------------------------------------------------------------


def test_a_due_time_counts_working_time_under_each_calendar_in_turn() -> None:
    """Berlin hours until Tuesday 12:00 UTC, Tehran's Saturday-Wednesday week after it."""
    switch = utc(2026, 1, 6, 12)  # Tuesday
    timeline = bh.Timeline(((None, BERLIN_WEEK), (switch, IRAN_WEEK)))
    start = utc(2026, 1, 6, 10)  # 11:00 in Berlin: 120 Berlin minutes until the switch
    # then Tehran: Tuesday until 16:00 local (12:30 UTC), Wednesday 08:00-16:00 local (04:30-12:30 UTC)
    assert bh.minutes_between(start, switch, timeline) == 120
    assert bh.add_minutes(start, 120, timeline) == switch
    assert bh.add_minutes(start, 150, timeline) == utc(2026, 1, 6, 12, 30)
    assert bh.add_minutes(start, 180, timeline) == utc(2026, 1, 7, 5, 0)
    assert bh.add_minutes(start, 150 + 8 * 60 + 60, timeline) == utc(2026, 1, 10, 5, 30)  # Thu, Fri off: Saturday
    assert bh.add_minutes(start, 180, BERLIN_WEEK) == utc(2026, 1, 6, 13, 0)  # without the switch


def test_a_window_split_by_the_switch_counts_each_part_once() -> None:
    switch = utc(2026, 1, 6, 13)  # inside both calendars' Tuesday hours
    timeline = bh.Timeline(((None, ALWAYS), (switch, ALWAYS)))
    assert bh.minutes_between(utc(2026, 1, 6), utc(2026, 1, 7), timeline) == 24 * 60
    assert list(timeline.windows(utc(2026, 1, 6, 12), until=utc(2026, 1, 6, 14)))[:2] == [
        (utc(2026, 1, 6), switch),
        (switch, utc(2026, 1, 7)),
    ]  # windows that end after `since`, split


def test_a_timeline_refuses_pieces_out_of_order() -> None:
    with pytest.raises(ValueError):
        bh.Timeline(((utc(2026, 1, 1), ALWAYS),))
    with pytest.raises(ValueError):
        bh.Timeline(((None, ALWAYS), (utc(2026, 2, 1), ALWAYS), (utc(2026, 1, 1), ALWAYS)))


CALENDARS = st.sampled_from(
    [
        BERLIN_WEEK,
        IRAN_WEEK,
        ALWAYS,
        bh.Calendar(
            "Asia/Tehran", frozenset(range(7)), time(8), time(16), frozenset({date(2026, 3, 21), date(2026, 3, 22)})
        ),
    ]
)
MOMENTS = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 1), timezones=st.just(UTC))


@settings(max_examples=60, deadline=None)
@given(
    first=CALENDARS,
    second=CALENDARS,
    switch=MOMENTS,
    start=MOMENTS,
    minutes=st.integers(min_value=0, max_value=5000),
    more=st.integers(min_value=0, max_value=3000),
)
def test_timeline_arithmetic_keeps_the_calendar_laws(
    first: bh.Calendar, second: bh.Calendar, switch: datetime, start: datetime, minutes: int, more: int
) -> None:
    timeline = bh.Timeline(((None, first), (switch, second)))
    end = bh.add_minutes(start, minutes, timeline)
    assert bh.minutes_between(start, end, timeline) == minutes
    assert bh.add_minutes(start, minutes + more, timeline) == bh.add_minutes(end, more, timeline)
    # the split is the sum of its parts: first calendar before the switch, second after
    whole = bh.between(start, end, timeline)
    before = bh.between(start, min(end, switch), first) if start < switch else timedelta(0)
    after = bh.between(max(start, switch), end, second) if end > switch else timedelta(0)
    assert whole == before + after


@settings(max_examples=30, deadline=None)
@given(calendar=CALENDARS, switch=MOMENTS, start=MOMENTS, minutes=st.integers(min_value=0, max_value=5000))
def test_a_switch_to_the_same_calendar_changes_nothing(
    calendar: bh.Calendar, switch: datetime, start: datetime, minutes: int
) -> None:
    timeline = bh.Timeline(((None, calendar), (switch, calendar)))
    assert bh.add_minutes(start, minutes, timeline) == bh.add_minutes(start, minutes, calendar)


# --- policy versions --------------------------------------------------------------------------


def test_a_revision_is_a_version_in_force_from_its_effective_time_and_a_repeat_changes_nothing() -> None:
    sla = policy()
    assert sla.revise({"business_hours": IRAN_HOURS}, utc(2026, 3, 1)) == ["business_hours"]
    [event] = sla.pending
    assert event.type == "SlaPolicyRevised" and event.data["effective_at"] == "2026-03-01T00:00:00.000Z"
    assert event.data["business_hours"] == IRAN_HOURS and event.data["name"] == "Standard"  # every field kept
    assert sla.version == 2 and sla.in_force(utc(2026, 2, 1))["version"] == 1
    assert sla.in_force(utc(2026, 3, 1))["version"] == 2
    assert sla.revise({"business_hours": IRAN_HOURS}, utc(2026, 3, 1)) == [] and sla.version == 2  # the same again
    assert [v["version"] for v in sla.timeline_from(utc(2026, 2, 1))] == [1, 2]


def test_a_later_decision_replaces_what_was_scheduled_after_its_effective_time() -> None:
    sla = policy()
    sla.revise({"targets": targets(first_response=30)}, utc(2026, 4, 1))  # v2, planned for April
    sla.revise({"business_hours": IRAN_HOURS}, utc(2026, 3, 1))  # v3 from March: the latest decision
    assert [(v["version"], v["effective_at"]) for v in sla.timeline] == [(1, None), (3, "2026-03-01T00:00:00.000Z")]
    assert sla.in_force(utc(2026, 5, 1))["targets"]["normal"]["first_response"] == 30  # built on the latest fields
    restored = SlaPolicy.restore(sla.view())
    assert restored.timeline == sla.timeline and restored.fields == sla.fields


def test_a_country_s_holidays_are_expanded_into_the_stored_dates() -> None:
    nowruz = holiday_sources.expand("IR", [2026, 2027])
    assert {"2026-03-21", "2026-03-22", "2026-03-23", "2026-03-24", "2027-03-21"} <= set(nowruz)
    assert nowruz == sorted(nowruz) and all(day[:4] in ("2026", "2027") for day in nowruz)
    assert holiday_sources.problems("XX", [2026], None) == {
        "country": ["not a country the holidays package covers (ISO 3166-1 alpha-2, e.g. IR)"]
    }
    assert set(holiday_sources.problems("IR", [1800], "THR")) == {"subdivision", "years"}

    sla = policy(business_hours=IRAN_HOURS, holidays=["2026-01-01"], targets=targets(first_response=150))
    sla.revise({}, utc(2026, 1, 1), extra_holidays=nowruz)
    [event] = sla.pending
    assert set(event.data["holidays"]) == {"2026-01-01", *nowruz}  # dates in the event, not a reference
    assert event.data["changed"] == ["holidays"]
    ticket = opened(utc(2026, 3, 18, 11), sla)  # Wednesday 14:30 in Tehran, Nowruz ahead
    # 90 minutes left on Wednesday; Saturday 21 to Tuesday 24 are holidays, Thursday and Friday off
    assert due(ticket, "first_response", utc(2026, 3, 18, 11)) == datetime(2026, 3, 25, 9, 0, tzinfo=TEHRAN)


# --- tickets following the versions -----------------------------------------------------------


def test_a_calendar_change_in_the_past_moves_the_due_time_and_a_late_breach_is_at_the_due_time() -> None:
    sla = policy(targets=targets(first_response=600))  # 24/7: due ten hours after opening
    t0 = utc(2026, 1, 6, 10)  # a Tuesday
    ticket = opened(t0, sla)
    assert due(ticket, "first_response", t0) == t0 + timedelta(hours=10)
    sla.revise({"business_hours": {**IRAN_HOURS, "start": "08:00", "end": "12:00"}}, t0 - timedelta(days=1))
    now = t0 + timedelta(days=6)  # the change is found six days later
    assert ticket.follow_policy(sla.timeline_from(t0), now)
    # Tehran 08:00-12:00 (04:30-08:30 UTC): Tue after 10:00 UTC nothing, Wed 4 h, Thu/Fri off, Sat 4 h, Sun 2 h
    expected = utc(2026, 1, 11, 6, 30)
    assert due(ticket, "first_response", now) == expected
    recomputed, breached = ticket.pending
    assert recomputed.type == "SlaRecomputed" and recomputed.data["versions"] == [2]
    assert recomputed.data["due"] == [
        {"key": "first_response", "target": "first_response", "due_at": rfc3339(expected)}
    ]
    assert breached.type == "SlaBreached" and breached.schema_version == 2
    assert breached.data["breached_at"] == breached.data["due_at"] == rfc3339(expected)
    assert breached.data["detected_at"] == rfc3339(now)


def test_a_recorded_breach_is_moved_or_withdrawn_when_the_versions_say_so() -> None:
    sla = policy(targets=targets(first_response=60, resolution=120))
    t0 = utc(2026, 1, 6, 10)
    ticket = opened(t0, sla)
    now = t0 + timedelta(hours=3)
    assert ticket.detect_breaches(now) == ["first_response", "resolution"]
    ticket.pending = []
    assert ticket.breaches["first_response"]["breached_at"] == rfc3339(t0 + timedelta(hours=1))
    # from before the opening: first response 240 minutes (not breached yet), resolution 150 (breached later)
    sla.revise({"targets": targets(first_response=240, resolution=150)}, t0 - timedelta(hours=1))
    assert ticket.follow_policy(sla.timeline_from(t0), now)
    [event] = ticket.pending
    assert event.data["withdrawn"] == ["first_response"]
    assert event.data["moved"] == [
        {
            "key": "resolution",
            "due_at": rfc3339(t0 + timedelta(minutes=150)),
            "breached_at": rfc3339(t0 + timedelta(minutes=150)),
        }
    ]
    assert set(ticket.breaches) == {"resolution"}
    assert ticket.breaches["resolution"]["breached_at"] == rfc3339(t0 + timedelta(minutes=150))


def test_the_target_is_the_one_in_force_when_the_clock_started() -> None:
    sla = policy(targets=targets(first_response=60))
    t0 = utc(2026, 1, 6, 10)
    sla.revise({"targets": targets(first_response=30)}, t0 + timedelta(minutes=10))  # after the opening
    ticket = opened(t0, sla)
    assert [v["version"] for v in ticket._timeline()] == [1, 2]  # a scheduled version travels with the ticket
    assert due(ticket, "first_response", t0) == t0 + timedelta(minutes=60)


def test_a_slabreached_v1_reads_as_v2() -> None:
    v1 = RecordedEvent(
        new_id(),
        "service-desk",
        "t-1",
        "ticket",
        2,
        "SlaBreached",
        1,
        {
            "key": "first_response",
            "target": "first_response",
            "priority": "normal",
            "contact_id": "c-1",
            "policy_id": "p-1",
            "due_at": "2026-01-06T11:00:00.000Z",
            "breached_at": "2026-01-06T11:00:05.000Z",
        },
        utc(2026, 1, 6, 11),
        "system",
        new_id(),
        None,
    )
    v2 = UPCASTERS.upcast(v1)
    assert v2.schema_version == 2
    assert v2.data["breached_at"] == "2026-01-06T11:00:00.000Z"
    assert v2.data["detected_at"] == "2026-01-06T11:00:05.000Z"


REVISIONS = st.lists(
    st.tuples(
        st.integers(min_value=-72, max_value=72),  # effective, hours from the opening
        st.sampled_from(
            [None, IRAN_HOURS, {**IRAN_HOURS, "time_zone": "Europe/Berlin", "start": "09:00", "end": "17:00"}]
        ),
        st.integers(min_value=1, max_value=3000),  # first response target
        st.lists(st.sampled_from(["2026-01-06", "2026-01-07", "2026-01-10"]), max_size=3),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(
    revisions=REVISIONS,
    found_after=st.integers(min_value=0, max_value=24 * 14),
    pending_at=st.one_of(st.none(), st.integers(min_value=0, max_value=24 * 5)),
)
def test_recompute_twice_is_recompute_once(revisions: list, found_after: int, pending_at: int | None) -> None:
    sla = policy(targets=targets(first_response=120, resolution=600))
    t0 = utc(2026, 1, 5, 10)
    ticket = opened(t0, sla, keep=True)
    if pending_at is not None:
        ticket.change_status("pending", t0 + timedelta(hours=pending_at))
    for hours, hours_of_work, minutes, holidays in revisions:
        sla.revise(
            {
                "business_hours": hours_of_work,
                "targets": targets(first_response=minutes, resolution=600),
                "holidays": holidays,
            },
            t0 + timedelta(hours=hours),
        )
    now = t0 + timedelta(hours=max(found_after, pending_at or 0))
    ticket.follow_policy(sla.timeline_from(t0), now)
    once = (ticket.snapshot(), ticket.version)
    assert not ticket.follow_policy(sla.timeline_from(t0), now + timedelta(hours=1))  # nothing new to follow
    assert (ticket.snapshot(), ticket.version) == once
    for key, breach in ticket.breaches.items():  # every breach is at its due time, found whenever
        assert breach["breached_at"] == breach["due_at"]
        assert parse_time(breach["breached_at"]) <= now, key
    # the fold of the recorded events gives the same ticket (what the read model and a replay see)
    refolded = Ticket("t-1")
    for event in ticket.pending:
        refolded.apply_stored(event)
    assert refolded.snapshot() == ticket.snapshot()
