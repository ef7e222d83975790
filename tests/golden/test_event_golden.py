"""Golden files of every event on the wire: what the store keeps and what Kafka carries.

For each event type and version of every service's catalogue, its catalogue example is
appended through the real `EventStore` (checked against the catalogue, personal fields
sealed by `PersonalData` with a real data key) into an in-memory collection, and published
as the `Publisher` sends it (key, headers, CloudEvent value). Both are compared with
`tests/golden/events/<service>/<Type>.v<N>.json` after the parts that differ on every run
are normalised: ids, times and ciphertexts (whose form, `v2.<key id>.<base64>`, is checked).
A typed event's example goes through its class first (`from_data`, then `data()`, what the
aggregate records), so a refactoring of how events are declared (typed events, issue 15)
cannot change a byte of what consumers and the store see without this test saying which.

The files change only on purpose: `CRM_GOLDEN_UPDATE=1 .venv/bin/pytest tests/golden` rewrites
them (a new event type or version needs one), and the diff is reviewed like code.
No servers: the collections are dictionaries.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crmkit.catalogue import Catalogue, EventType
from crmkit.events import Metadata, NewEvent, RecordedEvent
from crmkit.eventstore import EventStore
from crmkit.service import ServiceSpec, discover
from crmkit.shredding import KeyVault, PersonalData

GOLDEN = Path(__file__).resolve().parent / "events"
UPDATE = os.environ.get("CRM_GOLDEN_UPDATE") == "1"
STREAM = "01golden-0000-7000-8000-000000000001"
META = Metadata(actor="user:golden", correlation_id="golden-correlation", causation_id="golden-cause")
SEALED = re.compile(r"^v2\.[A-Za-z0-9_-]+\.[A-Za-z0-9_=-]+$")


class Collection:
    """The few collection calls the event store and the key vault make, over a dict by `_id`."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}

    def insert_many(self, documents: list[dict[str, Any]], ordered: bool = True) -> None:
        for document in documents:
            assert document["_id"] not in self.documents
            self.documents[document["_id"]] = document

    def find_one(self, query: dict[str, Any]) -> dict[str, Any] | None:
        return self.documents.get(query["_id"])

    def find(self, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return (doc for key in query["_id"]["$in"] if (doc := self.documents.get(key)) is not None and "key" in doc)


class Database(dict[str, Collection]):
    def __missing__(self, name: str) -> Collection:
        self[name] = Collection()
        return self[name]


def _cases() -> list[Any]:
    return [
        pytest.param(spec, event_type, id=f"{spec.events.service}/{event_type.name}.v{event_type.version}")
        for _, spec in sorted(discover().items())
        if spec.events is not None
        for event_type in sorted(spec.events.types.values(), key=lambda t: t.key)
    ]


def _store(spec: ServiceSpec, catalogue: Catalogue) -> EventStore:
    db = Database()
    personal = PersonalData(KeyVault(db["data_keys"]), spec.personal_fields) if spec.personal_fields else None
    store = EventStore(db, catalogue.service, spec.upcasters, personal, spec.references)  # type: ignore[arg-type]
    store.catalogue = catalogue
    return store


def _normalised(value: Any) -> Any:
    """Ids, times and ciphertexts replaced by what they stand for, after checking each one's form."""
    if isinstance(value, dict):
        if set(value) == {"pii"}:
            assert SEALED.match(value["pii"]), value
            return {"pii": "v2.<key id>.<ciphertext>"}
        return {key: _field(key, item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalised(item) for item in value]
    return value


def _field(key: str, value: Any) -> Any:
    if key in ("event_id", "id") and isinstance(value, str) and re.fullmatch(r"[0-9a-f-]{36}", value):
        return "<event id>"
    if key == "time":
        assert hasattr(value, "tzinfo") or re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", value), value
        return "<time>"
    if key == "time_ms":
        assert isinstance(value, int)
        return "<time ms>"
    return _normalised(value)


def _wire(spec: ServiceSpec, event_type: EventType) -> tuple[dict[str, Any], list[RecordedEvent], EventStore]:
    catalogue = spec.events
    assert catalogue is not None
    store = _store(spec, catalogue)
    data = json.loads(json.dumps(event_type.example))
    if event_type.kind is not None:  # a typed event: what its object records from the same data
        data = event_type.kind.from_data(data).data()
    event = NewEvent(event_type.name, data, event_type.version)
    recorded = store.append(STREAM, event_type.aggregate, 0, [event], META)
    [stored] = store.events.documents.values()  # type: ignore[attr-defined]
    published = [
        {
            "key": e.stream_id,
            "headers": {k: v.decode() for k, v in e.kafka_headers()},
            "value": json.loads(e.to_bytes()),
        }
        for e in recorded
    ]
    return {"stored": _normalised(stored), "published": _normalised(published)}, recorded, store


@pytest.mark.parametrize(("spec", "event_type"), _cases())
def test_stored_and_published_event_matches_its_golden_file(
    spec: ServiceSpec, event_type: EventType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_STRICT_EVENTS", "1")  # the store checks the event against the catalogue
    wire, recorded, store = _wire(spec, event_type)
    path = GOLDEN / spec.events.service / f"{event_type.name}.v{event_type.version}.json"  # type: ignore[union-attr]
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(wire, indent=2, ensure_ascii=False, sort_keys=False) + "\n")
    assert path.exists(), f"{path} is missing: CRM_GOLDEN_UPDATE=1 writes it (review the diff)"
    assert json.loads(path.read_text()) == wire, f"{path}: the stored or published event changed"
    assert path.read_text() == json.dumps(wire, indent=2, ensure_ascii=False) + "\n", f"{path}: key order changed"
    # and it reads back as it was decided: personal fields open again, old versions upcast
    [read] = store.open(recorded)
    assert read.data == store.upcasters.upcast(RecordedEvent(**{**vars(recorded[0]), "data": event_type.example})).data


def test_every_golden_file_belongs_to_an_event_type() -> None:
    known = {
        f"{spec.events.service}/{t.name}.v{t.version}.json"
        for _, spec in discover().items()
        if spec.events is not None
        for t in spec.events.types.values()
    }
    files = {str(path.relative_to(GOLDEN)) for path in GOLDEN.rglob("*.json")}
    assert files <= known, f"golden files of no event type: {sorted(files - known)}"
