"""Projections: read models built from events, one Kafka consumer group each.

A projection receives events in batches, writes its read model with bulk writes, and
only then does the runner commit the offsets, so a crash re-delivers rather than
loses. Applying an event twice must change nothing; `StreamProjection` gets that by
storing the last applied stream version on every document.
Any projection can be dropped and rebuilt from the event store (`crm rebuild`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from pymongo import ReplaceOne
from pymongo.collection import Collection

from crmkit import metrics
from crmkit.aggregate import Aggregate
from crmkit.events import RecordedEvent, utcnow
from crmkit.eventstore import EventStore

log = logging.getLogger(__name__)


class Projection(Protocol):
    """What the runner needs from a read model."""

    name: str
    topics: Sequence[str]

    def handle(self, events: Sequence[RecordedEvent]) -> None:
        """Apply a batch; must be idempotent (events may come again after a crash)."""

    def reset(self) -> None:
        """Drop the read model so it can be rebuilt from the first event."""


class StreamProjection:
    """A read model with one document per stream, folded from that stream's events.

    The document keeps `version`, the last stream version applied, so a repeated or
    stale event is skipped. When an event arrives past a gap (an earlier one is still
    in the outbox), the missing events are read from the event store first, so the
    document never skips a step. Subclasses say which streams they follow and how a
    document changes: `fold(document | None, events) -> document | None`.
    """

    aggregate_types: Sequence[str] = ()

    def __init__(self, name: str, collection: Collection, store: EventStore, topic: str) -> None:
        self.name = name
        self.collection = collection
        self.store = store
        self.topics = [topic]

    def fold(self, document: dict[str, Any] | None, events: Sequence[RecordedEvent]) -> dict[str, Any] | None:
        raise NotImplementedError

    def handle(self, events: Sequence[RecordedEvent]) -> None:
        by_stream: dict[str, list[RecordedEvent]] = defaultdict(list)
        for event in events:
            if event.aggregate_type in self.aggregate_types:
                by_stream[event.stream_id].append(event)
        if not by_stream:
            return
        current = {doc["_id"]: doc for doc in self.collection.find({"_id": {"$in": list(by_stream)}})}
        writes = []
        for stream_id, stream_events in by_stream.items():
            document = current.get(stream_id)
            seen = document["version"] if document else 0
            fresh = self._contiguous(stream_id, seen, stream_events)
            if not fresh:
                continue
            folded = self.fold(document, fresh)
            if folded is not None:
                folded["_id"] = stream_id
                folded["version"] = fresh[-1].version
                writes.append(ReplaceOne({"_id": stream_id}, folded, upsert=True))
        if writes:
            self.collection.bulk_write(writes, ordered=False)

    def _contiguous(self, stream_id: str, seen: int, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """The events after version `seen`, in order and without gaps (filled from the store)."""
        unique = sorted({e.version: e for e in events if e.version > seen}.values(), key=lambda e: e.version)
        if not unique:
            return []
        if unique[0].version != seen + 1 or unique[-1].version - seen != len(unique):
            return self.store.load(stream_id, after_version=seen)
        return unique

    def reset(self) -> None:
        self.collection.delete_many({})


class AggregateView(StreamProjection):
    """One document per aggregate: its `view()`, folded by the aggregate's own `apply`.

    Subclasses name the aggregate class (`kind`) and may add derived keys (search text,
    folded names) in `document`. The aggregate must implement `restore(view)`.
    """

    kind: type[Aggregate]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "kind", None) is not None:
            cls.aggregate_types = (cls.kind.aggregate_type,)

    def document(self, aggregate: Any) -> dict[str, Any]:
        return aggregate.view()

    def fold(self, document: dict[str, Any] | None, events: Sequence[RecordedEvent]) -> dict[str, Any]:
        if document:
            aggregate = self.kind.restore({**document, "id": document["_id"]})
        else:
            aggregate = self.kind(events[0].stream_id)
        aggregate.catch_up(events)
        return self.document(aggregate)


class ProjectorRunner:
    """Feeds one projection from Kafka in its own consumer group, committing after writes."""

    def __init__(
        self,
        service: str,
        projection: Projection,
        bootstrap: str,
        reader: Callable[[list[RecordedEvent]], list[RecordedEvent]],
        *,
        group_prefix: str = "crm",
        max_records: int = 500,
    ) -> None:
        self.service = service
        self.projection = projection
        self.reader = reader  # opens personal fields (own events) and upcasts old shapes
        self.group_id = f"{group_prefix}.{service}.{projection.name}"
        self.consumer = KafkaConsumer(
            *projection.topics,
            bootstrap_servers=bootstrap,
            group_id=self.group_id,
            client_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_records,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )

    def run(self, stop: threading.Event, retry_delay: float = 1.0) -> None:
        """Poll, apply, commit until `stop`; the batch in hand is finished first.

        A batch that fails (the database away, a bug in a fold) is read again after
        `retry_delay` instead of ending the thread, which nothing would restart.
        """
        try:
            while not stop.is_set():
                try:
                    self.poll_once()
                except Exception:
                    log.exception("projection failed; retrying its batch", extra={"projection": self.projection.name})
                    stop.wait(retry_delay)
        finally:
            self.consumer.close()

    def poll_once(self, timeout_ms: int = 500) -> int:
        records = self.consumer.poll(timeout_ms=timeout_ms)
        try:
            events = self.reader(list(self._decode(msg for batch in records.values() for msg in batch)))
            if events:
                self.projection.handle(events)
        except Exception:
            for tp, batch in records.items():  # not applied, not committed: the next poll reads it again
                self.consumer.seek(tp, batch[0].offset)
            raise
        if events:
            metrics.EVENTS_PROJECTED.labels(self.service, self.projection.name).inc(len(events))
            newest = max(event.time for event in events)
            metrics.PROJECTION_LAG.labels(self.service, self.projection.name).set(
                (utcnow() - newest).total_seconds()
            )
        if records:
            self.consumer.commit()
        self._record_lag(records.keys())
        return len(events)

    def _decode(self, messages: Iterable[Any]) -> Iterable[RecordedEvent]:
        for message in messages:
            try:
                yield RecordedEvent.from_bytes(message.value)
            except ValueError:
                metrics.POISON_EVENTS.labels(self.service, self.projection.name).inc()
                log.warning(
                    "skipped a message that is not a CRM event",
                    extra={"topic": message.topic, "partition": message.partition, "offset": message.offset},
                )

    def _record_lag(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            end = self.consumer.highwater(tp)
            if end is not None:
                lag = max(end - self.consumer.position(tp), 0)
                metrics.CONSUMER_LAG.labels(self.service, self.projection.name, tp.topic, tp.partition).set(lag)


def rebuild(
    projection: Projection,
    store: EventStore,
    progress: Callable[[int], None] | None = None,
    *,
    own_topic: str | None = None,
    bootstrap: str | None = None,
) -> int:
    """Drop a projection and apply every event it follows again, in batches.

    The service's own events come from the event store (the source of truth); events of
    other services' topics come from Kafka, read from the beginning to the current end.
    The running worker keeps going meanwhile and skips what the rebuild already applied.
    """
    projection.reset()
    applied = 0
    sources: list[Iterable[list[RecordedEvent]]] = []
    if own_topic is None or own_topic in projection.topics:
        sources.append(store.scan())
    foreign = [topic for topic in projection.topics if topic != own_topic] if own_topic else []
    if foreign:
        if bootstrap is None:
            raise ValueError("rebuilding from other services' topics needs the Kafka bootstrap servers")
        sources.append(store.upcasters.upcast_all(batch) for batch in read_topics(bootstrap, foreign))
    for source in sources:
        for batch in source:
            projection.handle(batch)
            applied += len(batch)
            if progress is not None:
                progress(applied)
    return applied


def read_topics(bootstrap: str, topics: Sequence[str], batch: int = 1000, idle_limit: float = 30.0
                ) -> Iterable[list[RecordedEvent]]:
    """Every event on `topics` from the first offset to the end as it is now, in batches.

    Uses no consumer group (nothing is committed). The end of each partition is the
    high watermark its fetches report; `idle_limit` only guards against a broker that
    stops answering.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             max_poll_records=batch)
    try:
        # a topic nobody has written to yet may not exist: nothing to read there
        partitions = [TopicPartition(topic, p) for topic in topics for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        last_progress = time.monotonic()
        while not caught_up(consumer, partitions):
            records = consumer.poll(timeout_ms=500)
            events = []
            for message in (m for chunk in records.values() for m in chunk):
                try:
                    events.append(RecordedEvent.from_bytes(message.value))
                except ValueError:
                    continue  # not one of ours; the live projector counts these
            if events:
                last_progress = time.monotonic()
                yield events
            elif time.monotonic() - last_progress > idle_limit:
                raise TimeoutError(f"Kafka stopped answering while reading {', '.join(topics)}")
    finally:
        consumer.close()


def caught_up(consumer: KafkaConsumer, partitions: Sequence[TopicPartition]) -> bool:
    """Whether `consumer` has read every partition up to its end (as it stands now)."""
    for tp in partitions:
        end = consumer.highwater(tp)
        if end is None or consumer.position(tp) < end:
            return False
    return True
