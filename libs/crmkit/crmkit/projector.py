"""Projections: read models built from events, one Kafka consumer group each.

A projection receives events in batches, writes its read model with bulk writes, and
only then does the runner commit the offsets, so a crash re-delivers rather than
loses. Applying an event twice must change nothing; `StreamProjection` gets that by
storing the last applied stream version on every document.
Any projection can be dropped and rebuilt from the event store (`crm rebuild`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from pymongo import InsertOne, ReplaceOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from crmkit import metrics
from crmkit.aggregate import Aggregate
from crmkit.config import ProjectionPolicy, kafka_client_options, topic_owner
from crmkit.deadletters import DeadLetters, Delivery, NotACrmEvent, describe, is_transient
from crmkit.events import RecordedEvent, rfc3339, utcnow
from crmkit.eventstore import EventStore
from crmkit.groupcommit import DUPLICATE_KEY

log = logging.getLogger(__name__)

STATUS_COLLECTION = "projection_status"
HEARTBEAT_SECONDS = 5.0


class Projection(Protocol):
    """What the runner needs from a read model."""

    name: str

    @property
    def topics(self) -> Sequence[str]:
        """The topics it follows (read-only here, so a tuple or a list of them both do)."""

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

    def __init__(self, name: str, collection: Collection[dict[str, Any]], store: EventStore, topic: str) -> None:
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
        writes: list[InsertOne[dict[str, Any]] | ReplaceOne[dict[str, Any]]] = []
        streams: list[str] = []  # whose document each write is
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
                # a new document is inserted: cheaper than an upsert, most of all in a rebuild
                writes.append(
                    InsertOne(folded) if document is None else ReplaceOne({"_id": stream_id}, folded, upsert=True)
                )
                streams.append(stream_id)
        if writes:
            self._write(writes, streams, by_stream)

    def _write(
        self,
        writes: list[InsertOne[dict[str, Any]] | ReplaceOne[dict[str, Any]]],
        streams: list[str],
        by_stream: dict[str, list[RecordedEvent]],
    ) -> None:
        """One unordered bulk write; a document another writer created meanwhile (the live
        projector beside a rebuild) makes its stream's insert fail, and its events are folded
        again onto that document."""
        try:
            self.collection.bulk_write(writes, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(error.get("code") != DUPLICATE_KEY for error in errors):
                raise
            self.handle([event for error in errors for event in by_stream[streams[error["index"]]]])

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
        view: dict[str, Any] = aggregate.view()
        return view

    def fold(self, document: dict[str, Any] | None, events: Sequence[RecordedEvent]) -> dict[str, Any]:
        if document:
            aggregate = self.kind.restore({**document, "id": document["_id"]})
        else:
            aggregate = self.kind(events[0].stream_id)
        aggregate.catch_up(events)
        return self.document(aggregate)


class Stopping(Exception):
    """The worker is stopping while a batch waits to be retried: leave it for the next start."""


class ProjectorRunner:
    """Feeds one projection from Kafka in its own consumer group, committing after writes.

    The healthy path is one bulk `handle` per polled batch. When a batch fails:

    - an outage (`deadletters.is_transient`: MongoDB or another service away) parks
      nothing: the batch is read again, with back-off, for as long as the outage lasts;
    - anything else means some event in it cannot be applied: the batch is split and its
      events are applied one at a time, so every innocent one is applied as before and
      only an event that fails on its own is retried (`policy.attempts`, backing off) and
      then parked in the service's `deadletters`.

    Records that are not CRM events, or not events of the service that owns their topic,
    are parked on sight, never applied. Either way the projection commits past them and
    moves on. Its lag, last advance and state are kept in `progress` (metrics, /readyz).
    """

    def __init__(
        self,
        service: str,
        projection: Projection,
        bootstrap: str,
        reader: Callable[[list[RecordedEvent]], list[RecordedEvent]],
        *,
        db: Database[dict[str, Any]],
        group_prefix: str = "crm",
        max_records: int = 500,
        policy: ProjectionPolicy | None = None,
    ) -> None:
        self.service = service
        self.projection = projection
        self.reader = reader  # opens personal fields (own events) and upcasts old shapes
        self.policy = policy or ProjectionPolicy.from_env()
        self.deadletters = DeadLetters.of(db)
        self.deadletters.ensure_indexes()
        self.progress = Progress(
            service, projection.name, db[STATUS_COLLECTION], self.deadletters, self.policy.stall_seconds
        )
        self.owners = {topic: topic_owner(topic) for topic in projection.topics}
        self._stop = threading.Event()
        self.group_id = f"{group_prefix}.{service}.{projection.name}"
        self.consumer = KafkaConsumer(
            *projection.topics,
            bootstrap_servers=bootstrap,
            group_id=self.group_id,
            client_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_records,
            fetch_max_wait_ms=self.policy.fetch_wait_ms,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            **kafka_client_options(),
        )

    def run(self, stop: threading.Event) -> None:
        """Poll, apply, commit until `stop`; the batch in hand is finished first.

        A batch that fails as a whole (an outage) is read again after a back-off that
        doubles up to `policy.max_delay`, instead of ending the thread, which nothing
        would restart.
        """
        self._stop = stop
        failures = 0
        try:
            while not stop.is_set():
                try:
                    self.poll_once()
                    failures = 0
                except Stopping:
                    break
                except Exception as exc:
                    failures += 1
                    delay = self.policy.delay(failures)
                    log.warning(
                        "projection failed; retrying its batch",
                        exc_info=not is_transient(exc),
                        extra={"projection": self.projection.name, "error": exc.__class__.__name__, "retry_in": delay},
                    )
                    stop.wait(delay)
        finally:
            self.consumer.close()

    def poll_once(self, timeout_ms: int = 500) -> int:
        """Read one batch, apply it (parking what cannot be applied), commit; the number of events applied."""
        records = self.consumer.poll(timeout_ms=timeout_ms)
        deliveries = [
            Delivery.receive(
                message.topic, message.partition, message.offset, message.value, self.owners.get(message.topic)
            )
            for batch in records.values()
            for message in batch
        ]
        try:
            applied = self._apply(deliveries)
            if records:
                self.consumer.commit()
        except BaseException as exc:
            for tp, batch in records.items():  # not committed: the next poll reads it again
                self.consumer.seek(tp, batch[0].offset)
            self._observe(advanced=False, failure=exc)
            raise
        self._observe(advanced=bool(records))
        return applied

    def _apply(self, deliveries: list[Delivery]) -> int:
        for refused in deliveries:
            if refused.refusal is None:
                continue
            if isinstance(refused.refusal, NotACrmEvent):
                metrics.POISON_EVENTS.labels(self.service, self.projection.name).inc()
            self._park(refused, refused.refusal, attempts=1, first_failed=utcnow())
        accepted = [d for d in deliveries if d.refusal is None]
        if not accepted:
            return 0
        try:
            events = self.reader([d.event for d in accepted if d.event is not None])
            if events:
                self.projection.handle(events)
        except Exception as exc:
            if is_transient(exc):
                raise
            self._count_failure("event")
            log.warning(
                "a batch failed; applying its events one at a time",
                extra={"projection": self.projection.name, "error": exc.__class__.__name__, "count": len(accepted)},
            )
            return self._isolate(accepted)
        self._count_applied(events)
        return len(events)

    def _isolate(self, deliveries: list[Delivery]) -> int:
        """Apply a failed batch's events one by one, in the order read; park those that fail alone."""
        already = self.deadletters.parked(self.projection.name, deliveries)  # a redelivery after a crash
        return sum(self._apply_alone(d) for d in deliveries if d.key(self.projection.name) not in already)

    def _apply_alone(self, delivery: Delivery) -> bool:
        """Try one event `policy.attempts` times, backing off; park it after the last failure."""
        assert delivery.event is not None
        first_failed = utcnow()
        for attempt in range(1, self.policy.attempts + 1):
            event = delivery.event
            try:
                events = self.reader([event])
                event = events[0] if events else event
                if events:
                    self.projection.handle(events)
                self._count_applied(events)
                return True
            except Exception as exc:
                if is_transient(exc):
                    raise
                self._count_failure("event")
                if attempt == self.policy.attempts:
                    self._park(delivery, exc, attempts=attempt, first_failed=first_failed, opened=event)
                    return False
                metrics.PROJECTION_RETRIES.labels(self.service, self.projection.name).inc()
                if self._stop.wait(self.policy.delay(attempt)):
                    raise Stopping from exc
        return False

    def _park(
        self,
        delivery: Delivery,
        error: BaseException,
        *,
        attempts: int,
        first_failed: datetime,
        opened: RecordedEvent | None = None,
    ) -> None:
        described = describe(error, opened or delivery.event)
        if self.deadletters.park(self.projection.name, delivery, described, attempts, first_failed):
            metrics.EVENTS_PARKED.labels(self.service, self.projection.name).inc()
        log.error(
            "parked a record the projection cannot apply",
            extra={
                "projection": self.projection.name,
                "topic": delivery.topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
                "event_id": delivery.event.id if delivery.event else None,
                "error": described["class"],
                "attempts": attempts,
            },
        )

    def _count_applied(self, events: Sequence[RecordedEvent]) -> None:
        if events:
            metrics.EVENTS_PROJECTED.labels(self.service, self.projection.name).inc(len(events))
            newest = max(event.time for event in events)
            metrics.PROJECTION_LAG.labels(self.service, self.projection.name).set((utcnow() - newest).total_seconds())

    def _count_failure(self, kind: str) -> None:
        metrics.PROJECTION_FAILURES.labels(self.service, self.projection.name, kind).inc()

    def _observe(self, *, advanced: bool, failure: BaseException | None = None) -> None:
        """Record the lag (committed or not, from where the consumer stands) and report progress."""
        if failure is not None and not isinstance(failure, Stopping):
            self._count_failure("outage" if is_transient(failure) else "other")
        lag = 0
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            if end is not None and (position := self.consumer.position(tp)) is not None:  # known once fetched
                behind = max(end - position, 0)
                metrics.CONSUMER_LAG.labels(self.service, self.projection.name, tp.topic, tp.partition).set(behind)
                lag += behind
        self.progress.update(lag=lag, advanced=advanced, failure=failure)


