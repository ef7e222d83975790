"""Projections: idempotent folds, gap filling, commit-after-write, rebuild."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition
from prometheus_client import REGISTRY
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import AutoReconnect

from crmkit import metrics, stack
from crmkit.config import ProjectionPolicy
from crmkit.errors import Unavailable
from crmkit.events import Metadata, NewEvent, RecordedEvent, new_id
from crmkit.eventstore import EventStore
from crmkit.projector import ProjectorRunner, StreamProjection, projection_states, rebuild
from crmkit.publisher import Publisher
from crmkit.service import worker_readiness
from crmkit.testing import Servers

from .conftest import read_topic

META = Metadata(actor="user:alice")


class WidgetNames(StreamProjection):
    """One document per widget; `applied` lists every version folded in, so a double shows."""

    aggregate_types = ("Widget",)

    def fold(self, document: dict[str, Any] | None, events: Sequence[RecordedEvent]) -> dict[str, Any] | None:
        doc = dict(document or {"applied": [], "name": None})
        for event in events:
            if event.type == "WidgetHidden":
                return None
            doc["applied"] = [*doc["applied"], event.version]
            doc["name"] = event.data.get("name", doc["name"])
        return doc


class Boom(Exception):
    pass


class Failing:
    """A projection whose writes fail the first `failures` times (`error`: a bug, or Mongo away...)."""

    def __init__(self, inner: StreamProjection, failures: int, error: type[Exception] = Boom) -> None:
        self.inner = inner
        self.name = inner.name
        self.topics = inner.topics
        self.failures = failures
        self.error = error
        self.calls = 0

    def handle(self, events: Sequence[RecordedEvent]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error("write failed")
        self.inner.handle(events)

    def reset(self) -> None:
        self.inner.reset()


def append(store: EventStore, stream: str, expected: int, *names: str, kind: str = "Widget") -> list[RecordedEvent]:
    return store.append(stream, kind, expected, [NewEvent(f"{kind}Renamed", {"name": n}) for n in names], META)


@pytest.fixture
def collection(db: Database) -> Collection:
    return db["widget_names"]


@pytest.fixture
def projection(collection: Collection, store: EventStore, topic: str) -> WidgetNames:
    return WidgetNames("widget-names", collection, store, topic)


def docs(collection: Collection) -> dict[str, dict[str, Any]]:
    return {doc["_id"]: {k: v for k, v in doc.items() if k != "_id"} for doc in collection.find()}


class TestStreamProjection:
    def test_folds_each_stream_into_one_document(
        self, projection: WidgetNames, store: EventStore, collection: Collection
    ) -> None:
        a, b = new_id(), new_id()
        events = append(store, a, 0, "a1", "a2") + append(store, b, 0, "b1")
        projection.handle(events)
        assert docs(collection) == {
            a: {"applied": [1, 2], "name": "a2", "version": 2},
            b: {"applied": [1], "name": "b1", "version": 1},
        }

    def test_events_delivered_twice_are_applied_once(
        self, projection: WidgetNames, store: EventStore, collection: Collection
    ) -> None:
        stream = new_id()
        events = append(store, stream, 0, "a", "b", "c")
        projection.handle(events + events)  # duplicates inside one batch
        projection.handle(events[:2])  # a redelivered older batch
        projection.handle(events)
        assert docs(collection)[stream] == {"applied": [1, 2, 3], "name": "c", "version": 3}

    def test_out_of_order_batch_is_applied_in_version_order(
        self, projection: WidgetNames, store: EventStore, collection: Collection
    ) -> None:
        stream = new_id()
        events = append(store, stream, 0, "a", "b", "c")
        projection.handle(list(reversed(events)))
        assert docs(collection)[stream] == {"applied": [1, 2, 3], "name": "c", "version": 3}

    def test_a_gap_is_filled_from_the_store(
        self, projection: WidgetNames, store: EventStore, collection: Collection
    ) -> None:
        stream = new_id()
        v1, v2, v3, v4 = (append(store, stream, n, f"v{n + 1}")[0] for n in range(4))
        projection.handle([v1])
        projection.handle([v3])  # v2 (and v4) still in some outbox: the store has them all
        assert docs(collection)[stream] == {"applied": [1, 2, 3, 4], "name": "v4", "version": 4}
        projection.handle([v2, v4])  # arriving late changes nothing
        assert docs(collection)[stream] == {"applied": [1, 2, 3, 4], "name": "v4", "version": 4}

    def test_a_stream_first_seen_past_its_start_is_read_from_the_store(
        self, projection: WidgetNames, store: EventStore, collection: Collection
    ) -> None:
        stream = new_id()
        events = append(store, stream, 0, "a", "b", "c")
        projection.handle(events[2:])
        assert docs(collection)[stream]["applied"] == [1, 2, 3]

    def test_other_aggregate_types_are_ignored(
        self, projection: WidgetNames, store: EventStore, collection: Collection
    ) -> None:
        projection.handle(append(store, new_id(), 0, "g", kind="Gadget"))
        assert docs(collection) == {}

    def test_a_fold_returning_none_writes_nothing(
        self, projection: WidgetNames, store: EventStore, collection: Collection
    ) -> None:
        stream = new_id()
        hidden = store.append(stream, "Widget", 0, [NewEvent("WidgetHidden", {})], META)
        projection.handle(hidden)
        assert docs(collection) == {}

    def test_reset_drops_the_read_model(
        self, projection: WidgetNames, store: EventStore, collection: Collection
    ) -> None:
        projection.handle(append(store, new_id(), 0, "a"))
        projection.reset()
        assert collection.count_documents({}) == 0


def test_rebuild_drops_and_refolds_every_stored_event(
    projection: WidgetNames, store: EventStore, collection: Collection
) -> None:
    a, b = new_id(), new_id()
    append(store, a, 0, "a1", "a2")
    append(store, b, 0, "b1")
    append(store, new_id(), 0, "g", kind="Gadget")
    collection.insert_one({"_id": "stale", "applied": [9], "version": 9})
    collection.replace_one({"_id": a}, {"applied": [1, 1, 1], "name": "wrong", "version": 2}, upsert=True)
    progress: list[int] = []
    assert rebuild(projection, store, progress.append) == 4
    assert progress and progress[-1] == 4 and progress == sorted(progress)
    assert docs(collection) == {
        a: {"applied": [1, 2], "name": "a2", "version": 2},
        b: {"applied": [1], "name": "b1", "version": 1},
    }


def test_rebuild_reports_progress_per_batch(
    projection: WidgetNames, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(5):
        append(store, new_id(), 0, "x")
    real_scan = store.scan
    monkeypatch.setattr(store, "scan", lambda: real_scan(batch_size=2))
    progress: list[int] = []
    rebuild(projection, store, progress.append)
    assert progress == [2, 4, 5]


class IndexedWidgetNames(WidgetNames):
    def ensure_indexes(self) -> None:
        self.collection.create_index([("name", 1)])


def test_rebuild_loads_without_secondary_indexes_and_builds_them_after(
    store: EventStore, collection: Collection
) -> None:
    projection = IndexedWidgetNames("widget_names", collection, store, "widgets")
    projection.ensure_indexes()
    before = sorted(collection.index_information())
    for _ in range(3):
        append(store, new_id(), 0, "x")
    during: list[list[str]] = []
    rebuild(projection, store, lambda _applied: during.append(sorted(collection.index_information())))
    assert during and all(names == ["_id_"] for names in during)  # each write maintained the primary key only
    assert sorted(collection.index_information()) == before and len(before) == 2


def test_a_document_created_meanwhile_by_another_writer_gets_the_events_folded_onto_it(
    projection: WidgetNames, store: EventStore, collection: Collection
) -> None:
    """New documents are inserted, not upserted; one the live projector wrote between this
    batch's read and its write (e.g. beside a rebuild) makes the insert fail, and the batch's
    events are folded onto it instead of lost."""
    stream = new_id()
    events = append(store, stream, 0, "a1", "a2")
    real_fold = projection.fold

    def fold_while_the_other_writer_inserts(document: Any, fresh: Sequence[RecordedEvent]) -> Any:
        if document is None and not collection.find_one({"_id": stream}):
            collection.insert_one({"_id": stream, "applied": [1], "name": "a1", "version": 1})
        return real_fold(document, fresh)

    projection.fold = fold_while_the_other_writer_inserts  # type: ignore[method-assign]
    projection.handle(events)
    assert docs(collection) == {stream: {"applied": [1, 2], "name": "a2", "version": 2}}


def test_read_ahead_keeps_order_raises_the_reader_s_error_and_stops_early() -> None:
    from crmkit.projector import _read_ahead

    assert list(_read_ahead(iter([[1], [2], [3], [4], [5]]))) == [[1], [2], [3], [4], [5]]  # type: ignore[list-item]

    def failing() -> Any:
        yield [1]
        raise Boom("the store went away")

    read = _read_ahead(failing())
    assert next(read) == [1]
    with pytest.raises(Boom):
        next(read)
    endless = _read_ahead(iter(lambda: [0], None))  # type: ignore[arg-type]
    assert next(endless) == [0]
    endless.close()  # the caller stopped: the reader thread ends instead of blocking on a full queue
    assert not any(t.name == "rebuild-read-ahead" and t.is_alive() for t in threading.enumerate())


# ---- through Kafka, with the runner -------------------------------------------------

FAST = ProjectionPolicy(attempts=2, first_delay=0.01, max_delay=0.05, stall_seconds=60)


def runner_for(
    projection: Any, servers: Servers, group: str, store: EventStore, policy: ProjectionPolicy = FAST
) -> ProjectorRunner:
    return ProjectorRunner(
        "widgets",
        projection,
        servers.kafka_bootstrap,
        store.open,
        db=store.events.database,
        group_prefix=group,
        policy=policy,
    )


def committed(servers: Servers, group_id: str, topic: str) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=servers.kafka_bootstrap, group_id=group_id, enable_auto_commit=False)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        return {p: consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        consumer.close()


def next_offsets(servers: Servers, topic: str, count: int) -> dict[int, int]:
    """The offset after each partition's last message (read, not asked: Tansu 0.6 answers
    ListOffsets "latest" with the last batch's base offset + 1 for an idempotent batch)."""
    ends: dict[int, int] = {}
    for message in read_topic(servers.kafka_bootstrap, topic, count):
        ends[message.partition] = max(ends.get(message.partition, 0), message.offset + 1)
    return ends


