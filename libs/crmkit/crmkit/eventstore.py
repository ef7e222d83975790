"""The event store: one MongoDB collection per service, the source of truth.

Appending is the commit, and a commit is one document: every event of one decision
(an aggregate's pending events, saved together) in an `events` array, keyed
"<stream>:<first version>". A single-document insert is atomic on every MongoDB (and on
the local server), so a decision is stored whole or not at all, and the primary key makes
optimistic concurrency hold even with many writer processes: whoever inserts the commit
after version N first wins, the other gets a duplicate-key error and sees
`ConcurrencyError`. Writers must append at a version a load returned (the end of a
commit), which `crmkit.repository.Repository` always does. `crmkit.store` states the
contract this store shares with the in-memory one (`crmkit.memstore`).

Reads return whole commits, unfolded into events; projections, the publisher and
consumers work per event as before. Documents written before commits (one event each,
`_id` "<stream>:<version>") read as one-event commits: the same key, so nothing needs
rewriting.

Concurrent appends in one process share one `insert_many` (crmkit.groupcommit).
The collection doubles as the transactional outbox: `published` records what Kafka has
acknowledged, per commit, so a crash between append and publish loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from crmkit import metrics
from crmkit.catalogue import Catalogue, strict
from crmkit.events import Metadata, NewEvent, RecordedEvent, Upcasters, epoch_ms, new_id, utcnow
from crmkit.groupcommit import GroupCommit
from crmkit.shredding import PersonalData
from crmkit.store import ConcurrencyError, StreamAppend  # their home is the store contract; kept importable here


class EventStore:
    """Append, load and scan one service's events."""

    def __init__(
        self,
        db: Database[dict[str, Any]],
        service: str,
        upcasters: Upcasters | None = None,
        personal: PersonalData | None = None,
        references: Sequence[str] = (),
    ) -> None:
        self.service = service
        self.events: Collection[dict[str, Any]] = db["events"]
        self.upcasters = upcasters or Upcasters()
        self.personal = personal
        # keys of event data that name other records (e.g. "contact_id"): their values are kept
        # in the commit's indexed `refs`, for `streams_referring`
        self.references = tuple(references)
        self.catalogue: Catalogue | None = None  # set by the runtime; checked when CRM_STRICT_EVENTS=1
        self._commits = GroupCommit(self.events, "events")

    def ensure_indexes(self) -> None:
        """The primary key is the commit's uniqueness; these serve the outbox and time ranges."""
        self.events.create_index([("published", ASCENDING), ("time_ms", ASCENDING)])
        self.events.create_index([("time_ms", ASCENDING)])
        if self.references:
            self.events.create_index([("refs", ASCENDING)])
            for key in self.references:  # documents from before commits carry them in `data`
                self.events.create_index([(f"data.{key}", ASCENDING)])

    def append(
        self,
        stream_id: str,
        aggregate_type: str,
        expected_version: int,
        events: Sequence[NewEvent],
        meta: Metadata,
    ) -> list[RecordedEvent]:
        """Store `events` as one commit, versions expected_version+1.., or raise ConcurrencyError.

        Returns the events as stored, personal fields sealed: what the publisher sends.
        """
        recorded = self._seal(self._record(stream_id, aggregate_type, expected_version, events, meta))
        if not recorded:
            return []
        if self._commits.insert([_commit_document(recorded, self.references)]):
            raise ConcurrencyError(stream_id, expected_version)
        self._count(recorded)
        return recorded

    def start_streams(
        self, streams: Sequence[tuple[str, str, Sequence[NewEvent]]], meta: Metadata
    ) -> tuple[list[RecordedEvent], set[str]]:
        """Begin many new streams in one bulk insert (imports); returns what was stored and
        the ids of streams that already existed (left untouched, e.g. a resumed batch)."""
        return self.append_streams(
            [StreamAppend(stream_id, kind, 0, events, meta) for stream_id, kind, events in streams]
        )

    def append_streams(self, appends: Sequence[StreamAppend]) -> tuple[list[RecordedEvent], set[str]]:
        """Append to many streams in one bulk insert (a worker's batch of decisions), a commit
        each at its expected version. Returns what was stored and the ids of the streams that
        had moved on: a concurrent writer won there, and nothing of their commit is stored.
        """
        decided = [
            commit
            for append in appends
            if (
                commit := self._record(
                    append.stream_id, append.aggregate_type, append.expected_version, append.events, append.meta
                )
            )
        ]
        if not decided:
            return [], set()
        sealed = iter(self._seal([event for commit in decided for event in commit]))
        commits = [[next(sealed) for _ in commit] for commit in decided]
        duplicates = self._commits.insert([_commit_document(commit, self.references) for commit in commits])
        taken = {commits[index][0].stream_id for index in duplicates}
        stored = [event for index, commit in enumerate(commits) if index not in duplicates for event in commit]
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
                commit=expected_version + 1,
            )
            for offset, event in enumerate(events, start=1)
        ]

    def _count(self, recorded: Sequence[RecordedEvent]) -> None:
        for event in recorded:
            metrics.EVENTS_APPENDED.labels(self.service, event.type).inc()

    def load(self, stream_id: str, *, after_version: int = 0, as_of: datetime | None = None) -> list[RecordedEvent]:
        """The stream's events in version order, optionally only those recorded by `as_of`."""
        first = self._commit_holding(stream_id, after_version + 1) if after_version else 1
        docs = self._stream_commits([stream_id], first)
        if as_of is not None:
            cutoff = epoch_ms(as_of)
            docs = [doc for doc in docs if doc["time_ms"] <= cutoff]
        return [event for event in self._read(docs) if event.version > after_version]

    def load_many(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        """Several streams with one query per round of versions (batch lookups never loop over streams)."""
        streams: dict[str, list[RecordedEvent]] = {}
        for event in self._read(self._stream_commits(list(dict.fromkeys(stream_ids)), 1)):
            streams.setdefault(event.stream_id, []).append(event)
        return streams

    def _commit_holding(self, stream_id: str, version: int) -> int:
        """The first version of the commit that holds `version` (or `version` if none does):
        the newest commit key at or below it, looked up by primary key in windows walking
        down (16 versions, then 64, ...); a range query on `_id` scans the whole collection
        on nx-27017 (tests/compat)."""
        top, size = version, 16
        while top >= 1:
            keys = [stream_key(stream_id, v) for v in range(top, max(0, top - size), -1)]
            found: list[int] = [doc["version"] for doc in self.events.find({"_id": {"$in": keys}}, {"version": 1})]
            if found:
                return max(found)
            top, size = top - size, size * 4
        return version

    def _stream_commits(self, stream_ids: list[str], first: int) -> list[dict[str, Any]]:
        """The commits of the streams from the one beginning at version `first`, in order.

        A commit's key is "<stream>:<first version>", so a stream is read with `_id $in`
        over the keys its next commits may have: 16 versions at first (4 each when many
        streams are read at once, which are mostly short), more while the chain of commits
        (each beginning right after the previous one's last version) runs past the window.
        That is an index lookup on any MongoDB; nx-27017, which ignores secondary indexes
        and scans a whole collection on `{stream_id: ...}` (tests/compat), answers it in
        about a millisecond however large the store is.
        """
        found: list[dict[str, Any]] = []
        pending, size = dict.fromkeys(stream_ids, first), 16 if len(stream_ids) == 1 else 4
        while pending:
            keys = [stream_key(stream, v) for stream, start in pending.items() for v in range(start, start + size)]
            by_key = {doc["_id"]: doc for doc in self.events.find({"_id": {"$in": keys}})}
            for stream, start in list(pending.items()):
                upto = _chain(stream, start, by_key, found)
                if upto < start + size:  # the key the chain needs next was in the window, and is not stored
                    del pending[stream]
                else:
                    pending[stream] = upto
            size = min(size * 4, 1024)
        return found

    def streams_referring(self, ids: Sequence[str], aggregate_types: Sequence[str]) -> set[tuple[str, str]]:
        """(stream, aggregate type) of the streams of these types with an event whose data
        names one of `ids` under a `references` key: a person's records at erasure or merge,
        found in the store, so a record no read model has folded yet is found too."""
        if not ids or not self.references:
            return set()
        wanted = sorted(set(ids))
        query = {
            "aggregate_type": {"$in": list(aggregate_types)},
            "$or": [{"refs": {"$in": wanted}}, *({f"data.{key}": {"$in": wanted}} for key in self.references)],
        }
        return {
            (doc["stream_id"], doc["aggregate_type"])
            for doc in self.events.find(query, {"stream_id": 1, "aggregate_type": 1})
        }

    def scan(self, batch_size: int = 1000, *, sealed: bool = False) -> Iterator[list[RecordedEvent]]:
        """Every event, per stream in version order, in batches of whole commits: opened for
        rebuilds, `sealed` (exactly as stored) for replays to Kafka."""
        cursor = self.events.find({}).sort("_id", ASCENDING)  # "<stream>:<version>": per stream in order
        for batch in self._batches(cursor.batch_size(batch_size), batch_size):
            yield batch if sealed else self.open(batch)

    def unpublished(
        self, *, stream_id: str | None = None, before: datetime | None = None, limit: int = 1000
    ) -> list[RecordedEvent]:
        """Events of commits Kafka has not acknowledged yet, per stream in version order;
        `limit` counts commits.

        `before` keeps those recorded at or before that moment, so "at least N seconds
        old" includes an event exactly N old (with N = 0: everything, this millisecond too).
        """
        query: dict[str, Any] = {"published": False}
        if stream_id is not None:
            query["stream_id"] = stream_id
        if before is not None:
            query["time_ms"] = {"$lte": epoch_ms(before)}
        cursor = self.events.find(query).sort([("stream_id", ASCENDING), ("version", ASCENDING)])
        return [event for doc in cursor.limit(limit) for event in _from_document(doc, self.service)]

    def unsent_through(self, newest: Mapping[str, int]) -> list[RecordedEvent]:
        """What must reach Kafka for each stream to stand on the topic up to version
        `newest[stream]`: its unpublished commits from the one holding that version down to
        its newest published one, per stream in version order, whatever their age.

        The walk may stop at a published commit because the publisher sends a commit only
        after every earlier unpublished one of its stream (crmkit.publisher): an earlier
        copy of each is on the topic before it. Read by primary key in growing windows
        (4 versions, then 16, ...), like `_stream_commits`; usually one short query.
        """
        found: dict[str, list[dict[str, Any]]] = {}
        pending, size = {stream: top for stream, top in newest.items() if top >= 1}, 4
        while pending:
            keys = [
                stream_key(stream, v) for stream, top in pending.items() for v in range(top, max(0, top - size), -1)
            ]
            by_key = {doc["_id"]: doc for doc in self.events.find({"_id": {"$in": keys}})}
            for stream, top in list(pending.items()):
                lowest = max(1, top - size + 1)
                below = _unsent_run(stream, top, lowest, by_key, found.setdefault(stream, []))
                if below is None:
                    del pending[stream]
                else:
                    pending[stream] = below
            size = min(size * 4, 1024)
        return [
            event for docs in found.values() for doc in reversed(docs) for event in _from_document(doc, self.service)
        ]

    def mark_published(self, events: Sequence[RecordedEvent]) -> None:
        """Record that Kafka holds these events; the caller passes whole commits."""
        keys = {stream_key(event.stream_id, event.commit or event.version) for event in events}
        if keys:
            self.events.update_many({"_id": {"$in": sorted(keys)}}, {"$set": {"published": True}})

    def count(self) -> int:
        """How many events are stored (commits hold several; a one-event document counts once)."""
        grouped = list(self.events.aggregate([{"$group": {"_id": None, "events": {"$sum": "$count"}}}]))
        in_commits = grouped[0]["events"] if grouped else 0
        return in_commits + self.events.count_documents({"count": {"$exists": False}})

    def open(self, events: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """Stored (or consumed) events as domain code reads them: personal fields
        decrypted (None once erased), old shapes upcast."""
        own = [e for e in events if e.service == self.service]
        if self.personal is not None and own:
            opened = {e.id: e for e in self.personal.open(own)}
            events = [opened.get(e.id, e) for e in events]
        return self.upcasters.upcast_all(events)

    def _read(self, docs: Sequence[dict[str, Any]]) -> list[RecordedEvent]:
        return self.open([event for doc in docs for event in _from_document(doc, self.service)])

    def _seal(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        if self.catalogue is not None and strict():
            self.catalogue.check(events)  # an undocumented or malformed event is a bug: refuse it
        return self.personal.seal(events) if self.personal is not None else events

    def _batches(self, cursor: Any, size: int) -> Iterator[list[RecordedEvent]]:
        """Events in batches of about `size`, never splitting a commit (the publisher acks whole ones)."""
        batch: list[RecordedEvent] = []
        for doc in cursor:
            batch += _from_document(doc, self.service)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch


def _chain(stream_id: str, start: int, by_key: Mapping[str, dict[str, Any]], found: list[dict[str, Any]]) -> int:
    """Follow the stream's commits from the one beginning at `start` through `by_key`,
    appending each to `found`; returns the version the next commit would begin at."""
    while (doc := by_key.get(stream_key(stream_id, start))) is not None:
        found.append(doc)
        start = _last_version(doc) + 1
    return start


def _unsent_run(
    stream_id: str, top: int, lowest: int, by_key: Mapping[str, dict[str, Any]], run: list[dict[str, Any]]
) -> int | None:
    """Walk the stream down from the commit holding `top`, adding unpublished commits (newest
    first) to `run`, within the keys `lowest..top` fetched in `by_key`. Returns the version to
    go on from when the window ran out before the walk ended, else None (a published commit,
    or the stream's beginning, was reached)."""
    version = top
    while version >= 1:
        start = next((v for v in range(version, lowest - 1, -1) if stream_key(stream_id, v) in by_key), None)
        if start is None:
            return version if lowest > 1 else None  # the commit holding `version` begins below the window
        doc = by_key[stream_key(stream_id, start)]
        if doc["published"]:
            return None
        run.append(doc)
        version = start - 1
    return None


def stream_key(stream_id: str, version: int) -> str:
    """A commit's primary key: its stream and first version, so the pair is unique by construction."""
    return f"{stream_id}:{version:010d}"


def _commit_document(events: Sequence[RecordedEvent], references: Sequence[str]) -> dict[str, Any]:
    """One decision's events as one document (they share stream, time and causation)."""
    head = events[0]
    return {
        "_id": stream_key(head.stream_id, head.version),
        "stream_id": head.stream_id,
        "aggregate_type": head.aggregate_type,
        "version": head.version,
        "last": events[-1].version,
        "count": len(events),
        "refs": sorted({value for e in events for key in references if isinstance(value := e.data.get(key), str)}),
        "events": [
            {"event_id": e.id, "type": e.type, "schema_version": e.schema_version, "data": e.data} for e in events
        ],
        "time": head.time,
        "time_ms": epoch_ms(head.time),  # what range queries use (see epoch_ms)
        "actor": head.actor,
        "correlation_id": head.correlation_id,
        "causation_id": head.causation_id,
        "published": False,
    }


def _last_version(doc: Mapping[str, Any]) -> int:
    last: int = doc.get("last", doc["version"])  # a document from before commits holds one event
    return last


def _from_document(doc: dict[str, Any], service: str) -> list[RecordedEvent]:
    """The events of a stored commit; a document from before commits is a one-event commit."""
    time = doc["time"].replace(tzinfo=UTC) if doc["time"].tzinfo is None else doc["time"]
    first = doc["version"]
    return [
        RecordedEvent(
            id=event["event_id"],
            service=service,
            stream_id=doc["stream_id"],
            aggregate_type=doc["aggregate_type"],
            version=first + offset,
            type=event["type"],
            schema_version=event["schema_version"],
            data=event["data"],
            time=time,
            actor=doc["actor"],
            correlation_id=doc["correlation_id"],
            causation_id=doc.get("causation_id"),
            commit=first,
        )
        for offset, event in enumerate(doc.get("events") or [doc])
    ]