class Progress:
    """Where a projection stands: lag, last advance, the failure it is retrying, if any.

    The worker's /readyz reads it in memory; a heartbeat copies it into the service's
    `projection_status` collection (at most every HEARTBEAT_SECONDS), where the api's
    /readyz reads it. Both judge it with `projection_state`.
    """

    def __init__(
        self,
        service: str,
        name: str,
        status: Collection[dict[str, Any]],
        deadletters: DeadLetters,
        stall_seconds: float,
    ) -> None:
        self.service = service
        self.name = name
        self.status = status
        self.deadletters = deadletters
        self.stall_seconds = stall_seconds
        self.lag = 0
        self.failing: str | None = None
        self.last_advance = utcnow()
        self._last_beat = -HEARTBEAT_SECONDS

    def update(self, *, lag: int, advanced: bool, failure: BaseException | None) -> None:
        self.lag = lag
        self.failing = failure.__class__.__name__ if failure is not None else None
        if advanced or lag == 0:
            self.last_advance = utcnow()
        metrics.PROJECTION_STALLED.labels(self.service, self.name).set(int(self.report()["state"] == "degraded"))
        if time.monotonic() - self._last_beat >= HEARTBEAT_SECONDS:
            self.heartbeat()

    def report(self) -> dict[str, Any]:
        return projection_state(self.document(), self.stall_seconds, utcnow())

    def document(self) -> dict[str, Any]:
        return {
            "_id": self.name,
            "lag": self.lag,
            "last_advance": self.last_advance,
            "failing": self.failing,
            "heartbeat": utcnow(),
        }

    def heartbeat(self) -> None:
        """Copy the state to MongoDB, with the count of parked records; an outage only skips a beat."""
        self._last_beat = time.monotonic()
        try:
            parked = self.deadletters.count(self.name)
            self.status.replace_one({"_id": self.name}, {**self.document(), "parked": parked}, upsert=True)
        except PyMongoError as exc:
            log.debug("projection heartbeat skipped", extra={"projection": self.name, "error": repr(exc)})
            return
        metrics.DEADLETTERS.labels(self.service, self.name).set(parked)


