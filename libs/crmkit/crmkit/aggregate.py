"""Aggregates decide; the repository loads and saves them through the event store.

An aggregate's state is the fold of its events. Commands are methods that check the
rules against the current state and `record` new events, which are applied at once, so
a second command in the same unit of work sees the first one's effect. Nothing here
does I/O except `Repository`, which is the edge between domain and store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from crmkit.errors import Conflict, NotFound, PreconditionFailed
from crmkit.events import Metadata, NewEvent, RecordedEvent
from crmkit.eventstore import ConcurrencyError, EventStore, StreamAppend


class Aggregate:
    """Base for event-sourced aggregates: subclasses implement `apply`."""

    aggregate_type: ClassVar[str]

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self.version = 0  # events applied, stored or pending
        self.pending: list[NewEvent] = []
        self.created_at: datetime | None = None  # times of the first and the last stored event
        self.updated_at: datetime | None = None

    def apply(self, event_type: str, data: dict[str, Any]) -> None:
        """Change state for one event. Must not fail: the event already happened."""
        raise NotImplementedError

    def view(self) -> dict[str, Any]:
        """The state as clients see it (also what history compares)."""
        raise NotImplementedError

    def record(self, event_type: str, data: dict[str, Any], schema_version: int = 1) -> None:
        self.apply(event_type, data)
        self.version += 1
        self.pending.append(NewEvent(event_type, data, schema_version))

    @property
    def stored_version(self) -> int:
        return self.version - len(self.pending)

    @classmethod
    def from_events(cls, aggregate_id: str, events: Sequence[RecordedEvent]) -> Any:
        aggregate = cls(aggregate_id)
        aggregate.catch_up(events)
        return aggregate

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Any:
        """The aggregate back from its `view()`, so a projection can continue a fold.

        By default every key of the view that names an attribute is set back (version and
        times included); what the view leaves out keeps its default. Aggregates whose view
        is shaped differently from their state override this."""
        aggregate = cls(view["id"])
        for name, value in view.items():
            if name != "id" and hasattr(aggregate, name):
                setattr(aggregate, name, value)
        return aggregate

    def catch_up(self, events: Sequence[RecordedEvent]) -> None:
        """Apply stored events; version and times follow them."""
        for event in events:
            self.apply(event.type, event.data)
            self.version = event.version
            self.created_at = self.created_at or event.time
            self.updated_at = event.time


A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")


class Repository(Generic[A]):
    """Loads aggregates by folding their stream and appends what they recorded."""

    def __init__(self, store: EventStore, kind: type[A], on_saved: Callable[[list[RecordedEvent]], None]) -> None:
        self.store = store
        self.kind = kind
        self.on_saved = on_saved  # the publisher, so Kafka hears right after the commit

    def get(self, aggregate_id: str, as_of: datetime | None = None) -> A:
        return self.kind.from_events(aggregate_id, self.history(aggregate_id, as_of))

    def get_many(self, aggregate_ids: Sequence[str]) -> dict[str, A]:
        """Many aggregates folded from one store query per round of versions; unknown ids are left out."""
        streams = self.store.load_many(aggregate_ids)
        return {aggregate_id: self.kind.from_events(aggregate_id, events) for aggregate_id, events in streams.items()
                if events[0].aggregate_type == self.kind.aggregate_type}

    def history(self, aggregate_id: str, as_of: datetime | None = None) -> list[RecordedEvent]:
        """The aggregate's stored events (up to `as_of`); NotFound unless it is one of ours."""
        events = self.store.load(aggregate_id, as_of=as_of)
        if not events or events[0].aggregate_type != self.kind.aggregate_type:
            raise NotFound(f"no {self.kind.aggregate_type} with id {aggregate_id}")
        return events

    def save(self, aggregate: A, meta: Metadata) -> list[RecordedEvent]:
        recorded = self.store.append(
            aggregate.id, aggregate.aggregate_type, aggregate.stored_version, aggregate.pending, meta
        )
        aggregate.pending = []
        if recorded:
            aggregate.created_at = aggregate.created_at or recorded[0].time
            aggregate.updated_at = recorded[-1].time
        self.on_saved(recorded)
        return recorded

    def save_many(self, aggregates: Sequence[A], meta_of: Callable[[A], Metadata]) -> set[str]:
        """Save many aggregates' pending events in one bulk append; returns the ids that lost a
        race (their events are not kept, and the aggregate keeps them pending)."""
        stored, taken = self.store.append_streams([
            StreamAppend(a.id, a.aggregate_type, a.stored_version, a.pending, meta_of(a)) for a in aggregates])
        saved = {event.stream_id: event for event in stored}
        for aggregate in aggregates:
            if aggregate.id in saved:
                aggregate.pending = []
                aggregate.created_at = aggregate.created_at or saved[aggregate.id].time
                aggregate.updated_at = saved[aggregate.id].time
        self.on_saved(stored)
        return taken

    def change_many(self, aggregate_ids: Sequence[str], decide: Callable[[A], T], meta: Metadata,
                    create: Callable[[str], A] | None = None) -> dict[str, T]:
        """`change` for many aggregates (sweeps, reactions to another service's event): one load,
        one bulk append. One that another writer moved meanwhile is loaded and decided again on
        its own. Unknown ids are left out, unless `create` starts them. Returns each decision."""
        found = self.get_many(aggregate_ids)
        if create is not None:
            found.update({aggregate_id: create(aggregate_id) for aggregate_id in dict.fromkeys(aggregate_ids)
                          if aggregate_id not in found})
        decisions = {aggregate_id: decide(aggregate) for aggregate_id, aggregate in found.items()}
        changed = [aggregate for aggregate in found.values() if aggregate.pending]
        for taken in self.save_many(changed, lambda _: meta) if changed else ():
            def again(aggregate: A, aggregate_id: str = taken) -> None:
                decisions[aggregate_id] = decide(aggregate)

            self.change(taken, again, meta)
        return decisions

    def change(
        self,
        aggregate_id: str,
        decide: Callable[[A], None],
        meta: Metadata,
        if_match: int | None = None,
        attempts: int = 3,
    ) -> A:
        """Load, decide, append; retried on a concurrent write unless the caller pinned a version.

        With `If-Match` the caller decided against a version it saw, so a concurrent
        change is theirs to look at (412 before, 409 on a race); without it, deciding
        again on the fresh state is what they asked for.
        """
        for attempt in range(attempts):
            aggregate = self.get(aggregate_id)
            if if_match is not None and aggregate.version != if_match:
                raise PreconditionFailed(f"version is {aggregate.version}, If-Match asked for {if_match}")
            decide(aggregate)
            try:
                self.save(aggregate, meta)
                return aggregate
            except ConcurrencyError:
                if if_match is not None or attempt == attempts - 1:
                    raise Conflict("the record was changed concurrently; load it again and retry") from None
        raise AssertionError("unreachable")


def changes_by_event(kind: type[Aggregate], aggregate_id: str, events: Sequence[RecordedEvent]) -> list[dict[str, Any]]:
    """Who changed what and when: each event with the before/after of every field it moved.

    Derived by folding one event at a time and comparing views, so events never have
    to carry "before" values (which would copy personal data into more places).
    """
    aggregate = kind(aggregate_id)
    before = aggregate.view()
    entries = []
    for event in events:
        aggregate.apply(event.type, event.data)
        aggregate.version = event.version
        after = aggregate.view()
        changed = {
            name: {"before": before.get(name), "after": value}
            for name, value in after.items()
            if name not in ("version", "created_at", "updated_at") and before.get(name) != value
        }
        entries.append({
            "version": event.version,
            "event_id": event.id,
            "type": event.type,
            "time": event.time,
            "actor": event.actor,
            "correlation_id": event.correlation_id,
            "changes": changed,
        })
        before = after
    return entries
