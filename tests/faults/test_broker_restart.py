"""A broker that comes back empty (Tansu is memory-only; a new cluster behind the same
address) must not stop a running process from publishing: what it commits afterwards
still reaches the topic, through the inline path or the sweeper.

The fault suite (test_fault_suite.py) found the opposite: after the broker restart, the
workers' long-lived idempotent producers failed every send (UnknownProducerIdError, then
a fatal InitProducerId or expired batches) and the outbox never drained. This is the
same fault on one runtime, without the rest of the stack.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.errors import KafkaTimeoutError

from crm_contacts.app import SERVICE
from crmkit import stack
from crmkit.projector import read_topics
from crmkit.testing import ServiceHarness, harness, wait_until


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[dict]:
    """A broker of this test's own (the session's must not be killed), on a free port."""
    port = stack.free_port()
    state = {"port": port, "process": stack.start_kafka(port, tmp_path / "log"), "log": tmp_path / "log"}
    try:
        yield state
    finally:
        stack.stop_process(state["process"])


@pytest.fixture
def contacts(broker: dict, service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[ServiceHarness]:
    monkeypatch.setenv("CRM_KAFKA_BOOTSTRAP", f"127.0.0.1:{broker['port']}")
    with harness(SERVICE, monkeypatch, service_env) as subject:
        yield subject


def create_contact(contacts: ServiceHarness, name: str) -> str:
    response = contacts.client.post("/v1/contacts", json={"first_name": name}, headers=contacts.headers())
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def drained(contacts: ServiceHarness) -> bool:
    """Whether the outbox is empty, after one sweep (what the worker's sweeper does every second)."""
    contacts.runtime.publisher.sweep(min_age=0)
    try:
        contacts.runtime.publisher.flush(timeout=5)
    except KafkaTimeoutError:
        return False  # the old producer did not answer: the next sweep goes through a new one
    return not contacts.runtime.store.unpublished()


def test_a_running_process_publishes_again_after_the_broker_restarts_empty(
    contacts: ServiceHarness, broker: dict
) -> None:
    before = create_contact(contacts, "Before")
    contacts.runtime.flush()
    assert not contacts.runtime.store.unpublished()  # the producer is connected, with acknowledged sends

    broker["process"].send_signal(signal.SIGKILL)
    broker["process"].wait(timeout=30)
    broker["process"] = stack.start_kafka(broker["port"], broker["log"])
    bootstrap, topic = contacts.runtime.settings.kafka_bootstrap, contacts.runtime.settings.topic
    stack.ensure_topics(bootstrap, [topic])

    after = create_contact(contacts, "After")
    wait_until(lambda: drained(contacts), timeout=90, interval=1, what="the outbox to drain after the restart")
    on_topic = {event.stream_id for batch in read_topics(bootstrap, [topic]) for event in batch}
    assert after in on_topic and before not in on_topic  # the new broker got the new event (and no replay yet)