def projection_state(document: dict[str, Any], stall_seconds: float, now: datetime) -> dict[str, Any]:
    """How a projection is doing, from its status document: `degraded` when it is behind
    its topic (lag > 0) and has not advanced for `stall_seconds`; else `retrying` while a
    batch fails, else `ok`."""
    still = (now - document["last_advance"]).total_seconds()
    state = "ok"
    if document.get("failing"):
        state = "retrying"
    if document["lag"] > 0 and still > stall_seconds:
        state = "degraded"
    return {
        "name": document["_id"],
        "state": state,
        "lag": document["lag"],
        "last_advance": rfc3339(document["last_advance"]),
        "failing": document.get("failing"),
        "parked": document.get("parked", 0),
    }


def projection_states(db: Database[dict[str, Any]], stall_seconds: float) -> list[dict[str, Any]]:
    """Every projection of the service, as its worker last reported it (the api's /readyz)."""
    now = utcnow()
    return [projection_state(doc, stall_seconds, now) for doc in db[STATUS_COLLECTION].find().sort("_id", 1)]


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
    reindex = _bulk_load(projection)
    applied = 0
    sources: list[Iterable[list[RecordedEvent]]] = []
    if own_topic is None or own_topic in projection.topics:
        sources.append(store.scan())
    foreign = [topic for topic in projection.topics if topic != own_topic] if own_topic else []
    if foreign:
        if bootstrap is None:
            raise ValueError("rebuilding from other services' topics needs the Kafka bootstrap servers")
        sources.append(store.upcasters.upcast_all(batch) for batch in read_topics(bootstrap, foreign))
    try:
        for source in sources:
            for batch in _read_ahead(source):
                projection.handle(batch)
                applied += len(batch)
                if progress is not None:
                    progress(applied)
    finally:
        reindex()
    return applied


