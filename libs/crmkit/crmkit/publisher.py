"""Getting stored events onto Kafka: right after the append, by the sweeper, and on replay.

Kafka is told only what the event store already holds, so a crash at any point loses
nothing: whatever was not acknowledged stays `published: false` and the sweeper sends
it again. Consumers dedupe, so a resend is harmless; an event out of its stream's order
is not (a consumer of another service's topic cannot fill the gap from our store).

Per stream order. Events are keyed by their aggregate id, so a stream lives on one
partition, and one producer (idempotent, acks=all, at most 5 requests in flight) keeps
the order it was given within a partition. Different producers, i.e. api, gRPC and
worker processes, have no order between them. So the rule is: an event is sent only
after every earlier event of its stream, by the same producer, unless that earlier one
is already acknowledged (`published`). Sending v2 therefore sends, first and whatever
their age, every earlier event of the stream that is still unpublished (down to the
newest published one, `EventStore.unsent_through`), except those this producer already
has in flight, which it handed over before. Take process A that appended v1 and is
about to send it, and process B that appends v2: B sends v1 then v2; A's copy of v1
lands before, between or after them. The topic may hold v1 twice (consumers dedupe),
but never v2 before v1's first copy. The alternative, B leaving v2 to the sweeper while
v1 is unpublished, keeps the order too but makes v2 wait a sweep (seconds); sending the
earlier events along costs at most a duplicate, only when two processes write one
stream within the moment an acknowledgement takes, and adds no wait.

By induction an acknowledged event has an earlier copy of every earlier version in
front of it, which is why the walk down a stream may stop at the first published one.
The sweeper follows the same rule: it picks old unpublished events (those younger than
`min_age` are most likely on their way from their own process), then sends with each
stream's picks everything unsent below them, young or not (a writer with a clock behind
can leave a younger-looking earlier version); its `limit` cuts the last stream's run
after some version, never before, so a later version never leaves before an earlier one.
What one producer cannot promise: if Kafka gives up on v1 (delivery timeout) but takes
v2 sent right behind it, v2 is ahead; the sweeper then sends v1 late, which is why the
projections of other services' streams also accept a late event (docs/architecture.md).

A producer that failed is replaced. An idempotent producer keeps a producer id and
sequence numbers the broker issued; a broker that comes back empty (a new cluster
behind the same address, or Tansu restarted) knows neither, the producer's attempt to
recover turns fatal, and from then on it fails every send. So after a failed send the
next batch goes through a new producer (at most once per RENEW_INTERVAL, so an outage
does not churn connections); what the old one held stays unpublished for the sweeper.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from crmkit import metrics
from crmkit.config import kafka_client_options
from crmkit.events import RecordedEvent, utcnow
from crmkit.eventstore import EventStore

log = logging.getLogger(__name__)

RENEW_INTERVAL = 5.0  # seconds between two replacements of a failed producer
STUCK_AFTER = 15.0  # seconds without an answer to a send (the producer's request timeout is 10)
SWEEP_FLUSH_TIMEOUT = 15.0  # how long the sweeper waits for its sends before it calls the producer failed


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
        **kafka_client_options(),
    )


class _AckRecorder:
    """Marks acknowledged events as published in batches, off Kafka's I/O thread, then
    lets the publisher forget them (`recorded`)."""

    def __init__(
        self, store: EventStore, recorded: Callable[[Sequence[_Commit]], None], interval: float = 0.05
    ) -> None:
        self._store = store
        self._recorded = recorded
        self._pending: list[_Commit] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._interval = interval
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="outbox-acks", daemon=True)
        self._thread.start()

    def add(self, commit: _Commit) -> None:
        with self._lock:
            self._pending.append(commit)

    def flush(self) -> None:
        with self._lock:
            acknowledged, self._pending = self._pending, []
        if acknowledged:
            try:
                self._store.mark_published([event for commit in acknowledged for event in commit.events])
            finally:  # marked, or left to be sent again: either way no longer in flight
                self._recorded(acknowledged)

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
    """Publishes one service's stored events to its topic, each stream in version order."""

    def __init__(
        self, store: EventStore, producer: KafkaProducer, topic: str, renew: Callable[[], KafkaProducer] | None = None
    ) -> None:
        self.store = store
        self.producer = producer
        self.topic = topic
        self._renew = renew  # makes a new producer when this one has failed
        self._generation = 0  # which producer a callback belongs to
        self._failed = False
        self._renewed_at = float("-inf")
        self._acks = _AckRecorder(store, self._forget)
        self._in_flight: dict[tuple[str, int], float] = {}  # commits handed to the producer, unacknowledged: since when
        self._in_flight_lock = threading.Lock()
        self._sending = threading.Lock()  # one batch at a time: what is in flight went to the producer before

    def publish(self, events: Sequence[RecordedEvent]) -> None:
        """Send freshly appended events without waiting, each stream's unsent earlier events first."""
        if events:
            below = {stream: version - 1 for stream, version in _edge(events, min).items() if version > 1}
            self._send([*self.store.unsent_through(below), *events], path="inline")

    def sweep(self, limit: int = 1000, min_age: float = 2.0) -> int:
        """Re-send what is still unpublished (after a crash or a Kafka outage); returns how many were picked.

        Events younger than `min_age` seconds are left to the inline publisher, whose
        acknowledgement is probably on its way, unless an older pick of their stream
        comes after them (then they go first).
        """
        picked = self.store.unpublished(limit=limit, before=utcnow() - timedelta(seconds=min_age))
        metrics.UNPUBLISHED.labels(self.store.service).set(len(picked))
        if picked:
            earlier = self.store.unsent_through(_edge(picked, max))
            self._send(
                sorted({e.id: e for e in [*earlier, *picked]}.values(), key=lambda e: (e.stream_id, e.version)),
                path="sweeper",
            )
            self._flush_or_give_up()
            log.info("sweeper re-sent events", extra={"count": len(picked)})
        return len(picked)

    def replay(self, batches: Iterable[Sequence[RecordedEvent]] | None = None) -> int:
        """Send every stored event again, e.g. to a fresh broker (`crm replay`)."""
        sent = 0
        for batch in batches if batches is not None else self.store.scan(sealed=True):
            self._send(batch, path="replay")
            sent += len(batch)
        self.flush()
        return sent

    def flush(self, timeout: float = 30) -> None:
        """Wait until what was sent is acknowledged and recorded; KafkaTimeoutError past `timeout`
        (and the producer, which did not answer, is replaced at the next send)."""
        try:
            self.producer.flush(timeout=timeout)
        except KafkaTimeoutError:
            with self._in_flight_lock:
                self._failed = True
            raise
        finally:
            self._acks.flush()

    def _flush_or_give_up(self) -> None:
        """Wait for the sweep's sends; what is not acknowledged in time is left for the next sweep."""
        try:
            self.flush(timeout=SWEEP_FLUSH_TIMEOUT)
        except KafkaTimeoutError:
            log.warning("Kafka did not acknowledge the sweep in time; the producer will be replaced")

    def close(self) -> None:
        """Finish in-flight sends and record their acknowledgements (graceful shutdown)."""
        try:
            self.producer.flush(timeout=10)
        except KafkaTimeoutError:  # Kafka did not answer in time: what it held stays unpublished for the sweeper
            log.warning("Kafka did not acknowledge every send before shutdown; the sweeper sends the rest")
        finally:
            self._acks.close()
            _discard(self.producer)  # a stuck producer's close() would raise instead of closing

    def _send(self, events: Sequence[RecordedEvent], path: str) -> None:
        """Hand `events` to the producer in the order given, less the commits it already holds.

        A commit counts as acknowledged when all of its events are (`_Commit`), and only then
        is it marked published: marking it on a part would lose the rest if that part failed.
        """
        with self._sending:
            self._replace_failed_producer()
            generation = self._generation
            for commit in _commits(events):
                with self._in_flight_lock:
                    if commit.key in self._in_flight:
                        continue
                    self._in_flight[commit.key] = time.monotonic()
                try:
                    for event in commit.events:
                        future = self.producer.send(
                            self.topic,
                            key=event.stream_id.encode(),
                            value=event.to_bytes(),
                            headers=event.kafka_headers(),
                        )
                        future.add_callback(self._on_ack, commit, path)
                        future.add_errback(self._on_error, commit, generation)
                except BaseException:
                    self._forget([commit])
                    raise  # the rest of the batch stays behind it, for the sweeper

    def _replace_failed_producer(self) -> None:
        """After a failed send, a new producer (see the module docstring); called under `_sending`.

        Failed means a send came back with an error, a flush timed out, or a send has had
        no answer for STUCK_AFTER (a producer that retries a broker's refusal forever
        never reports an error at all).
        """
        now = time.monotonic()
        with self._in_flight_lock:
            self._failed = self._failed or any(now - since > STUCK_AFTER for since in self._in_flight.values())
        if not self._failed or self._renew is None or now - self._renewed_at < RENEW_INTERVAL:
            return
        self._renewed_at = now
        try:
            fresh = self._renew()
        except Exception as exc:  # Kafka still away: keep the old one, try again after the interval
            log.warning("could not replace the failed Kafka producer", extra={"error": repr(exc)})
            return
        old, self.producer = self.producer, fresh
        with self._in_flight_lock:
            self._generation += 1
            self._failed = False
            self._in_flight.clear()  # nothing the old producer held is on its way any more
        metrics.PRODUCERS_RENEWED.labels(self.store.service).inc()
        log.warning("replaced a failed Kafka producer; the sweeper sends what it held")
        _discard(old)

    def _forget(self, commits: Sequence[_Commit]) -> None:
        with self._in_flight_lock:
            for commit in commits:
                self._in_flight.pop(commit.key, None)

    def _on_ack(self, commit: _Commit, path: str, _metadata: object) -> None:
        if commit.acknowledged():
            self._acks.add(commit)
            service = self.store.service
            metrics.EVENTS_PUBLISHED.labels(service, path).inc(len(commit.events))
            metrics.PUBLISH_LAG.labels(service, path).observe((utcnow() - commit.events[0].time).total_seconds())

    def _on_error(self, commit: _Commit, generation: int, exc: BaseException) -> None:
        with self._in_flight_lock:
            if generation != self._generation:
                return  # a replaced producer's leftovers: already forgotten
            self._failed = True
            self._in_flight.pop(commit.key, None)  # not on the topic: its stream's next send or the sweeper resends it
        metrics.PUBLISH_FAILURES.labels(self.store.service).inc()
        log.warning(
            "publish failed; the sweeper will retry", extra={"event_id": commit.events[0].id, "error": repr(exc)}
        )