def poison_count(projection: str) -> float:
    return REGISTRY.get_sample_value("crm_poison_events_total", {"service": "widgets", "projection": projection}) or 0


@pytest.mark.usefixtures("fast_group_join")
def test_the_runner_fetches_with_the_policy_s_short_wait(
    servers: Servers,
    store: EventStore,
    projection: WidgetNames,
) -> None:
    """How long the broker may hold an empty fetch bounds how late a write reaches its own list."""
    runner = runner_for(projection, servers, "wait", store, policy=ProjectionPolicy(fetch_wait_ms=30))
    try:
        assert runner.consumer.config["fetch_max_wait_ms"] == 30
    finally:
        runner.consumer.close()


def test_runner_applies_each_event_once_fills_gaps_and_skips_poison(
    servers: Servers,
    store: EventStore,
    publisher: Publisher,
    projection: WidgetNames,
    collection: Collection,
    topic: str,
    wait: Callable[..., Any],
) -> None:
    a, b = new_id(), new_id()
    a_events = append(store, a, 0, "a1", "a2", "a3")
    publisher.publish(a_events)
    publisher.replay([a_events])  # at least once: everything of `a` arrives twice
    publisher.publish(append(store, b, 0, "b1"))
    append(store, b, 1, "b2")  # stays in the outbox: the runner sees b1, then b3
    publisher.publish(append(store, b, 2, "b3"))
    raw = KafkaProducer(bootstrap_servers=servers.kafka_bootstrap)
    raw.send(topic, key=b"junk", value=b"this is not a CloudEvent")
    raw.send(topic, key=a.encode(), value=b'{"specversion": "1.0", "type": "com.example.Other.v1"}')
    raw.close()
    publisher.flush()
    poison_before = poison_count(projection.name)

    runner = runner_for(projection, servers, new_id(), store)
    try:
        wait(
            lambda: (
                runner.poll_once() == 0
                and len(docs(collection)) == 2
                and all(d["version"] == 3 for d in docs(collection).values())
            ),
            timeout=30,
            interval=0,
            what="both streams projected up to version 3",
        )
    finally:
        runner.consumer.close()
    assert docs(collection) == {
        a: {"applied": [1, 2, 3], "name": "a3", "version": 3},
        b: {"applied": [1, 2, 3], "name": "b3", "version": 3},
    }
    assert poison_count(projection.name) - poison_before == 2