def _read_ahead(batches: Iterable[list[RecordedEvent]], depth: int = 2) -> Iterator[list[RecordedEvent]]:
    """The batches of `batches`, read (and opened) by a thread up to `depth` ahead of the caller,
    so a rebuild reads the next batch while it writes this one: both wait mostly on the server,
    and in turn they took a third longer than overlapped (bench/README.md)."""
    ahead: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> None:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                put(("batch", batch))
            put(("end", None))
        except BaseException as exc:  # handed to the caller's thread, raised there
            put(("error", exc))

    reader = threading.Thread(target=read, name="rebuild-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            kind, item = ahead.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        reader.join(timeout=5)


def _bulk_load(projection: Projection) -> Callable[[], None]:
    """Drop an emptied read model's secondary indexes for the rebuild and return what builds
    them again: one index build after the load costs a fraction of keeping eleven indexes
    (the contacts list) current through every write (bench/README.md). Lists served during
    a rebuild are incomplete anyway; their queries scan until the indexes are back."""
    collection = getattr(projection, "collection", None)
    ensure_indexes: Callable[[], None] | None = getattr(projection, "ensure_indexes", None)
    if not isinstance(collection, Collection) or ensure_indexes is None:
        return lambda: None
    collection.drop_indexes()
    return ensure_indexes


def read_topics(
    bootstrap: str, topics: Sequence[str], batch: int = 1000, idle_limit: float = 30.0
) -> Iterable[list[RecordedEvent]]:
    """Every event on `topics` from the first offset to the end as it is now, in batches.

    Uses no consumer group (nothing is committed). The end of each partition is the
    high watermark its fetches report; `idle_limit` only guards against a broker that
    stops answering.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        max_poll_records=batch,
        **kafka_client_options(),
    )
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
        if end is None or (position := consumer.position(tp)) is None or position < end:
            return False
    return True
