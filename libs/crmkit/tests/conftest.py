"""Fixtures of the chassis tests: a database, a topic and Kafka helpers of each test's own.

The servers come from `crmkit.testing` (loaded by the root conftest.py). Async effects
(acknowledgements, consumer groups) are awaited with `eventually`, a bounded poll, never
a fixed sleep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any, TypeVar

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from pymongo import MongoClient
from pymongo.database import Database

from crmkit import projector, stack
from crmkit.events import new_id
from crmkit.eventstore import EventStore
from crmkit.publisher import Publisher, make_producer
from crmkit.testing import Servers, wait_until

SERVICE = "widgets"
T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 15.0, interval: float = 0.02, what: str = "") -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    return wait_until(check, timeout, what or str(check), interval=interval)


@pytest.fixture
def wait() -> Callable[..., Any]:
    return eventually


@pytest.fixture(scope="session")
def mongo(servers: Servers) -> Iterator[MongoClient]:
    client: MongoClient = MongoClient(servers.mongo_url, tz_aware=True, tzinfo=UTC, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture
def db(mongo: MongoClient) -> Iterator[Database]:
    name = "t_kit_" + new_id().replace("-", "")[-16:]
    yield mongo[name]
    mongo.drop_database(name)


@pytest.fixture
def store(db: Database) -> EventStore:
    events = EventStore(db, SERVICE)
    events.ensure_indexes()
    return events


def fresh_topic(bootstrap: str, partitions: int = 3) -> str:
    name = "t.kit." + new_id().replace("-", "")[-16:]
    stack.ensure_topics(bootstrap, [name], partitions=partitions)
    return name


@pytest.fixture
def topic(servers: Servers) -> str:
    return fresh_topic(servers.kafka_bootstrap)


@pytest.fixture
def publisher(store: EventStore, topic: str, servers: Servers) -> Iterator[Publisher]:
    pub = Publisher(store, make_producer(servers.kafka_bootstrap, "kit-test"), topic)
    yield pub
    pub.close()


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 15.0) -> list[Any]:
    """Every message of `topic` from the beginning, without a consumer group (waits for `count`)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=200)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        messages: list[Any] = []

        def enough() -> bool:
            for batch in consumer.poll(timeout_ms=100).values():
                messages.extend(batch)
            return len(messages) >= count

        eventually(enough, timeout, interval=0, what=f"{count} messages on {topic} (have {len(messages)})")
        for batch in consumer.poll(timeout_ms=100).values():  # anything beyond `count` shows up too
            messages.extend(batch)
        return messages
    finally:
        consumer.close()


@pytest.fixture
def fast_group_join(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tansu holds a JoinGroup for half the session timeout (5 s with the runner's 10 s).

    The behaviour under test does not depend on it, so the runner's consumers get a
    shorter session here to keep the suite fast; everything else is the runner's own.
    """
    real = projector.KafkaConsumer

    def consumer(*topics: str, **config: Any) -> KafkaConsumer:
        config.update(session_timeout_ms=2000, heartbeat_interval_ms=500)
        return real(*topics, **config)

    monkeypatch.setattr(projector, "KafkaConsumer", consumer)
