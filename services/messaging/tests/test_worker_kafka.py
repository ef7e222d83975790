"""The real messaging worker process over real Kafka: a DealWon CloudEvent on the sales
topic fires the welcome trigger exactly once, although the event comes twice and the
worker is killed (-9) and restarted in between."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes, policy

import pytest
from kafka import KafkaProducer

from crmkit import stack
from crmkit.events import RecordedEvent, new_id, rfc3339, utcnow
from crmkit.testing import stored_events, wait_until

from .conftest import Worker, World


def deal_won(contact_id: str) -> RecordedEvent:
    """A crm.sales.DealWon.v1 as the sales service records it (crm_sales.domain.Deal.win)."""
    deal_id = new_id()
    return RecordedEvent(
        id=new_id(),
        service="sales",
        stream_id=deal_id,
        aggregate_type="deal",
        version=4,
        type="DealWon",
        schema_version=1,
        time=utcnow(),
        actor="user:ana",
        correlation_id=new_id(),
        causation_id=None,
        data={
            "deal_id": deal_id,
            "contact_id": contact_id,
            "from": "negotiation",
            "amount": "1250.00",
            "currency": "USD",
            "at": rfc3339(utcnow()),
        },
    )


@pytest.fixture
def sales_topic(world: World, service_env: dict[str, str]) -> str:
    topic = f"t.sales.{service_env['CRM_TEST_SUFFIX']}"
    stack.ensure_topics(service_env["CRM_KAFKA_BOOTSTRAP"], [topic], partitions=1)  # one partition: ordered
    return topic


@pytest.fixture
def worker(world: World, sales_topic: str) -> Iterator[Worker]:
    subject = Worker(
        {
            "CRM_MESSAGING_TRIGGER_TOPICS": sales_topic,
            "CRM_SALES_TOPIC": sales_topic,
            "CRM_MESSAGING_METRICS_PORT": str(stack.free_port()),
            "CRM_LOG_LEVEL": "WARNING",
        }
    )
    try:
        yield subject
    finally:
        subject.stop()


def test_a_redelivered_deal_won_sends_one_welcome_across_a_worker_crash(
    world: World, worker: Worker, sales_topic: str, service_env: dict[str, str]
) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    omid = world.contact(first_name="Omid", email="omid@example.com")
    won, sentinel = deal_won(sara["id"]), deal_won(omid["id"])
    producer = KafkaProducer(bootstrap_servers=service_env["CRM_KAFKA_BOOTSTRAP"], acks="all")
    events = world.messaging.runtime.db["events"]

    def publish(event: RecordedEvent) -> None:
        producer.send(sales_topic, key=event.stream_id.encode(), value=event.to_bytes()).get(timeout=10)

    def messages_to(contact_id: str, kind: str) -> list[dict]:
        return [e for e in stored_events(events, type=kind) if e["data"]["contact_id"] == contact_id]

    def mails_to(address: str) -> int:
        return sum(message_from_bytes(p.read_bytes(), policy=policy.default)["To"] == address for p in world.mails())

    try:
        worker.start()
        publish(won)
        wait_until(lambda: messages_to(sara["id"], "MessageSent"), timeout=90, what="the welcome to be sent")
        worker.kill()  # no goodbye: offsets may or may not be committed
        publish(won)  # and the same event comes again
        worker.start()
        publish(won)
        publish(sentinel)  # after the repeats on the one partition: once it is sent, they were handled
        wait_until(lambda: messages_to(omid["id"], "MessageSent"), timeout=90, what="the sentinel welcome")
    finally:
        producer.close()
    [queued] = messages_to(sara["id"], "MessageQueued")
    assert queued["data"]["trigger_id"] == "trg-deal-won-welcome" and queued["data"]["template_id"] == "tpl-welcome"
    assert len(messages_to(sara["id"], "MessageSent")) == 1
    wait_until(lambda: mails_to("omid@example.com") == 1, timeout=10, what="the sentinel mail")
    assert mails_to("sara@example.com") == 1