class _Commit:
    """The events of one stored commit on their way to Kafka, counting acknowledgements."""

    def __init__(self, events: list[RecordedEvent]) -> None:
        self.events = events
        self.key = (events[0].stream_id, events[0].commit or events[0].version)
        self._waiting = len(events)
        self._lock = threading.Lock()

    def acknowledged(self) -> bool:
        """Count one event's acknowledgement; True once, when the last of them arrives."""
        with self._lock:
            self._waiting -= 1
            return self._waiting == 0


def _commits(events: Sequence[RecordedEvent]) -> list[_Commit]:
    """Consecutive events of the same stored commit, grouped (the store hands out whole commits)."""
    groups: list[list[RecordedEvent]] = []
    for event in events:
        if (
            groups
            and (groups[-1][0].stream_id, groups[-1][0].commit) == (event.stream_id, event.commit)
            and event.commit
        ):
            groups[-1].append(event)
        else:
            groups.append([event])
    return [_Commit(group) for group in groups]


def _discard(producer: KafkaProducer) -> None:
    """Close a failed producer without waiting for it.

    kafka-python's close() flushes first and raises KafkaTimeoutError while batches are
    stuck, before it would force-close its I/O thread, which then retries them forever;
    so that thread is force-closed here (its batches fail, and their callbacks, of a
    replaced producer, change nothing).
    """
    try:
        producer.close(timeout=0)
    except KafkaTimeoutError:
        sender = getattr(producer, "_sender", None)  # private, but the only way to stop it
        if sender is not None:
            sender.force_close()


def _edge(events: Iterable[RecordedEvent], pick: Callable[[int, int], int]) -> dict[str, int]:
    """The lowest (`min`) or highest (`max`) version of each stream among `events`."""
    edge: dict[str, int] = {}
    for event in events:
        edge[event.stream_id] = pick(edge.get(event.stream_id, event.version), event.version)
    return edge


def run_sweeper(publisher: Publisher, stop: threading.Event, interval: float = 1.0, limit: int = 1000) -> None:
    """Sweep until `stop` is set; the worker runs this in a thread."""
    while not stop.is_set():
        try:
            while publisher.sweep(limit) == limit and not stop.is_set():
                pass  # a full batch: there may be more right behind it
        except Exception:
            log.exception("sweep failed; retrying")
        stop.wait(interval)
