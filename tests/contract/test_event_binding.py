"""What a BI consumer relies on: structured-mode records, a `dataschema` that names a
published document, and documents open to additive change while the producer stays strict."""

import json
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_structured
from cloudevents.core.formats.json import JSONFormat
from jsonschema import Draft202012Validator
from kafka import KafkaConsumer

from crm_contacts.app import SERVICE
from crmkit.catalogue import EventSchemaError
from crmkit.events import KAFKA_CONTENT_TYPE, SCHEMA_BASE, Metadata, NewEvent, schema_uri
from crmkit.service import discover
from crmkit.testing import ServiceHarness, harness

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events"
SCHEMAS = sorted(DOCS.glob("*/*.schema.json"))


@pytest.fixture
def contacts(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    with harness(SERVICE, monkeypatch, service_env) as subject:
        yield subject


def closed_objects(schema: Any, where: str = "") -> list[str]:
    """Where in `schema` an object refuses names it does not list."""
    found = []
    if isinstance(schema, dict):
        if schema.get("additionalProperties") is False:
            found.append(where or "/")
        for key, value in schema.items():
            found += closed_objects(value, f"{where}/{key}")
    elif isinstance(schema, list):
        for index, item in enumerate(schema):
            found += closed_objects(item, f"{where}/{index}")
    return found


def test_every_published_schema_is_open_and_named_by_its_dataschema() -> None:
    assert len(SCHEMAS) > 40  # every service's events, not an empty folder
    for path in SCHEMAS:
        schema = json.loads(path.read_text())
        assert closed_objects(schema) == [], f"{path.relative_to(DOCS)} is closed there: run `make catalogue`"
        name, version = path.name.removesuffix(".schema.json").rsplit(".v", 1)
        uri = schema_uri(path.parent.name, name, int(version))
        assert schema["$id"] == uri
        assert schema["properties"]["dataschema"]["const"] == uri
        assert "dataschema" not in schema["required"]  # records published before it existed stay valid


def consume(contacts: ServiceHarness) -> list[Any]:
    settings = contacts.runtime.settings
    consumer = KafkaConsumer(
        settings.topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_records_resolve_their_dataschema_and_documents_accept_additions(contacts: ServiceHarness) -> None:
    headers = contacts.headers()
    company = contacts.client.post("/v1/companies", json={"name": "Acme"}, headers=headers).get_json()
    contacts.client.post(
        "/v1/contacts",
        headers=headers,
        json={"first_name": "Sara", "email": "sara@example.com", "company_id": company["id"]},
    )
    contacts.runtime.flush()
    records = consume(contacts)
    assert len(records) >= 2
    for record in records:
        assert dict(record.headers)["content-type"] == KAFKA_CONTENT_TYPE.encode()
        event = from_structured(KafkaMessage(dict(record.headers), record.key, record.value), JSONFormat())
        uri = event.get_dataschema()
        assert uri is not None and uri.startswith(SCHEMA_BASE)
        schema = json.loads((DOCS / uri.removeprefix(SCHEMA_BASE)).read_text())  # the URI names a committed file
        assert schema["$id"] == uri and schema["title"] == event.get_type()
        envelope = json.loads(record.value)
        validator = Draft202012Validator(schema)
        assert list(validator.iter_errors(envelope)) == []
        later = {**envelope, "traceparent": "00-ab-cd-01", "data": {**envelope["data"], "added_in_2027": True}}
        assert list(validator.iter_errors(later)) == [], "an additive change must not break a consumer's check"


def test_the_producer_still_refuses_a_field_the_catalogue_does_not_declare(contacts: ServiceHarness) -> None:
    created = discover()["contacts"].events.types[("ContactCreated", 1)]
    store = contacts.runtime.store
    with pytest.raises(EventSchemaError, match="surprise"):
        store.append("c1", "contact", 0, [NewEvent("ContactCreated", {**created.example, "surprise": 1})], Metadata())
    assert store.count() == 0
