"""The repository: loads aggregates by folding their stream, and saves what they recorded.

The edge between the pure domain (`crmkit.aggregate`) and an event store: any store that
keeps the contract of `crmkit.store.Store`, the MongoDB one services run on
(`crmkit.eventstore`) or the in-memory one unit tests use (`crmkit.memstore`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Generic, TypeVar

from crmkit.aggregate import Aggregate
from crmkit.errors import Conflict, NotFound, PreconditionFailed
from crmkit.events import Metadata, RecordedEvent
from crmkit.store import ConcurrencyError, Store, StreamAppend

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")


class Repository(Generic[A]):
    """Loads aggregates by folding their stream and appends what they recorded."""

    def __init__(self, store: Store, kind: type[A], on_saved: Callable[[list[RecordedEvent]], None]) -> None:
        self.store = store
        self.kind = kind
        self.on_saved = on_saved  # the publisher, so Kafka hears right after the commit

    def get(self, aggregate_id: str, as_of: datetime | None = None) -> A:
        aggregate: A = self.kind.from_events(aggregate_id, self.history(aggregate_id, as_of))
        return aggregate

    def get_many(self, aggregate_ids: Sequence[str]) -> dict[str, A]:
        """Many aggregates folded from one store query per round of versions; unknown ids are left out."""
        streams = self.store.load_many(aggregate_ids)
        return {
            aggregate_id: self.kind.from_events(aggregate_id, events)
            for aggregate_id, events in streams.items()
            if events[0].aggregate_type == self.kind.aggregate_type
        }

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
        stored, taken = self.store.append_streams(
            [StreamAppend(a.id, a.aggregate_type, a.stored_version, a.pending, meta_of(a)) for a in aggregates]
        )
        saved = {event.stream_id: event for event in stored}
        for aggregate in aggregates:
            if aggregate.id in saved:
                aggregate.pending = []
                aggregate.created_at = aggregate.created_at or saved[aggregate.id].time
                aggregate.updated_at = saved[aggregate.id].time
        self.on_saved(stored)
        return taken

    def change_many(
        self,
        aggregate_ids: Sequence[str],
        decide: Callable[[A], T],
        meta: Metadata,
        create: Callable[[str], A] | None = None,
    ) -> dict[str, T]:
        """`change` for many aggregates (sweeps, reactions to another service's event): one load,
        one bulk append. One that another writer moved meanwhile is loaded and decided again on
        its own. Unknown ids are left out, unless `create` starts them. Returns each decision."""
        found = self.get_many(aggregate_ids)
        if create is not None:
            found.update(
                {
                    aggregate_id: create(aggregate_id)
                    for aggregate_id in dict.fromkeys(aggregate_ids)
                    if aggregate_id not in found
                }
            )
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
        decide: Callable[[A], object],  # what it returns is not used
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
