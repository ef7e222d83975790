"""The event store contract (crmkit.store), checked on both stores that keep it.

Every test runs against the MongoDB-backed `EventStore` (on the session's local MongoDB
stand-in; marked `servers`, so `make unit` leaves it out) and against the in-memory
`InMemoryEventStore` (no server). A use case tested on the in-memory store can trust what
it learns only as far as these tests hold for both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from crmkit import memstore
from crmkit.events import Metadata, NewEvent, new_id
from crmkit.memstore import InMemoryEventStore
from crmkit.store import ConcurrencyError, Store, StreamAppend

SERVICE = "widgets"
META = Metadata(actor="user:alice", correlation_id="corr-1", causation_id="cause-1")
T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


def ev(kind: str = "WidgetRenamed", **data: object) -> NewEvent:
    return NewEvent(kind, dict(data) or {"name": "x"})


@pytest.fixture(params=[pytest.param("mongo", marks=pytest.mark.servers), "memory"])
def any_store(request: pytest.FixtureRequest) -> Store:
    """Each store, with `contact_id` as a reference key (for `streams_referring`)."""
    if request.param == "memory":
        return InMemoryEventStore(SERVICE, references=("contact_id",))
    from crmkit.eventstore import EventStore  # only here: the in-memory runs import no driver

    store = EventStore(request.getfixturevalue("db"), SERVICE, references=("contact_id",))
    store.ensure_indexes()
    return store


@pytest.fixture
def at(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[datetime], None]]:
    """Pin both stores' clocks: `at(moment)` makes the next appends happen at `moment`."""
    from crmkit import eventstore

    now = [T0]
    monkeypatch.setattr(eventstore, "utcnow", lambda: now[0])
    monkeypatch.setattr(memstore, "utcnow", lambda: now[0])

    def set_to(moment: datetime) -> None:
        now[0] = moment

    yield set_to


def test_appended_events_load_back_as_recorded(any_store: Store) -> None:
    stream = new_id()
    recorded = any_store.append(stream, "Widget", 0, [ev("WidgetCreated", name="Cog"), ev(name="Gear")], META)
    assert [(e.version, e.type, e.data) for e in recorded] == [
        (1, "WidgetCreated", {"name": "Cog"}),
        (2, "WidgetRenamed", {"name": "Gear"}),
    ]
    assert {(e.service, e.stream_id, e.aggregate_type) for e in recorded} == {(SERVICE, stream, "Widget")}
    assert {(e.actor, e.correlation_id, e.causation_id) for e in recorded} == {("user:alice", "corr-1", "cause-1")}
    assert recorded[0].time == recorded[1].time and recorded[0].time.tzinfo is not None  # one commit, one moment
    assert any_store.load(stream) == recorded


def test_versions_continue_across_commits_and_after_version_skips(any_store: Store) -> None:
    stream = new_id()
    any_store.append(stream, "Widget", 0, [ev("WidgetCreated"), ev()], META)
    more = any_store.append(stream, "Widget", 2, [ev(name="b"), ev(name="c")], META)
    assert [e.version for e in more] == [3, 4]
    assert [e.version for e in any_store.load(stream)] == [1, 2, 3, 4]
    assert [e.version for e in any_store.load(stream, after_version=2)] == [3, 4]
    assert [e.version for e in any_store.load(stream, after_version=3)] == [4]


def test_an_append_at_a_stale_version_conflicts_and_stores_nothing(any_store: Store) -> None:
    stream = new_id()
    first = any_store.append(stream, "Widget", 0, [ev("WidgetCreated")], META)
    with pytest.raises(ConcurrencyError) as caught:
        any_store.append(stream, "Widget", 0, [ev(name="late-1"), ev(name="late-2"), ev(name="late-3")], META)
    assert (caught.value.stream_id, caught.value.expected_version) == (stream, 0)
    assert any_store.load(stream) == first  # none of the three losing events is kept


def test_an_empty_append_stores_nothing(any_store: Store) -> None:
    stream = new_id()
    assert any_store.append(stream, "Widget", 0, [], META) == []
    assert any_store.load(stream) == []


