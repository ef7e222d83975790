"""The event store: one MongoDB collection per service, the source of truth.

Appending is the commit. A unique index on (stream_id, version) makes optimistic
concurrency hold even with many writer processes: whoever inserts version N+1 first
wins, the other gets a duplicate-key error and sees `ConcurrencyError`.
The collection doubles as the transactional outbox: `published` records what Kafka has
acknowledged, so a crash between append and publish loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from crmkit import metrics
from crmkit.catalogue import Catalogue, strict
from crmkit.events import Metadata, NewEvent, RecordedEvent, Upcasters, new_id, parse_time, utcnow
from crmkit.shredding import PersonalData

DUPLICATE_KEY = 11000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ConcurrencyError(Exception):
    """Someone else appended to the stream since it was loaded."""

    def __init__(self, stream_id: str, expected_version: int) -> None:
        super().__init__(f"stream {stream_id} moved past version {expected_version}")
        self.stream_id = stream_id
        self.expected_version = expected_version


@dataclass(frozen=True)
class StreamAppend:
    """One stream's part of a bulk append: its new events at the version they were decided on."""

    stream_id: str
    aggregate_type: str
    expected_version: int
    events: Sequence[NewEvent]
    meta: Metadata


class EventStore:
    """Append, load and scan one service's events."""

    def __init__(
        self, db: Database, service: str, upcasters: Upcasters | None = None, personal: PersonalData | None = None
    ) -> None:
        self.service = service
        self.events: Collection = db["events"]
        self.upcasters = upcasters or Upcasters()
        self.personal = personal
        self.catalogue: Catalogue | None = None  # set by the runtime; checked when CRM_STRICT_EVENTS=1

    def ensure_indexes(self) -> None:
        self.events.create_index([("stream_id", ASCENDING), ("version", ASCENDING)], unique=True)
        self.events.create_index([("published", ASCENDING), ("time_ms", ASCENDING)])
        self.events.create_index([("time_ms", ASCENDING)])

    def append(
        self,
        stream_id: str,
        aggregate_type: str,
        expected_version: int,
        events: Sequence[NewEvent],
        meta: Metadata,
    ) -> list[RecordedEvent]:
        """Store `events` as versions expected_version+1.. of the stream, or raise ConcurrencyError.

        Returns the events as stored, personal fields sealed: what the publisher sends.
        """
        recorded = self._seal(self._record(stream_id, aggregate_type, expected_version, events, meta))
        if not recorded:
            return []
        try:
            self.events.insert_many([_to_document(event) for event in recorded], ordered=True)
        except (DuplicateKeyError, BulkWriteError) as exc:
            if _is_duplicate_key(exc):
                raise ConcurrencyError(stream_id, expected_version) from exc
            raise
        self._count(recorded)
        return recorded

    def start_streams(
        self, streams: Sequence[tuple[str, str, Sequence[NewEvent]]], meta: Metadata
    ) -> tuple[list[RecordedEvent], set[str]]:
        """Begin many new streams in one bulk insert (imports); returns what was stored and
        the ids of streams that already existed (left untouched, e.g. a resumed batch)."""
        return self.append_streams([StreamAppend(stream_id, kind, 0, events, meta)
                                    for stream_id, kind, events in streams])

    def append_streams(self, appends: Sequence[StreamAppend]) -> tuple[list[RecordedEvent], set[str]]:
        """Append to many streams in one bulk insert (a worker's batch of decisions), each at
        its expected version. Returns what was stored and the ids of the streams that had
        moved on: a concurrent writer won there, and nothing of this batch is kept for them.
        """
        recorded = self._seal([event for append in appends for event in self._record(
            append.stream_id, append.aggregate_type, append.expected_version, append.events, append.meta)])
        if not recorded:
            return [], set()
        taken: set[str] = set()
        try:
            self.events.insert_many([_to_document(event) for event in recorded], ordered=False)
        except BulkWriteError as exc:
            if not _is_duplicate_key(exc) or any(e.get("code") != DUPLICATE_KEY for e in exc.details["writeErrors"]):
                raise
            taken = {recorded[error["index"]].stream_id for error in exc.details["writeErrors"]}
            ours = [e for e in recorded if e.stream_id in taken]  # later versions of a taken stream may have gone in
            self.events.delete_many({"_id": {"$in": [stream_key(e.stream_id, e.version) for e in ours]},
                                     "event_id": {"$in": [e.id for e in ours]}})
        stored = [event for event in recorded if event.stream_id not in taken]
        self._count(stored)
        return stored, taken

    def _record(
        self, stream_id: str, aggregate_type: str, expected_version: int, events: Sequence[NewEvent], meta: Metadata
    ) -> list[RecordedEvent]:
        now = utcnow()
        return [
            RecordedEvent(
                id=new_id(),
                service=self.service,
                stream_id=stream_id,
                aggregate_type=aggregate_type,
                version=expected_version + offset,
                type=event.type,
                schema_version=event.schema_version,
                data=event.data,
                time=now,
                actor=meta.actor,
                correlation_id=meta.correlation_id,
                causation_id=meta.causation_id,
            )
            for offset, event in enumerate(events, start=1)
        ]

    def _count(self, recorded: Sequence[RecordedEvent]) -> None:
        for event in recorded:
            metrics.EVENTS_APPENDED.labels(self.service, event.type).inc()

    def load(
        self, stream_id: str, *, after_version: int = 0, as_of: datetime | None = None
    ) -> list[RecordedEvent]:
        """The stream's events in version order, optionally only those recorded by `as_of`."""
        docs = self._stream_documents([stream_id], after_version)
        if as_of is not None:
            cutoff = epoch_ms(as_of)
            docs = [doc for doc in docs if doc["time_ms"] <= cutoff]
        return self._read(docs)

    def load_many(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        """Several streams with one query per round of versions (batch lookups never loop over streams)."""
        streams: dict[str, list[RecordedEvent]] = {}
        for event in self._read(self._stream_documents(list(dict.fromkeys(stream_ids)), 0)):
            streams.setdefault(event.stream_id, []).append(event)
        return streams

    def _stream_documents(self, stream_ids: list[str], after_version: int) -> list[dict[str, Any]]:
        """Documents of the streams after `after_version`, fetched by primary key.

        A stream's events have the keys "<stream>:<version>", so a stream is read with
        `_id $in` over its next versions: 16 at first (4 each when many streams are read
        at once, which are mostly short), more while every key is found.
        That is an index lookup on any MongoDB; nx-27017, which ignores secondary indexes
        and scans a whole collection on `{stream_id: ...}` (tests/compat), answers it in
        about a millisecond however large the store is.
        """
        found: list[dict[str, Any]] = []
        pending, start, size = stream_ids, after_version + 1, 16 if len(stream_ids) == 1 else 4
        while pending:
            keys = [stream_key(stream, v) for stream in pending for v in range(start, start + size)]
            docs = list(self.events.find({"_id": {"$in": keys}}))
            found += docs
            counts: dict[str, int] = {}
            for doc in docs:
                counts[doc["stream_id"]] = counts.get(doc["stream_id"], 0) + 1
            pending = [stream for stream in pending if counts.get(stream) == size]
            start, size = start + size, min(size * 4, 1024)
        return sorted(found, key=lambda doc: (doc["stream_id"], doc["version"]))

    def scan(self, batch_size: int = 1000, *, sealed: bool = False) -> Iterator[list[RecordedEvent]]:
        """Every event, per stream in version order, in batches: opened for rebuilds,
        `sealed` (exactly as stored) for replays to Kafka."""
        cursor = self.events.find({}).sort("_id", ASCENDING)  # "<stream>:<version>": per stream in order
        for batch in self._batches(cursor.batch_size(batch_size), batch_size):
            yield batch if sealed else self.open(batch)

    def unpublished(
        self, *, stream_id: str | None = None, before: datetime | None = None, limit: int = 1000
    ) -> list[RecordedEvent]:
        """Events Kafka has not acknowledged yet, per stream in version order.

        `before` keeps those recorded at or before that moment, so "at least N seconds
        old" includes an event exactly N old (with N = 0: everything, this millisecond too).
        """
        query: dict[str, Any] = {"published": False}
        if stream_id is not None:
            query["stream_id"] = stream_id
        if before is not None:
            query["time_ms"] = {"$lte": epoch_ms(before)}
        cursor = self.events.find(query).sort([("stream_id", ASCENDING), ("version", ASCENDING)])
        return [_from_document(doc, self.service) for doc in cursor.limit(limit)]

    def unsent_through(self, newest: Mapping[str, int]) -> list[RecordedEvent]:
        """What must reach Kafka for each stream to stand on the topic up to version
        `newest[stream]`: its unpublished events from that version down to its newest
        published one, per stream in version order, whatever their age.

        The walk may stop at a published event because the publisher sends an event only
        after every earlier unpublished one of its stream (crmkit.publisher): an earlier
        copy of each is on the topic before it. Read by primary key in growing windows
        (4 versions, then 16, ...), like `_stream_documents`; usually one short query.
        """
        found: dict[str, list[dict[str, Any]]] = {}
        pending, size = {stream: top for stream, top in newest.items() if top >= 1}, 4
        while pending:
            windows = {stream: range(top, max(0, top - size), -1) for stream, top in pending.items()}
            keys = [stream_key(stream, v) for stream, versions in windows.items() for v in versions]
            unsent = {doc["_id"]: doc for doc in self.events.find({"_id": {"$in": keys}, "published": False})}
            pending = {}
            for stream, versions in windows.items():
                run = _unsent_run(stream, versions, unsent)
                found.setdefault(stream, []).extend(run)
                if len(run) == len(versions) and versions[-1] > 1:  # the whole window is unsent: look further down
                    pending[stream] = versions[-1] - 1
            size = min(size * 4, 1024)
        return [_from_document(doc, self.service) for docs in found.values() for doc in reversed(docs)]

    def mark_published(self, events: Sequence[RecordedEvent]) -> None:
        if events:
            keys = [stream_key(event.stream_id, event.version) for event in events]
            self.events.update_many({"_id": {"$in": keys}, "event_id": {"$in": [e.id for e in events]}},
                                    {"$set": {"published": True}})

    def count(self) -> int:
        return self.events.count_documents({})

    def open(self, events: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """Stored (or consumed) events as domain code reads them: personal fields
        decrypted (None once erased), old shapes upcast."""
        own = [e for e in events if e.service == self.service]
        if self.personal is not None and own:
            opened = {e.id: e for e in self.personal.open(own)}
            events = [opened.get(e.id, e) for e in events]
        return self.upcasters.upcast_all(events)

    def _read(self, cursor: Any) -> list[RecordedEvent]:
        return self.open([_from_document(doc, self.service) for doc in cursor])

    def _seal(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        if self.catalogue is not None and strict():
            self.catalogue.check(events)  # an undocumented or malformed event is a bug: refuse it
        return self.personal.seal(events) if self.personal is not None else events

    def _batches(self, cursor: Any, size: int) -> Iterator[list[RecordedEvent]]:
        batch: list[RecordedEvent] = []
        for doc in cursor:
            batch.append(_from_document(doc, self.service))
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch: the form time ranges are queried in.

    nx-27017 compares stored datetimes at whole-second precision (tests/compat pins
    it), so "as of 12:00:00.120" would include an event of 12:00:00.900. Integers
    compare exactly on every server.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)


def text_ms(text: str | None) -> int | None:
    """An RFC 3339 time (as events and views carry them) in epoch milliseconds; None stays None."""
    return epoch_ms(parse_time(text)) if text else None


def _is_duplicate_key(exc: Exception) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    details = getattr(exc, "details", None) or {}
    return any(err.get("code") == DUPLICATE_KEY for err in details.get("writeErrors", []))


def _unsent_run(stream_id: str, versions: range, unsent: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents of `versions` (newest first) up to the first one missing from `unsent`."""
    run = []
    for version in versions:
        doc = unsent.get(stream_key(stream_id, version))
        if doc is None:
            break
        run.append(doc)
    return run


def stream_key(stream_id: str, version: int) -> str:
    """An event's primary key: its stream and version, so the pair is unique by construction."""
    return f"{stream_id}:{version:010d}"


def _to_document(event: RecordedEvent) -> dict[str, Any]:
    return {
        "_id": stream_key(event.stream_id, event.version),
        "event_id": event.id,
        "stream_id": event.stream_id,
        "aggregate_type": event.aggregate_type,
        "version": event.version,
        "type": event.type,
        "schema_version": event.schema_version,
        "data": event.data,
        "time": event.time,
        "time_ms": epoch_ms(event.time),  # what range queries use (see epoch_ms)
        "actor": event.actor,
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "published": False,
    }


def _from_document(doc: dict[str, Any], service: str) -> RecordedEvent:
    return RecordedEvent(
        id=doc["event_id"],
        service=service,
        stream_id=doc["stream_id"],
        aggregate_type=doc["aggregate_type"],
        version=doc["version"],
        type=doc["type"],
        schema_version=doc["schema_version"],
        data=doc["data"],
        time=doc["time"].replace(tzinfo=UTC) if doc["time"].tzinfo is None else doc["time"],
        actor=doc["actor"],
        correlation_id=doc["correlation_id"],
        causation_id=doc.get("causation_id"),
    )