@pytest.mark.usefixtures("fast_group_join")
def test_offsets_are_committed_only_after_the_write(
    servers: Servers,
    store: EventStore,
    publisher: Publisher,
    projection: WidgetNames,
    collection: Collection,
    topic: str,
    wait: Callable[..., Any],
) -> None:
    stream = new_id()
    publisher.publish(append(store, stream, 0, "a", "b", "c"))
    publisher.flush()
    group = new_id()
    failing = runner_for(Failing(projection, failures=1_000, error=AutoReconnect), servers, group, store)

    def failed() -> bool:
        try:
            failing.poll_once()
        except AutoReconnect:  # an outage: retried, never parked, so never committed
            return True
        return False

    try:
        wait(failed, timeout=30, interval=0, what="the failing projection to receive the events")
    finally:
        failing.consumer.close()  # the process dies
    assert docs(collection) == {}
    assert all(offset is None for offset in committed(servers, failing.group_id, topic).values())

    restarted = runner_for(projection, servers, group, store)
    assert restarted.group_id == failing.group_id
    try:
        wait(
            lambda: restarted.poll_once() >= 0 and docs(collection).get(stream, {}).get("version") == 3,
            timeout=30,
            interval=0,
            what="the same events after the restart",
        )
    finally:
        restarted.consumer.close()
    assert docs(collection)[stream]["applied"] == [1, 2, 3]
    ends = next_offsets(servers, topic, 3)
    assert {p: o for p, o in committed(servers, restarted.group_id, topic).items() if p in ends} == ends


