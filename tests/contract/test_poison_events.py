"""Poison on a service's topic: the contacts projection parks it and goes on; `crm deadletters`.

The contacts service runs in-process (REST through its Flask app); its events and the
forged records go over the real Kafka stand-in to a `ProjectorRunner`, as in the worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaProducer
from prometheus_client import REGISTRY

from crm_contacts.app import SERVICE
from crm_contacts.records.projections import ContactsView
from crmkit.cli import main
from crmkit.config import ProjectionPolicy
from crmkit.directory import LocalContacts
from crmkit.events import new_id, rfc3339, utcnow
from crmkit.projector import ProjectorRunner
from crmkit.testing import ServiceHarness, harness, wait_until

FAST = ProjectionPolicy(attempts=2, first_delay=0.01, max_delay=0.05)


@pytest.fixture
def contacts(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[ServiceHarness]:
    with harness(SERVICE, monkeypatch, service_env) as subject:
        yield subject


@pytest.fixture
def runner(contacts: ServiceHarness) -> Iterator[ProjectorRunner]:
    """The worker's `contacts` projector over this test's contacts topic."""
    [view] = [p for p in SERVICE.projections(contacts.runtime) if p.name == "contacts"]
    subject = ProjectorRunner(
        "contacts",
        view,
        contacts.runtime.settings.kafka_bootstrap,
        contacts.runtime.store.open,
        db=contacts.runtime.db,
        group_prefix=f"t{new_id()[-12:]}",
        policy=FAST,
    )
    yield subject
    subject.consumer.close()


def forge(contacts: ServiceHarness, **envelope: Any) -> dict[str, Any]:
    """Put a record on the contacts topic the way a misbehaving producer would."""
    record = {
        "specversion": "1.0",
        "id": new_id(),
        "source": "crm/contacts",
        "type": "crm.contacts.ContactUpdated.v1",
        "subject": new_id(),
        "time": rfc3339(utcnow()),
        "datacontenttype": "application/json",
        "data": {},
        "aggregatetype": "contact",
        "streamversion": 1,
        **envelope,
    }
    producer = KafkaProducer(bootstrap_servers=contacts.runtime.settings.kafka_bootstrap)
    producer.send(
        contacts.runtime.settings.topic, key=record["subject"].encode(), value=json.dumps(record).encode()
    ).get(timeout=10)
    producer.close()
    return record


def create(contacts: ServiceHarness, **body: Any) -> str:
    response = contacts.client.post("/v1/contacts", json=body, headers=contacts.headers())
    assert response.status_code == 201, response.get_json()
    contacts.runtime.flush()
    return response.get_json()["id"]


def listed(contacts: ServiceHarness) -> set[str]:
    body = contacts.client.get("/v1/contacts?limit=100", headers=contacts.headers()).get_json()
    return {item["id"] for item in body["items"]}


def parked(contacts: ServiceHarness) -> list[dict[str, Any]]:
    return list(contacts.runtime.db["deadletters"].find().sort("offset"))


@pytest.mark.usefixtures("fast_group_join")
def test_a_forged_contact_update_is_parked_and_contacts_created_after_it_are_listed(
    contacts: ServiceHarness,
    runner: ProjectorRunner,
) -> None:
    forged = forge(contacts)  # valid JSON, ContactUpdated.v1, a subject nobody knows, "data": {}
    sara = create(contacts, first_name="Sara", email="sara@example.com")
    wait_until(
        lambda: runner.poll_once() >= 0 and sara in listed(contacts),
        timeout=60,
        interval=0,
        what="the contact created after the forged record, listed",
    )
    [letter] = parked(contacts)
    assert json.loads(letter["envelope"]) == forged
    assert letter["topic"] == contacts.runtime.settings.topic and letter["projection"] == "contacts"
    assert isinstance(letter["partition"], int) and isinstance(letter["offset"], int)
    assert letter["error"]["class"] == "KeyError"


@pytest.fixture
def fast_group_join(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shorter consumer session, so the group join takes a second, not five (see libs/crmkit/tests)."""
    from crmkit import projector

    real = projector.KafkaConsumer
    monkeypatch.setattr(
        projector,
        "KafkaConsumer",
        lambda *topics, **config: real(*topics, **{**config, "session_timeout_ms": 2000, "heartbeat_interval_ms": 500}),
    )


