"""The runtime's promise to requests: committing never waits for Kafka, even while the
process's producer is still trying to reach a broker that does not answer."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from pymongo.database import Database

from crmkit.config import Ports, Settings
from crmkit.events import RecordedEvent, new_id, utcnow
from crmkit.runtime import Runtime
from crmkit.testing import Servers, wait_until


@pytest.fixture
def silent_broker() -> Iterator[socket.socket]:
    """A port that accepts connections and never answers: a hung Kafka."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener
    listener.close()


def event() -> RecordedEvent:
    return RecordedEvent(
        id=new_id(),
        service="widgets",
        stream_id=new_id(),
        aggregate_type="widget",
        version=1,
        type="WidgetMade",
        schema_version=1,
        data={},
        time=utcnow(),
        actor="test",
        correlation_id="c",
        causation_id=None,
    )


def test_publishing_does_not_wait_while_the_producer_connects_to_a_hung_broker(
    servers: Servers, db: Database, silent_broker: socket.socket
) -> None:
    port = silent_broker.getsockname()[1]
    runtime = Runtime(
        Settings(
            service="widgets",
            slug="widgets",
            kafka_bootstrap=f"127.0.0.1:{port}",
            group_prefix="crm",
            mongo_url=servers.mongo_url,
            database=db.name,
            topic="t.widgets",
            ports=Ports(0, 0, 0),
            log_level="WARNING",
            environment="test",
        )
    )
    try:
        runtime.publish([event()])  # the sender starts and blocks building a producer against the silent port
        wait_until(lambda: runtime._lock.locked(), timeout=10, what="the sender to be connecting")
        second = threading.Thread(target=runtime.publish, args=([event()],))
        second.start()
        second.join(timeout=5)
        assert not second.is_alive(), "a request's publish waited for Kafka"
        assert runtime._lock.locked()  # the producer was still connecting all along
    finally:
        runtime.close()