@pytest.mark.usefixtures("fast_group_join")
def test_run_retries_a_batch_whose_write_failed(
    servers: Servers,
    store: EventStore,
    publisher: Publisher,
    projection: WidgetNames,
    collection: Collection,
    wait: Callable[..., Any],
) -> None:
    stream = new_id()
    publisher.publish(append(store, stream, 0, "a", "b"))
    publisher.flush()
    flaky = Failing(projection, failures=1)
    runner = runner_for(flaky, servers, new_id(), store)
    stop = threading.Event()
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            runner.run(stop)
        except BaseException as exc:
            crashed.append(exc)

    thread = threading.Thread(target=run, name="projector-under-test")
    thread.start()
    try:
        wait(
            lambda: crashed or docs(collection).get(stream, {}).get("version") == 2,
            timeout=30,
            what="the batch applied after one failed write",
        )
        assert not crashed, f"the projector thread died: {crashed!r}"
        assert flaky.calls >= 2 and thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert docs(collection)[stream]["applied"] == [1, 2]


# ---- poison events are parked, outages are waited out ------------------------------


class Picky(WidgetNames):
    """Cannot fold a widget named "poison…" (a bug, or a forged event); its error quotes the name."""

    def fold(self, document: dict[str, Any] | None, events: Sequence[RecordedEvent]) -> dict[str, Any] | None:
        for event in events:
            if str(event.data.get("name", "")).startswith("poison"):
                raise ValueError(f"cannot fold the name {event.data['name']}")
        return super().fold(document, events)