@pytest.mark.usefixtures("fast_group_join")
def test_crm_deadletters_lists_retries_after_a_fix_and_drops(
    contacts: ServiceHarness,
    runner: ProjectorRunner,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    foreign = forge(contacts, source="crm/sales", type="crm.sales.DealWon.v1", aggregatetype="deal")
    with monkeypatch.context() as bug:  # a release whose contacts fold is broken
        bug.setattr(ContactsView, "document", lambda _self, contact: contact.first_name + 1)
        sara = create(contacts, first_name="Sara", email="sara@example.com")
        wait_until(
            lambda: runner.poll_once() >= 0 and len(parked(contacts)) == 2,
            timeout=60,
            interval=0,
            what="the foreign record and the contact the bug cannot fold, parked",
        )
    assert sara not in listed(contacts)

    assert main(["deadletters", "list", SERVICE.name]) == 0
    shown = capsys.readouterr().out
    assert shown.count("\n") == 2 and "crm.contacts.ContactCreated.v1" in shown and "TypeError" in shown
    assert "ForeignEvent" in shown and foreign["id"] in shown
    assert "Sara" not in shown and "sara@example.com" not in shown  # no personal data

    assert main(["deadletters", "retry", SERVICE.name]) == 1  # the fix is deployed; the foreign one still fails
    assert sara in listed(contacts)
    [left] = parked(contacts)
    assert json.loads(left["envelope"])["id"] == foreign["id"] and left["attempts"] == 2

    assert main(["deadletters", "drop", SERVICE.name, "--id", left["_id"]]) == 0
    assert parked(contacts) == []


class NoDirectory:
    """The contacts gRPC directory, answering that it knows nobody (erasures need no lookup)."""

    def many(self, contact_ids: Any) -> dict[str, Any]:
        return {}


@pytest.mark.usefixtures("fast_group_join")
def test_a_reaction_that_keeps_failing_is_parked_past_its_retries_and_the_others_are_applied(
    contacts: ServiceHarness,
) -> None:
    """Item 4 of issue 12, the runner's part: a failing erasure hook backs off, counts, then parks."""
    doomed, fine = create(contacts, first_name="Doomed"), create(contacts, first_name="Fine")
    for contact_id in (doomed, fine):
        response = contacts.client.post(f"/v1/contacts/{contact_id}/erasure", json={}, headers=contacts.headers())
        assert response.status_code == 200
    contacts.runtime.flush()
    reacted: list[str] = []

    def on_erased(contact_id: str) -> None:  # a service's erasure reaction with a bug for one person
        if contact_id == doomed:
            raise RuntimeError("cannot forget this one")
        reacted.append(contact_id)

    copies = contacts.runtime.db[f"sales_copies_{new_id()[-8:]}"]
    local = LocalContacts("sales-contacts", copies, NoDirectory(), on_erased=on_erased, service="sales")  # type: ignore[arg-type]
    local.topics = (contacts.runtime.settings.topic,)
    runner = ProjectorRunner(
        "sales",
        local,
        contacts.runtime.settings.kafka_bootstrap,
        lambda events: events,
        db=contacts.runtime.db,
        group_prefix=f"t{new_id()[-12:]}",
        policy=FAST,
    )
    retries_before = (
        REGISTRY.get_sample_value("crm_projection_retries_total", {"service": "sales", "projection": "sales-contacts"})
        or 0
    )
    try:
        wait_until(
            lambda: runner.poll_once() >= 0 and parked(contacts) and fine in reacted,
            timeout=60,
            interval=0,
            what="the failing reaction parked, the other applied",
        )
    finally:
        runner.consumer.close()
    [letter] = parked(contacts)
    assert letter["event"]["subject"] == doomed and letter["event"]["type"] == "crm.contacts.ContactErased.v1"
    assert letter["error"]["class"] == "ReactionsFailed" and letter["attempts"] == FAST.attempts
    assert copies.find_one({"_id": fine})["status"] == "erased"
    retries = (
        REGISTRY.get_sample_value("crm_projection_retries_total", {"service": "sales", "projection": "sales-contacts"})
        or 0
    )
    assert retries - retries_before == FAST.attempts - 1
