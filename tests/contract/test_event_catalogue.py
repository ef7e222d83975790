"""The event catalogue is generated from code, matches what is emitted, and evolves safely."""

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from kafka import KafkaConsumer

from crm_contacts.app import SERVICE
from crmkit import catalogue
from crmkit.catalogue import EventSchemaError
from crmkit.events import Metadata, NewEvent
from crmkit.service import discover
from crmkit.testing import ServiceHarness, harness

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events"


@pytest.fixture
def contacts(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    with harness(SERVICE, monkeypatch, service_env) as subject:
        yield subject


def test_docs_events_is_what_make_catalogue_writes(tmp_path: Path) -> None:
    catalogues = [spec.events for _, spec in sorted(discover().items()) if spec.events is not None]
    written = catalogue.write_docs(catalogues, tmp_path)
    for path in written:
        committed = DOCS / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run `make catalogue`"
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run `make catalogue`"


def test_every_event_on_the_wire_matches_its_published_schema(contacts: ServiceHarness) -> None:
    headers = contacts.headers()
    company = contacts.client.post("/v1/companies", json={"name": "Acme"}, headers=headers).get_json()
    a = contacts.client.post(
        "/v1/contacts",
        headers=headers,
        json={"first_name": "Sara", "email": "sara@example.com", "company_id": company["id"], "locale": "fa-IR"},
    ).get_json()
    b = contacts.client.post("/v1/contacts", json={"last_name": "Ahmadi"}, headers=headers).get_json()
    contacts.client.patch(
        f"/v1/contacts/{a['id']}", json={"lifecycle_stage": "customer", "tags": ["x"]}, headers=headers
    )
    contacts.client.put(f"/v1/contacts/{a['id']}/consents/email", json={"status": "granted"}, headers=headers)
    contacts.client.post(f"/v1/contacts/{a['id']}/merge", json={"duplicate_id": b["id"]}, headers=headers)
    contacts.client.post(
        "/v1/segments",
        headers=headers,
        json={"name": "Customers", "rules": {"all": [{"field": "lifecycle_stage", "op": "eq", "value": "customer"}]}},
    )
    contacts.client.post(f"/v1/contacts/{a['id']}/erasure", json={}, headers=headers)
    contacts.runtime.flush()
    settings = contacts.runtime.settings
    consumer = KafkaConsumer(
        settings.topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    envelopes = [json.loads(message.value) for message in consumer]
    consumer.close()
    seen = set()
    for envelope in envelopes:
        _, service, name, version = envelope["type"].split(".")
        schema = json.loads((DOCS / service / f"{name}.{version}.schema.json").read_text())
        errors = [e.message for e in Draft202012Validator(schema).iter_errors(envelope)]
        assert errors == [], (envelope["type"], errors)
        seen.add(name)
    assert seen >= {
        "CompanyCreated",
        "ContactCreated",
        "ContactLifecycleStageChanged",
        "ContactUpdated",
        "ContactConsentChanged",
        "ContactDuplicateAbsorbed",
        "ContactMerged",
        "ContactErased",
        "SegmentDefined",
    }


def test_an_undocumented_or_malformed_event_is_refused(contacts: ServiceHarness) -> None:
    store = contacts.runtime.store
    with pytest.raises(EventSchemaError, match="not in the catalogue"):
        store.append("c1", "contact", 0, [NewEvent("ContactTeleported", {"contact_id": "c1"})], Metadata())
    with pytest.raises(EventSchemaError, match="lifecycle_stage"):
        store.append(
            "c1",
            "contact",
            0,
            [NewEvent("ContactCreated", {"contact_id": "c1", "tags": [], "attributes": {}})],
            Metadata(),
        )
    assert store.count() == 0


def test_a_v1_event_stored_long_ago_is_read_as_v2(contacts: ServiceHarness) -> None:
    store = contacts.runtime.store
    created = {
        "contact_id": "c1",
        "first_name": "Old",
        "last_name": None,
        "email": None,
        "phone": None,
        "company_id": None,
        "tags": [],
        "attributes": {},
        "owner": None,
        "lifecycle_stage": "lead",
        "locale": None,
        "time_zone": None,
    }
    store.append(
        "c1",
        "contact",
        0,
        [
            NewEvent("ContactCreated", created),
            NewEvent(
                "ContactLifecycleStageChanged",
                {"contact_id": "c1", "from": "lead", "to": "customer", "cause": "manual:user:ana"},
            ),
        ],
        Metadata(),
    )
    events = store.load("c1")
    assert events[1].schema_version == 2
    assert events[1].data["cause"] == {"kind": "manual", "by": "user:ana"}
    contact = contacts.client.get("/v1/contacts/c1/history", headers=contacts.headers()).get_json()
    assert contact["items"][1]["changes"]["lifecycle_stage"] == {"before": "lead", "after": "customer"}
