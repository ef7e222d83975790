"""Getting stored events onto Kafka: right after the append, by the sweeper, and on replay.

Kafka is told only what the event store already holds, so a crash at any point loses
nothing: whatever was not acknowledged stays `published: false` and the sweeper sends
it again. Per stream, events go out in version order (key = aggregate id, one
partition, idempotent producer with acks=all); a send that finds older unpublished
events of the same stream sends those first. Consumers dedupe, so a resend is harmless.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from datetime import timedelta

from kafka import KafkaProducer

from crmkit import metrics
from crmkit.events import RecordedEvent, utcnow
from crmkit.eventstore import EventStore

log = logging.getLogger(__name__)


def make_producer(bootstrap: str, client_id: str) -> KafkaProducer:
    """A producer with the delivery guarantees the outbox relies on."""
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        retries=5,
        max_in_flight_requests_per_connection=5,
        request_timeout_ms=10_000,
        max_block_ms=10_000,
    )


class _AckRecorder:
    """Marks acknowledged events as published in batches, off Kafka's I/O thread."""

    def __init__(self, store: EventStore, interval: float = 0.05) -> None:
        self._store = store
        self._pending: list[RecordedEvent] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._interval = interval
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="outbox-acks", daemon=True)
        self._thread.start()

    def add(self, event: RecordedEvent) -> None:
        with self._lock:
            self._pending.append(event)

    def flush(self) -> None:
        with self._lock:
            acknowledged, self._pending = self._pending, []
        if acknowledged:
            self._store.mark_published(acknowledged)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)
        self.flush()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._interval)
            try:
                self.flush()
            except Exception:  # Mongo briefly away: these stay unmarked and the sweeper resends
                log.exception("could not mark events published")


class Publisher:
    """Publishes one service's stored events to its topic."""

    def __init__(self, store: EventStore, producer: KafkaProducer, topic: str) -> None:
        self.store = store
        self.producer = producer
        self.topic = topic
        self._acks = _AckRecorder(store)

    def publish(self, events: Sequence[RecordedEvent], orphan_age: float = 2.0) -> None:
        """Send freshly appended events without waiting.

        Older events of the same stream still unpublished after `orphan_age` seconds were
        orphaned (their process died, or Kafka was away): they go first, so the topic
        keeps the stream's order. Younger ones are most likely in flight from another
        process and are left alone rather than duplicated.
        """
        if not events:
            return
        first = events[0]
        if first.version > 1:
            cutoff = utcnow() - timedelta(seconds=orphan_age)
            orphans = self.store.unpublished(stream_id=first.stream_id, before=cutoff)
            events = [*(e for e in orphans if e.version < first.version), *events]
        self._send(events, path="inline")

    def sweep(self, limit: int = 1000, min_age: float = 2.0) -> int:
        """Re-send what is still unpublished (after a crash or a Kafka outage); returns how many.

        Events younger than `min_age` seconds are left to the inline publisher, whose
        acknowledgement is probably on its way; sending them too would only duplicate.
        """
        pending = self.store.unpublished(limit=limit, before=utcnow() - timedelta(seconds=min_age))
        metrics.UNPUBLISHED.labels(self.store.service).set(len(pending))
        if pending:
            self._send(pending, path="sweeper")
            self.flush()
            log.info("sweeper re-sent events", extra={"count": len(pending)})
        return len(pending)

    def replay(self, batches: Iterable[Sequence[RecordedEvent]] | None = None) -> int:
        """Send every stored event again, e.g. to a fresh broker (`crm replay`)."""
        sent = 0
        for batch in batches if batches is not None else self.store.scan(sealed=True):
            self._send(batch, path="replay")
            sent += len(batch)
        self.flush()
        return sent

    def flush(self, timeout: float = 30) -> None:
        self.producer.flush(timeout=timeout)
        self._acks.flush()

    def close(self) -> None:
        """Finish in-flight sends and record their acknowledgements (graceful shutdown)."""
        try:
            self.producer.flush(timeout=10)
        finally:
            self._acks.close()
            self.producer.close(timeout=5)

    def _send(self, events: Sequence[RecordedEvent], path: str) -> None:
        for event in events:
            future = self.producer.send(self.topic, key=event.stream_id.encode(), value=event.to_bytes())
            future.add_callback(self._on_ack, event, path)
            future.add_errback(self._on_error, event)

    def _on_ack(self, event: RecordedEvent, path: str, _metadata: object) -> None:
        self._acks.add(event)
        service = self.store.service
        metrics.EVENTS_PUBLISHED.labels(service, path).inc()
        metrics.PUBLISH_LAG.labels(service, path).observe((utcnow() - event.time).total_seconds())

    def _on_error(self, event: RecordedEvent, exc: BaseException) -> None:
        metrics.PUBLISH_FAILURES.labels(self.store.service).inc()
        log.warning("publish failed; the sweeper will retry", extra={"event_id": event.id, "error": repr(exc)})


def run_sweeper(publisher: Publisher, stop: threading.Event, interval: float = 1.0, limit: int = 1000) -> None:
    """Sweep until `stop` is set; the worker runs this in a thread."""
    while not stop.is_set():
        try:
            while publisher.sweep(limit) == limit and not stop.is_set():
                pass  # a full batch: there may be more right behind it
        except Exception:
            log.exception("sweep failed; retrying")
        stop.wait(interval)
