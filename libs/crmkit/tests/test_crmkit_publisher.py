"""The outbox publisher against the Kafka-protocol broker: inline, sweeper and replay paths."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from crmkit import publisher as publisher_module
from crmkit.events import Metadata, NewEvent, RecordedEvent, new_id
from crmkit.eventstore import EventStore
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


def test_publish_of_nothing_sends_nothing(store: EventStore, publisher: Publisher, servers: Servers, topic: str
                                          ) -> None:
    publisher.publish([])
    publisher.flush()
    assert read_topic(servers.kafka_bootstrap, topic, 0) == []


def test_sweep_sends_what_a_crash_left_unpublished(
    servers: Servers, store: EventStore, publisher: Publisher, topic: str
) -> None:
    a, b = new_id(), new_id()
    orphaned = [*append(store, a, 0, 2), *append(store, b, 0, 1)]  # appended, then the process "died"
    published = append(store, a, 2, 1)
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


def test_publish_leaves_young_unpublished_events_to_their_own_sender(
    servers: Servers, store: EventStore, publisher: Publisher, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = new_id()
    in_flight = append(store, stream, 0, 1)  # another process is probably sending it right now
    newest = append(store, stream, 1, 1)
    pin_clock(monkeypatch, newest[0].time + timedelta(milliseconds=500))
    publisher.publish(newest, orphan_age=2.0)
    publisher.flush()
    assert by_key(read_topic(servers.kafka_bootstrap, topic, 1)) == {stream: [2]}
    assert store.unpublished() == in_flight


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
    events = append(store, new_id(), 0, 2)
    assert publisher.replay([events[:1], events[1:]]) == 2
    assert len(read_topic(servers.kafka_bootstrap, topic, 2)) == 2


def test_close_records_acknowledgements_of_sends_in_flight(servers: Servers, store: EventStore, topic: str) -> None:
    closing = Publisher(store, make_producer(servers.kafka_bootstrap, "kit-close"), topic)
    closing.publish(append(store, new_id(), 0, 5))
    closing.close()  # graceful shutdown: no flush before it
    assert store.unpublished() == []