def parked(db: Database) -> list[dict[str, Any]]:
    return list(db["deadletters"].find().sort("offset"))


def sample(name: str, **labels: Any) -> float:
    return REGISTRY.get_sample_value(name, {"service": "widgets", **labels}) or 0


def position_of(servers: Servers, topic: str, count: int, event_id: str) -> tuple[int, int]:
    [message] = [m for m in read_topic(servers.kafka_bootstrap, topic, count) if event_id.encode() in m.value]
    return message.partition, message.offset


@pytest.mark.usefixtures("fast_group_join")
def test_an_event_that_fails_alone_is_parked_and_the_rest_of_its_batch_applied_once(
    servers: Servers,
    store: EventStore,
    publisher: Publisher,
    collection: Collection,
    topic: str,
    db: Database,
    wait: Callable[..., Any],
) -> None:
    projection = Picky(f"picky-{new_id()[-8:]}", collection, store, topic)
    a, b, bad = new_id(), new_id(), new_id()
    publisher.publish(append(store, a, 0, "a1", "a2"))
    [poison] = append(store, bad, 0, "poison from Sara Rezaei")
    publisher.publish([poison])
    publisher.publish(append(store, b, 0, "b1"))
    publisher.publish(append(store, a, 2, "a3"))
    publisher.flush()
    runner = runner_for(projection, servers, new_id(), store)
    try:
        wait(
            lambda: (
                runner.poll_once() == 0
                and parked(db)
                and docs(collection).get(a, {}).get("version") == 3
                and b in docs(collection)
            ),
            timeout=30,
            interval=0,
            what="the good events applied, the poison parked",
        )
    finally:
        runner.consumer.close()
    assert docs(collection) == {
        a: {"applied": [1, 2, 3], "name": "a3", "version": 3},
        b: {"applied": [1], "name": "b1", "version": 1},
    }
    [letter] = parked(db)
    assert (letter["partition"], letter["offset"]) == position_of(servers, topic, 5, poison.id)
    assert letter["topic"] == topic and letter["projection"] == projection.name
    assert letter["attempts"] == FAST.attempts and letter["first_failed"] <= letter["last_failed"]
    assert letter["error"] == {"class": "ValueError", "message": "cannot fold the name ***"}  # no personal data
    assert json.loads(letter["envelope"])["id"] == poison.id  # the record as received
    assert letter["event"]["type"] == "crm.widgets.WidgetRenamed.v1" and letter["event"]["subject"] == bad
    assert sample("crm_events_parked_total", projection=projection.name) == 1
    ends = next_offsets(servers, topic, 5)
    assert {p: o for p, o in committed(servers, runner.group_id, topic).items() if p in ends} == ends  # moved past


@pytest.mark.usefixtures("fast_group_join")
def test_a_record_of_another_service_on_a_topic_is_parked_never_applied(
    servers: Servers,
    store: EventStore,
    publisher: Publisher,
    projection: WidgetNames,
    collection: Collection,
    topic: str,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    wait: Callable[..., Any],
) -> None:
    monkeypatch.setenv("CRM_WIDGETS_TOPIC", topic)  # the topic belongs to the widgets service
    [template] = append(store, new_id(), 0, "forged")  # stored, never published
    other_type = replace(template, id=new_id(), stream_id=new_id(), service="sales").to_cloudevent()
    other_source = {**replace(template, id=new_id(), stream_id=new_id()).to_cloudevent(), "source": "crm/sales"}
    raw = KafkaProducer(bootstrap_servers=servers.kafka_bootstrap)
    for forged in (other_type, other_source):
        raw.send(topic, key=forged["subject"].encode(), value=json.dumps(forged).encode()).get(timeout=10)
    raw.close()
    good = new_id()
    publisher.publish(append(store, good, 0, "genuine"))
    publisher.flush()
    runner = runner_for(projection, servers, new_id(), store)
    try:
        wait(
            lambda: runner.poll_once() == 0 and len(parked(db)) == 2 and good in docs(collection),
            timeout=30,
            interval=0,
            what="the genuine event applied, both forged ones parked",
        )
    finally:
        runner.consumer.close()
    assert set(docs(collection)) == {good}
    assert {json.loads(letter["envelope"])["id"] for letter in parked(db)} == {other_type["id"], other_source["id"]}
    assert {letter["error"]["class"] for letter in parked(db)} == {"ForeignEvent"}
    assert all(letter["attempts"] == 1 for letter in parked(db))  # refused on sight, never tried


