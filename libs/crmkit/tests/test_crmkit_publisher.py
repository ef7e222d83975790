"""The outbox publisher against the Kafka-protocol broker: inline, sweeper and replay paths."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from crmkit import publisher as publisher_module
from crmkit.events import Metadata, NewEvent, RecordedEvent, epoch_ms, new_id
from crmkit.eventstore import EventStore, stream_key
from crmkit.publisher import Publisher, make_producer
from crmkit.testing import Servers

from .conftest import fresh_topic, read_topic

META = Metadata(actor="user:alice", correlation_id="corr-9")


def append(store: EventStore, stream: str, expected: int, count: int = 1) -> list[RecordedEvent]:
    events = [NewEvent("WidgetRenamed", {"n": expected + i + 1}) for i in range(count)]
    return store.append(stream, "Widget", expected, events, META)


def by_key(messages: list[Any]) -> dict[str, list[int]]:
    """Stream versions per message key, in the order the partition holds them."""
    streams: dict[str, list[int]] = defaultdict(list)
    for message in sorted(messages, key=lambda m: (m.partition, m.offset)):
        streams[message.key.decode()].append(json.loads(message.value)["streamversion"])
    return dict(streams)


def pin_clock(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    monkeypatch.setattr(publisher_module, "utcnow", lambda: moment)


def test_publish_sends_cloudevents_keyed_by_aggregate_id_and_marks_them(
    servers: Servers, store: EventStore, publisher: Publisher, topic: str, wait: Callable[..., Any]
) -> None:
    a, b = new_id(), new_id()
    events = append(store, a, 0, 3)
    other = append(store, b, 0, 1)
    publisher.publish(events)
    publisher.publish(other)
    publisher.flush()
    messages = read_topic(servers.kafka_bootstrap, topic, 4)
    assert len(messages) == 4
    assert by_key(messages) == {a: [1, 2, 3], b: [1]}
    assert len({m.partition for m in messages if m.key == a.encode()}) == 1  # one stream, one partition
    sent = {json.loads(m.value)["id"]: m for m in messages}
    for event in [*events, *other]:
        assert sent[event.id].value == event.to_bytes()
        assert RecordedEvent.from_bytes(sent[event.id].value) == event
    wait(lambda: store.unpublished() == [], what="events marked published")


def test_publish_returns_without_waiting_for_kafka(store: EventStore, publisher: Publisher, wait: Callable) -> None:
    events = append(store, new_id(), 0, 2)
    publisher.publish(events)  # asynchronous: acknowledgements are recorded in the background
    wait(lambda: store.unpublished() == [], what="acknowledged in the background without a flush")


def test_publish_of_nothing_sends_nothing(
    store: EventStore, publisher: Publisher, servers: Servers, topic: str
) -> None:
    publisher.publish([])
    publisher.flush()
    assert read_topic(servers.kafka_bootstrap, topic, 0) == []


def test_sweep_sends_what_a_crash_left_unpublished(
    servers: Servers, store: EventStore, publisher: Publisher, topic: str
) -> None:
    a, b, c = new_id(), new_id(), new_id()
    orphaned = [*append(store, a, 0, 2), *append(store, b, 0, 1)]  # appended, then the process "died"
    published = append(store, c, 0, 1)
    publisher.publish(published)
    publisher.flush()
    assert {e.id for e in store.unpublished()} == {e.id for e in orphaned}

    assert publisher.sweep(min_age=0) == 3
    assert store.unpublished() == []  # sweep flushes, so its acknowledgements are recorded on return
    messages = read_topic(servers.kafka_bootstrap, topic, 4)
    assert sorted(json.loads(m.value)["id"] for m in messages) == sorted(e.id for e in [*orphaned, *published])
    assert publisher.sweep(min_age=0) == 0


def test_sweep_includes_an_event_of_this_very_millisecond_when_min_age_is_zero(
    store: EventStore, publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    [event] = append(store, new_id(), 0, 1)
    pin_clock(monkeypatch, event.time)  # the clock has not moved on since the append
    assert publisher.sweep(min_age=0) == 1
    assert store.unpublished() == []


def test_sweep_leaves_young_events_to_the_inline_publisher(
    store: EventStore, publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    [event] = append(store, new_id(), 0, 1)
    pin_clock(monkeypatch, event.time + timedelta(milliseconds=1999))
    assert publisher.sweep(min_age=2.0) == 0
    pin_clock(monkeypatch, event.time + timedelta(seconds=2))
    assert publisher.sweep(min_age=2.0) == 1
    assert store.unpublished() == []


def test_sweep_respects_its_limit(store: EventStore, publisher: Publisher) -> None:
    for _ in range(5):
        append(store, new_id(), 0, 1)
    assert publisher.sweep(limit=3, min_age=0) == 3
    assert len(store.unpublished()) == 2
    assert publisher.sweep(limit=3, min_age=0) == 2


def test_publish_sends_older_orphans_of_the_stream_first(
    servers: Servers, store: EventStore, publisher: Publisher, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, other = new_id(), new_id()
    orphans = append(store, stream, 0, 2)
    append(store, other, 0, 1)  # another stream's orphan is the sweeper's business
    newest = append(store, stream, 2, 1)
    pin_clock(monkeypatch, newest[0].time + timedelta(seconds=5))
    publisher.publish(newest)
    publisher.flush()
    messages = read_topic(servers.kafka_bootstrap, topic, 3)
    assert by_key(messages) == {stream: [1, 2, 3]}
    assert [e.stream_id for e in store.unpublished()] == [other]
    assert {e.id for e in orphans}.isdisjoint(e.id for e in store.unpublished())


def test_publish_sends_every_unsent_earlier_event_of_the_stream_first_whatever_its_age(
    servers: Servers, store: EventStore, publisher: Publisher, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = new_id()
    in_flight = append(store, stream, 0, 1)  # another process may be sending it right now: it goes first anyway
    newest = append(store, stream, 1, 1)
    pin_clock(monkeypatch, newest[0].time + timedelta(milliseconds=1))
    publisher.publish(newest)
    publisher.flush()
    assert by_key(read_topic(servers.kafka_bootstrap, topic, 2)) == {stream: [1, 2]}
    assert {e.id for e in in_flight}.isdisjoint(e.id for e in store.unpublished())


def test_two_processes_writing_one_stream_never_put_a_later_version_first(
    servers: Servers, store: EventStore, publisher: Publisher, topic: str
) -> None:
    stream = new_id()
    first = append(store, stream, 0, 1)  # process A appended v1 and is about to publish it
    other = Publisher(store, make_producer(servers.kafka_bootstrap, "kit-other-process"), topic)
    try:
        other.publish(append(store, stream, 1, 1))  # process B appends v2 and publishes at once
        other.flush()
    finally:
        other.close()
    publisher.publish(first)  # A's copy of v1 comes late: a duplicate, which consumers drop
    publisher.flush()
    versions = by_key(read_topic(servers.kafka_bootstrap, topic, 2))[stream]
    assert versions[:2] == [1, 2] and set(versions[2:]) <= {1}


def test_publish_of_a_bulk_append_sends_each_streams_earlier_events_first(
    servers: Servers, store: EventStore, publisher: Publisher, topic: str
) -> None:
    a, b = new_id(), new_id()
    append(store, a, 0, 1)
    append(store, b, 0, 2)
    bulk = [*append(store, a, 1, 1), *append(store, b, 2, 1)]  # e.g. Repository.change_many's one append
    publisher.publish(bulk)
    publisher.flush()
    assert by_key(read_topic(servers.kafka_bootstrap, topic, 5)) == {a: [1, 2], b: [1, 2, 3]}
    assert store.unpublished() == []


def test_one_process_writing_a_stream_twice_sends_each_event_once(
    servers: Servers, store: EventStore, publisher: Publisher, topic: str
) -> None:
    stream = new_id()
    publisher.publish(append(store, stream, 0, 1))
    publisher.publish(append(store, stream, 1, 1))  # v1 is still in flight: this producer sent it first
    publisher.flush()
    assert by_key(read_topic(servers.kafka_bootstrap, topic, 2)) == {stream: [1, 2]}


def test_sweep_sends_a_younger_looking_earlier_event_before_an_old_one(
    servers: Servers, store: EventStore, publisher: Publisher, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = new_id()
    early, late = append(store, stream, 0, 1)[0], append(store, stream, 1, 1)[0]
    ahead = epoch_ms(late.time) + 60_000  # v1 was written by a process whose clock runs a minute ahead
    store.events.update_one({"_id": stream_key(stream, 1)}, {"$set": {"time_ms": ahead}})
    pin_clock(monkeypatch, late.time + timedelta(seconds=5))
    assert publisher.sweep(min_age=2.0) == 1  # only v2 is old enough to be picked...
    assert by_key(read_topic(servers.kafka_bootstrap, topic, 2)) == {stream: [1, 2]}  # ...v1 still goes first
    assert store.unpublished() == [] and early.version == 1


def test_the_sweep_limit_never_sends_a_later_version_before_an_earlier_one(
    servers: Servers, store: EventStore, publisher: Publisher, topic: str
) -> None:
    a, b = sorted([new_id(), new_id()])
    append(store, a, 0, 2)  # one commit of two events
    for version in range(3):
        append(store, b, version)  # three commits of one
    assert publisher.sweep(limit=2, min_age=0) == 3  # a's commit whole, and b cut after its first commit
    assert publisher.sweep(limit=2, min_age=0) == 2
    assert by_key(read_topic(servers.kafka_bootstrap, topic, 5)) == {a: [1, 2], b: [1, 2, 3]}


def test_replay_resends_everything_to_a_fresh_topic(
    servers: Servers, store: EventStore, publisher: Publisher, topic: str
) -> None:
    streams = [new_id() for _ in range(3)]
    stored = []
    for stream in streams:
        stored += append(store, stream, 0, 3)
    publisher.publish(stored)
    publisher.flush()
    fresh = fresh_topic(servers.kafka_bootstrap)  # e.g. a broker that restarted empty
    replayer = Publisher(store, make_producer(servers.kafka_bootstrap, "kit-replay"), fresh)
    try:
        assert replayer.replay() == 9
    finally:
        replayer.close()
    messages = read_topic(servers.kafka_bootstrap, fresh, 9)
    assert len(messages) == 9
    assert by_key(messages) == {stream: [1, 2, 3] for stream in streams}
    assert {m.value for m in messages} == {e.to_bytes() for e in stored}
    assert len(read_topic(servers.kafka_bootstrap, topic, 9)) == 9  # the old topic is untouched


def test_replay_of_given_batches(servers: Servers, store: EventStore, publisher: Publisher, topic: str) -> None:
    stream = new_id()
    events = append(store, stream, 0, 2) + append(store, stream, 2)
    assert publisher.replay([events[:2], events[2:]]) == 3  # batches of whole commits, as scan() gives them
    assert len(read_topic(servers.kafka_bootstrap, topic, 3)) == 3
    assert store.unpublished() == []


def test_a_commit_is_published_only_when_all_its_events_are_acknowledged(
    store: EventStore, publisher: Publisher
) -> None:
    """Kafka acknowledges per record; marking a commit on its first acknowledgement would lose
    the rest if one of them failed."""
    events = append(store, new_id(), 0, 3)
    callbacks: list[tuple[Any, ...]] = []

    class Future:
        def add_callback(self, function: Any, *args: Any) -> None:
            callbacks.append((function, *args))

        def add_errback(self, function: Any, *args: Any) -> None:
            pass

    class Producer:
        def send(self, *_args: Any, **_kwargs: Any) -> Future:
            return Future()

        def flush(self, timeout: float | None = None) -> None:
            pass

        def close(self, timeout: float | None = None) -> None:
            pass

    publisher.producer.close()
    publisher.producer = Producer()  # type: ignore[assignment]
    publisher.publish(events)
    for function, *args in callbacks[:2]:
        function(*args, None)
        publisher._acks.flush()
    assert store.unpublished() == events
    function, *args = callbacks[2]
    function(*args, None)
    publisher._acks.flush()
    assert store.unpublished() == []


def test_close_records_acknowledgements_of_sends_in_flight(servers: Servers, store: EventStore, topic: str) -> None:
    closing = Publisher(store, make_producer(servers.kafka_bootstrap, "kit-close"), topic)
    closing.publish(append(store, new_id(), 0, 5))
    closing.close()  # graceful shutdown: no flush before it
    assert store.unpublished() == []
