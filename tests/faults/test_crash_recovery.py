"""Kill processes at the worst moments and check that no event is lost or doubled.

These run the real `worker` process (`crm serve contacts worker`) against the local
servers and kill processes with SIGKILL, so nothing gets a chance to clean up.
"""

import json
import signal
import subprocess
import sys
import textwrap

import pytest
from kafka import KafkaConsumer

from crm_contacts.app import SERVICE
from crmkit import stack
from crmkit.testing import ServiceHarness, harness, start_service_process, wait_until

CRASH_AFTER_APPEND = textwrap.dedent("""
    import os, signal
    from crm_contacts.app import SERVICE
    from crm_contacts.records.commands import ContactBook
    from crmkit.events import Metadata

    runtime = SERVICE.runtime()
    runtime.publish = lambda events: os.kill(os.getpid(), signal.SIGKILL)  # die right after the commit
    ContactBook(runtime).create_contact({"first_name": "Orphan", "email": "orphan@example.com"}, Metadata())
""")


@pytest.fixture
def contacts(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CRM_CONTACTS_METRICS_PORT", str(stack.free_port()))
    with harness(SERVICE, monkeypatch, service_env) as subject:
        yield subject


def topic_messages(contacts: ServiceHarness) -> list[dict]:
    settings = contacts.runtime.settings
    consumer = KafkaConsumer(
        settings.topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    try:
        return [json.loads(message.value) for message in consumer]
    finally:
        consumer.close()


def read_model(contacts: ServiceHarness) -> dict[str, int]:
    return {doc["_id"]: doc["version"] for doc in contacts.runtime.db["contacts"].find({}, {"version": 1})}


def test_an_event_committed_by_a_process_that_died_before_publishing_is_published_by_the_worker(
    contacts: ServiceHarness,
) -> None:
    crashed = subprocess.run([sys.executable, "-c", CRASH_AFTER_APPEND], check=False)
    assert crashed.returncode == -signal.SIGKILL
    orphans = contacts.runtime.store.unpublished()
    assert [e.type for e in orphans] == ["ContactCreated"]
    assert topic_messages(contacts) == []

    worker = start_service_process("contacts", "worker", {})
    try:
        wait_until(lambda: not contacts.runtime.store.unpublished(), what="the sweeper to publish the orphan")
        wait_until(lambda: read_model(contacts) == {orphans[0].stream_id: 1}, what="the projection")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0  # graceful shutdown finishes cleanly
    sent = [m for m in topic_messages(contacts) if m["subject"] == orphans[0].stream_id]
    assert [m["id"] for m in sent] == [orphans[0].id]


def test_killing_the_worker_mid_projection_loses_and_doubles_nothing(contacts: ServiceHarness) -> None:
    headers = contacts.headers()
    ids = []
    for n in range(60):
        response = contacts.client.post("/v1/contacts", json={"first_name": f"C{n}"}, headers=headers)
        ids.append(response.get_json()["id"])
        if n % 3 == 0:
            contacts.client.patch(f"/v1/contacts/{ids[-1]}", json={"last_name": "x"}, headers=headers)
    expected = {cid: (2 if n % 3 == 0 else 1) for n, cid in enumerate(ids)}
    contacts.runtime.flush()

    worker = start_service_process("contacts", "worker", {"CRM_PROJECTOR_BATCH": "5"})  # small batches: die mid-way
    wait_until(lambda: len(read_model(contacts)) > 0, what="the projection to start")
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)

    restarted = start_service_process("contacts", "worker", {})
    try:
        wait_until(lambda: read_model(contacts) == expected, timeout=60, what="the read model to catch up")
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=60)
    assert contacts.runtime.db["contacts"].count_documents({}) == len(ids)
