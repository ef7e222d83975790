"""An event store in memory: the same contract as the MongoDB one, for use cases tested without servers.

`InMemoryEventStore` keeps `crmkit.store.Store` as `crmkit.eventstore.EventStore` does, and
the same contract tests run against both (libs/crmkit/tests/test_crmkit_store_contract.py):

- an append is one commit, stored whole or not at all, at versions expected_version+1..;
  if the stream is no longer at `expected_version`, nothing is stored and
  `ConcurrencyError` is raised (optimistic concurrency, as the MongoDB primary key gives);
- a bulk append (`append_streams`) is a commit per stream: the streams that moved on are
  reported as taken and nothing of theirs is stored, the others are;
- a load returns the stream in version order, up to a moment (`as_of`) if asked.

It is a real store, not a mock: one lock makes every append and read atomic across threads,
and events are copied in and out, so a caller mutating what it got changes nothing stored.
What it leaves out: the outbox (nothing is published), personal-data sealing and the strict
catalogue check (both need the infrastructure this module stays clear of). Upcasters apply
on reads as in the MongoDB store. Pure: imports only the standard library and pure crmkit.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime

from crmkit.events import Metadata, NewEvent, RecordedEvent, Upcasters, epoch_ms, new_id, utcnow
from crmkit.store import ConcurrencyError, StreamAppend


class InMemoryEventStore:
    """One service's events in a dict of streams, each a list in version order."""

    def __init__(self, service: str, upcasters: Upcasters | None = None, references: Sequence[str] = ()) -> None:
        self.service = service
        self.upcasters = upcasters or Upcasters()
        # keys of event data that name other records, which `streams_referring` finds streams by
        self.references = tuple(references)
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._lock = threading.Lock()

    def append(
        self, stream_id: str, aggregate_type: str, expected_version: int, events: Sequence[NewEvent], meta: Metadata
    ) -> list[RecordedEvent]:
        """Store `events` as one commit at versions expected_version+1.., or raise ConcurrencyError."""
        if not events:
            return []
        recorded = self._record(StreamAppend(stream_id, aggregate_type, expected_version, events, meta))
        with self._lock:
            if not self._commit(recorded):
                raise ConcurrencyError(stream_id, expected_version)
        return recorded

    def start_streams(
        self, streams: Sequence[tuple[str, str, Sequence[NewEvent]]], meta: Metadata
    ) -> tuple[list[RecordedEvent], set[str]]:
        """Begin many new streams; returns what was stored and the streams that already existed."""
        return self.append_streams(
            [StreamAppend(stream_id, kind, 0, events, meta) for stream_id, kind, events in streams]
        )

    def append_streams(self, appends: Sequence[StreamAppend]) -> tuple[list[RecordedEvent], set[str]]:
        """A commit per stream at its expected version; returns what was stored and the ids of the
        streams that had moved on (nothing of their commit is stored)."""
        commits = [self._record(append) for append in appends if append.events]
        stored: list[RecordedEvent] = []
        taken: set[str] = set()
        with self._lock:
            for commit in commits:
                if self._commit(commit):
                    stored += commit
                else:
                    taken.add(commit[0].stream_id)
        return stored, taken

    def load(self, stream_id: str, *, after_version: int = 0, as_of: datetime | None = None) -> list[RecordedEvent]:
        """The stream's events in version order: those after `after_version`, recorded by `as_of`."""
        cutoff = epoch_ms(as_of) if as_of is not None else None
        with self._lock:
            events = [
                event
                for event in self._streams.get(stream_id, ())
                if event.version > after_version and (cutoff is None or epoch_ms(event.time) <= cutoff)
            ]
        return self._read(events)

    def load_many(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        """Several streams at once; unknown ids are left out."""
        with self._lock:
            found = {
                stream_id: list(self._streams[stream_id])
                for stream_id in dict.fromkeys(stream_ids)
                if stream_id in self._streams
            }
        return {stream_id: self._read(events) for stream_id, events in found.items()}

    def streams_referring(self, ids: Sequence[str], aggregate_types: Sequence[str]) -> set[tuple[str, str]]:
        """(stream, aggregate type) of the streams of these types with an event whose data names
        one of `ids` under a `references` key."""
        wanted, kinds = set(ids), set(aggregate_types)
        if not wanted or not self.references:
            return set()
        with self._lock:
            return {
                (event.stream_id, event.aggregate_type)
                for events in self._streams.values()
                for event in events
                if event.aggregate_type in kinds and any(event.data.get(key) in wanted for key in self.references)
            }

    def scan(self, batch_size: int = 1000, *, sealed: bool = False) -> Iterator[list[RecordedEvent]]:
        """Every event, per stream (in stream id order) in version order, in batches of whole
        commits; upcast unless `sealed` (exactly as stored)."""
        with self._lock:
            events = [event for stream_id in sorted(self._streams) for event in self._streams[stream_id]]
        batch: list[RecordedEvent] = []
        for index, event in enumerate(events):
            batch.append(event)
            ends_commit = (
                index + 1 == len(events)
                or events[index + 1].commit != event.commit
                or events[index + 1].stream_id != event.stream_id
            )
            if len(batch) >= batch_size and ends_commit:
                yield self._copies(batch) if sealed else self._read(batch)
                batch = []
        if batch:
            yield self._copies(batch) if sealed else self._read(batch)

    def count(self) -> int:
        """How many events are stored."""
        with self._lock:
            return sum(len(events) for events in self._streams.values())

    def open(self, events: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """Events as domain code reads them: old shapes upcast (nothing here is sealed)."""
        return self.upcasters.upcast_all(events)

    def _commit(self, commit: list[RecordedEvent]) -> bool:
        """Add one commit if its stream is still at the version it was decided on (the caller
        holds the lock): all of its events, or none."""
        stream = self._streams.setdefault(commit[0].stream_id, [])
        if len(stream) != commit[0].version - 1:
            if not stream:
                del self._streams[commit[0].stream_id]
            return False
        stream.extend(self._copies(commit))
        return True

    def _record(self, append: StreamAppend) -> list[RecordedEvent]:
        now = utcnow()
        first = append.expected_version + 1
        return [
            RecordedEvent(
                id=new_id(),
                service=self.service,
                stream_id=append.stream_id,
                aggregate_type=append.aggregate_type,
                version=append.expected_version + offset,
                type=event.type,
                schema_version=event.schema_version,
                data=copy.deepcopy(event.data),
                time=now,
                actor=append.meta.actor,
                correlation_id=append.meta.correlation_id,
                causation_id=append.meta.causation_id,
                commit=first,
            )
            for offset, event in enumerate(append.events, start=1)
        ]

    def _read(self, events: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        return self.open(self._copies(events))

    @staticmethod
    def _copies(events: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """Events that share no mutable data with the stored ones."""
        return [dataclasses.replace(event, data=copy.deepcopy(event.data)) for event in events]