@pytest.mark.usefixtures("fast_group_join")
def test_an_outage_parks_nothing_and_everything_is_applied_after_it(
    servers: Servers,
    store: EventStore,
    publisher: Publisher,
    projection: WidgetNames,
    collection: Collection,
    db: Database,
    wait: Callable[..., Any],
) -> None:
    stream = new_id()
    publisher.publish(append(store, stream, 0, "a", "b", "c"))
    publisher.flush()
    outage = Failing(projection, failures=3, error=AutoReconnect)  # MongoDB away for three tries
    runner = runner_for(outage, servers, new_id(), store, policy=replace(FAST, attempts=1))
    outages_before = sample("crm_projection_failures_total", projection=projection.name, kind="outage")
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), name="projector-under-test")
    thread.start()
    try:
        wait(
            lambda: docs(collection).get(stream, {}).get("version") == 3,
            timeout=30,
            what="every event applied once the outage is over",
        )
    finally:
        stop.set()
        thread.join(timeout=30)
    assert parked(db) == []
    assert docs(collection)[stream]["applied"] == [1, 2, 3]
    assert sample("crm_projection_failures_total", projection=projection.name, kind="outage") - outages_before == 3


@pytest.mark.usefixtures("fast_group_join")
def test_while_a_projection_fails_its_lag_shows_and_readiness_says_degraded(
    servers: Servers,
    store: EventStore,
    publisher: Publisher,
    projection: WidgetNames,
    db: Database,
    topic: str,
    wait: Callable[..., Any],
) -> None:
    publisher.publish(append(store, new_id(), 0, "a", "b", "c"))
    publisher.flush()
    named = WidgetNames(f"stuck-{new_id()[-8:]}", projection.collection, store, topic)
    down = Failing(named, failures=10**6, error=Unavailable)  # the contacts service away
    runner = runner_for(down, servers, new_id(), store)

    def failed() -> bool:
        try:
            runner.poll_once()
        except Unavailable:
            return True
        return False

    try:
        wait(failed, timeout=30, interval=0, what="the projection to fail on its batch")
        lag = sum(
            sample("crm_consumer_lag_messages", projection=named.name, topic=topic, partition=str(p)) for p in range(3)
        )
        assert lag == 3
        runner.progress.last_advance -= timedelta(minutes=5)  # five minutes without advancing, while behind
        status, body = worker_readiness([runner])()
        assert status == 503 and body["status"] == "degraded" and named.name in body["detail"]
        assert body["projections"][0] | {"last_advance": None} == {
            "name": named.name,
            "state": "degraded",
            "lag": 3,
            "failing": "Unavailable",
            "parked": 0,
            "last_advance": None,
        }
        port = stack.free_port()
        server = metrics.serve(port, worker_readiness([runner]))
        try:
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
            assert answer.value.code == 503 and json.loads(answer.value.read())["status"] == "degraded"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as exposition:
                assert b"crm_consumer_lag_messages" in exposition.read()
        finally:
            server.shutdown()
        runner.progress.heartbeat()  # what the api's /readyz reads
        [state] = projection_states(db, stall_seconds=60)
        assert state["name"] == named.name and state["state"] == "degraded" and state["lag"] == 3
    finally:
        runner.consumer.close()
