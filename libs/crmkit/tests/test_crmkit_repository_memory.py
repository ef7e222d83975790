"""The repository on the in-memory store: load, decide, append, and the retries, without a server.

What a use case does through `Repository.change` / `change_many` runs here in microseconds;
the store contract tests (test_crmkit_store_contract.py) show the in-memory store answers
as the MongoDB one does, so these outcomes hold on it too.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from crmkit.aggregate import Aggregate
from crmkit.domainevents import DomainEvent
from crmkit.errors import Conflict, NotFound, PreconditionFailed, ValidationFailed
from crmkit.events import Metadata, NewEvent, RecordedEvent
from crmkit.memstore import InMemoryEventStore
from crmkit.repository import Repository

META = Metadata(actor="user:alice")


class Tally(Aggregate):
    """A tiny aggregate: a label and a running total, counted up only."""

    aggregate_type = "tally"

    class TallyOpened(DomainEvent):
        """A tally began."""

        label: str

    class TallyCounted(DomainEvent):
        """The total grew."""

        by: int

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.label: str | None = None
        self.total = 0

    @classmethod
    def open(cls, aggregate_id: str, label: str = "new") -> Tally:
        tally = cls(aggregate_id)
        tally.record(cls.TallyOpened(label=label))
        return tally

    def count(self, by: int) -> None:
        if by < 1:
            raise ValidationFailed("a tally only counts up", {"by": ["must be at least 1"]})
        self.record(self.TallyCounted(by=by))

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """An event without effect on the state."""

    @apply.register(TallyOpened)
    def _opened(self, event: TallyOpened) -> None:
        self.label = event.label

    @apply.register(TallyCounted)
    def _counted(self, event: TallyCounted) -> None:
        self.total += event.by

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "label": self.label, "total": self.total}


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore("tallies")


@pytest.fixture
def published() -> list[RecordedEvent]:
    return []


@pytest.fixture
def tallies(store: InMemoryEventStore, published: list[RecordedEvent]) -> Repository[Tally]:
    return Repository(store, Tally, published.extend)


def opened(tallies: Repository[Tally], aggregate_id: str, total: int = 0) -> Tally:
    tally = Tally.open(aggregate_id, label=aggregate_id)
    if total:
        tally.count(total)
    tallies.save(tally, META)
    return tally


def test_a_saved_aggregate_loads_back_with_state_version_and_times(
    tallies: Repository[Tally], published: list[RecordedEvent]
) -> None:
    saved = opened(tallies, "t1", total=3)
    assert saved.pending == [] and saved.created_at is not None
    loaded = tallies.get("t1")
    assert (loaded.label, loaded.total, loaded.version) == ("t1", 3, 2)
    assert loaded.created_at == saved.created_at == loaded.updated_at
    assert [e.type for e in published] == ["TallyOpened", "TallyCounted"]  # what the publisher is handed


def test_change_decides_on_the_current_state_and_stores_the_decision(
    tallies: Repository[Tally], store: InMemoryEventStore
) -> None:
    opened(tallies, "t1", total=2)
    changed = tallies.change("t1", lambda tally: tally.count(5), META)
    assert (changed.total, changed.version) == (7, 3)
    assert [e.data for e in store.load("t1")][-1] == {"by": 5}
    assert tallies.get("t1").total == 7


def test_a_refused_decision_stores_nothing(tallies: Repository[Tally], store: InMemoryEventStore) -> None:
    opened(tallies, "t1")
    with pytest.raises(ValidationFailed):
        tallies.change("t1", lambda tally: tally.count(0), META)
    assert len(store.load("t1")) == 1


def test_change_decides_again_when_another_writer_got_there_first(tallies: Repository[Tally]) -> None:
    opened(tallies, "t1")
    seen: list[int] = []

    def decide(tally: Tally) -> None:
        seen.append(tally.total)
        if len(seen) == 1:  # while we decide, someone else counts 10
            tallies.change("t1", lambda other: other.count(10), Metadata(actor="user:bob"))
        tally.count(1)

    assert tallies.change("t1", decide, META).total == 11
    assert seen == [0, 10]  # the second decision saw the other writer's count
    assert tallies.get("t1").version == 3


def test_if_match_pins_the_version(tallies: Repository[Tally]) -> None:
    opened(tallies, "t1", total=1)
    with pytest.raises(PreconditionFailed):
        tallies.change("t1", lambda tally: tally.count(1), META, if_match=1)

    def racing(tally: Tally) -> None:
        tallies.change("t1", lambda other: other.count(1), META)
        tally.count(1)

    with pytest.raises(Conflict):  # the caller's version was current, then a race: theirs to look at
        tallies.change("t1", racing, META, if_match=2)
    assert tallies.get("t1").total == 2


def test_an_unknown_id_or_another_kind_of_record_is_not_found(
    tallies: Repository[Tally], store: InMemoryEventStore
) -> None:
    store.append("w1", "widget", 0, [NewEvent("WidgetCreated", {"name": "x"})], META)
    for unknown in ("nope", "w1"):
        with pytest.raises(NotFound):
            tallies.get(unknown)
    assert tallies.get_many(["nope", "w1"]) == {}


def test_change_many_loads_once_appends_once_and_creates_the_missing(
    tallies: Repository[Tally], store: InMemoryEventStore, published: list[RecordedEvent]
) -> None:
    opened(tallies, "a", total=1)
    opened(tallies, "b", total=2)
    published.clear()

    def decide(tally: Tally) -> int:
        tally.count(10)
        return tally.total

    decisions = tallies.change_many(["a", "b", "c", "a"], decide, META, create=Tally.open)
    assert decisions == {"a": 11, "b": 12, "c": 10}
    assert {e.stream_id for e in published} == {"a", "b", "c"}
    assert [e.type for e in store.load("c")] == ["TallyOpened", "TallyCounted"]
    assert tallies.change_many(["nobody"], decide, META) == {}  # unknown and not created: left out


def test_change_many_decides_again_for_a_stream_another_writer_moved(tallies: Repository[Tally]) -> None:
    opened(tallies, "a")
    opened(tallies, "b")
    calls: list[str] = []

    def decide(tally: Tally) -> int:
        calls.append(tally.id)
        if calls == ["a"]:  # someone else counts 5 on `a` between our load and our append
            tallies.change("a", lambda other: other.count(5), Metadata(actor="user:bob"))
        tally.count(1)
        return tally.total

    assert tallies.change_many(["a", "b"], decide, META) == {"a": 6, "b": 1}
    assert calls == ["a", "b", "a"]  # `a` was decided again, on its fresh state
    assert (tallies.get("a").total, tallies.get("b").total) == (6, 1)