def test_racing_commits_one_wins_whole(any_store: Store) -> None:
    """Writers decide on the same version at once: exactly one commit is stored, all of it."""
    stream = new_id()
    outcomes: list[str] = []
    start = threading.Barrier(6)

    def write(writer: int) -> None:
        start.wait()
        try:
            any_store.append(
                stream, "Widget", 0, [ev(name=f"{writer}-a"), ev(name=f"{writer}-b")], Metadata(actor=f"user:{writer}")
            )
            outcomes.append("won")
        except ConcurrencyError:
            outcomes.append("lost")

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["lost"] * 5 + ["won"]
    stored = any_store.load(stream)
    assert len(stored) == 2 and len({e.actor for e in stored}) == 1  # both events of the one winner
    writer = stored[0].actor.removeprefix("user:")
    assert [e.data["name"] for e in stored] == [f"{writer}-a", f"{writer}-b"]


def test_append_streams_stores_the_fresh_and_reports_the_taken(any_store: Store) -> None:
    moved, fresh, new = new_id(), new_id(), new_id()
    any_store.append(moved, "Widget", 0, [ev("WidgetCreated")], META)
    any_store.append(fresh, "Widget", 0, [ev("WidgetCreated")], META)
    any_store.append(moved, "Widget", 1, [ev(name="meanwhile")], META)  # another writer moved it on
    stored, taken = any_store.append_streams(
        [
            StreamAppend(moved, "Widget", 1, [ev(name="lost-1"), ev(name="lost-2")], META),
            StreamAppend(fresh, "Widget", 1, [ev(name="f-1"), ev(name="f-2")], META),
            StreamAppend(new, "Widget", 0, [ev("WidgetCreated")], META),
        ]
    )
    assert taken == {moved}
    assert sorted((e.stream_id, e.version) for e in stored) == sorted([(fresh, 2), (fresh, 3), (new, 1)])
    assert [e.data.get("name") for e in any_store.load(moved)] == ["x", "meanwhile"]  # nothing of the lost commit
    assert [e.data.get("name") for e in any_store.load(fresh)] == ["x", "f-1", "f-2"]


def test_as_of_returns_the_stream_as_it_was(any_store: Store, at: Callable[[datetime], None]) -> None:
    stream = new_id()
    at(T0)
    any_store.append(stream, "Widget", 0, [ev("WidgetCreated"), ev(name="one")], META)
    at(T0 + timedelta(milliseconds=120))
    any_store.append(stream, "Widget", 2, [ev(name="two")], META)
    assert any_store.load(stream, as_of=T0 - timedelta(milliseconds=1)) == []
    assert [e.version for e in any_store.load(stream, as_of=T0)] == [1, 2]  # a moment includes itself
    assert [e.version for e in any_store.load(stream, as_of=T0 + timedelta(milliseconds=119))] == [1, 2]
    assert [e.version for e in any_store.load(stream, as_of=T0 + timedelta(hours=1))] == [1, 2, 3]


def test_load_many_returns_known_streams_and_leaves_out_unknown(any_store: Store) -> None:
    one, two, unknown = new_id(), new_id(), new_id()
    any_store.append(one, "Widget", 0, [ev("WidgetCreated")], META)
    any_store.append(two, "Gadget", 0, [ev("GadgetMade"), ev()], META)
    any_store.append(two, "Gadget", 2, [ev(name="later")], META)
    streams = any_store.load_many([one, unknown, two, one])
    assert set(streams) == {one, two}
    assert [e.version for e in streams[two]] == [1, 2, 3] and streams[one] == any_store.load(one)


def test_streams_referring_finds_streams_by_a_reference_in_their_data(any_store: Store) -> None:
    person, other = new_id(), new_id()
    deal, ticket, unrelated = new_id(), new_id(), new_id()
    any_store.append(deal, "Deal", 0, [ev("DealCreated", contact_id=person)], META)
    any_store.append(ticket, "Ticket", 0, [ev("TicketOpened", contact_id=other), ev(contact_id=person)], META)
    any_store.append(unrelated, "Deal", 0, [ev("DealCreated", contact_id=other)], META)
    assert any_store.streams_referring([person], ["Deal", "Ticket"]) == {(deal, "Deal"), (ticket, "Ticket")}
    assert any_store.streams_referring([person], ["Deal"]) == {(deal, "Deal")}
    assert any_store.streams_referring([], ["Deal"]) == set()


def test_changing_a_loaded_event_changes_nothing_stored(any_store: Store) -> None:
    stream = new_id()
    any_store.append(stream, "Widget", 0, [ev("WidgetCreated", tags=["a"])], META)
    any_store.load(stream)[0].data["tags"].append("b")
    assert any_store.load(stream)[0].data == {"tags": ["a"]}
