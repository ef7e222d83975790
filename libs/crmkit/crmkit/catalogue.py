"""The event catalogue: every event type a service emits, with a JSON Schema per version.

Services declare their events in code (`EventType`, derived from a typed event's class by
`EventType.of`: crmkit.domainevents); `crm catalogue` (run by
`make catalogue`) writes `docs/events/`: one JSON Schema per type and version for the
CloudEvent as it travels (personal fields sealed), and a page for people. With
`CRM_STRICT_EVENTS=1` (the test suite sets it) the event store refuses to append an
event whose type is not in the catalogue or whose data does not match its schema, so
the catalogue cannot drift from what is emitted.

Two readings of one schema. The producer's check is closed: a field the service's code
declares nowhere (`additionalProperties: false`) is a bug and is refused. The published
documents are open (every `additionalProperties: false` dropped): adding an optional
field keeps the version (docs/events-versioning.md), so a consumer validating with a
copy it fetched last year must still accept this year's events.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from crmkit.domainevents import DomainEvent, json_schema
from crmkit.events import RecordedEvent, schema_uri
from crmkit.settings import chassis

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SEALED = {
    "type": "object",
    "required": ["pii"],
    "additionalProperties": False,
    "properties": {"pii": {"type": "string", "description": "AES-256-GCM ciphertext under the person's key"}},
}


class EventSchemaError(ValueError):
    """An event the catalogue does not describe, or whose data breaks its schema."""


@dataclass(frozen=True)
class EventType:
    name: str
    version: int
    aggregate: str
    description: str
    data: dict[str, Any]  # JSON Schema of `data` as domain code sees it (personal fields in clear)
    example: dict[str, Any]
    personal: Sequence[str] = field(default=())  # dotted paths sealed on the wire
    kind: type[DomainEvent] | None = field(default=None, compare=False, repr=False)  # the typed event, if any

    @property
    def key(self) -> tuple[str, int]:
        return self.name, self.version

    @classmethod
    def of(cls, kind: type[DomainEvent], example: dict[str, Any]) -> EventType:
        """A typed event's entry, derived from its class: name, version, aggregate, meaning (the
        docstring), the JSON Schema of `data` (crmkit.domainevents.json_schema) and its personal
        fields; only the example is written here."""
        return cls(
            kind.wire_name,
            kind.schema_version,
            kind.aggregate_type,
            kind.meaning(),
            json_schema(kind),
            example,
            kind.personal_paths(),
            kind,
        )


class Catalogue:
    def __init__(self, service: str, title: str, types: Iterable[EventType]) -> None:
        self.service = service
        self.title = title
        self.types = {t.key: t for t in types}
        self._validators = {key: Draft202012Validator(t.data) for key, t in self.types.items()}
        for event_type in self.types.values():
            errors = self.errors_in(event_type.name, event_type.version, event_type.example)
            if errors:
                raise EventSchemaError(f"the example of {event_type.name} v{event_type.version}: {errors}")

    def errors_in(self, name: str, version: int, data: Mapping[str, Any]) -> list[str]:
        validator = self._validators.get((name, version))
        if validator is None:
            return [f"crm.{self.service}.{name}.v{version} is not in the catalogue"]
        return [f"{'.'.join(map(str, e.absolute_path)) or 'data'}: {e.message}" for e in validator.iter_errors(data)]

    def check(self, events: Sequence[RecordedEvent]) -> None:
        for event in events:
            errors = self.errors_in(event.type, event.schema_version, event.data)
            if errors:
                raise EventSchemaError(f"{event.full_type}: {'; '.join(errors)}")

    def wire_schema(self, event_type: EventType) -> dict[str, Any]:
        """The whole CloudEvent as consumers receive it: envelope, and data with personal fields sealed."""
        data = copy.deepcopy(event_type.data)
        for path in event_type.personal:
            _seal_in_schema(data, path.split("."))
        full_type = f"crm.{self.service}.{event_type.name}.v{event_type.version}"
        uri = schema_uri(self.service, event_type.name, event_type.version)
        schema: dict[str, Any] = opened(
            {
                "$schema": DIALECT,
                "$id": uri,
                "title": full_type,
                "description": event_type.description,
                "type": "object",
                "required": [
                    "specversion",
                    "id",
                    "source",
                    "type",
                    "subject",
                    "time",
                    "datacontenttype",
                    "data",
                    "aggregatetype",
                    "streamversion",
                    "correlationid",
                    "actor",
                ],
                "properties": {
                    "specversion": {"const": "1.0"},
                    "id": {"type": "string", "description": "unique event id: dedupe by it"},
                    "source": {"const": f"crm/{self.service}"},
                    "type": {"const": full_type},
                    "subject": {"type": "string", "description": f"the {event_type.aggregate} id (also the Kafka key)"},
                    "time": {"type": "string", "format": "date-time"},
                    "datacontenttype": {"const": "application/json"},
                    "dataschema": {
                        "const": uri,
                        "format": "uri",
                        "description": "this schema's $id; absent on events published before it was added",
                    },
                    "aggregatetype": {"const": event_type.aggregate},
                    "streamversion": {"type": "integer", "minimum": 1},
                    "correlationid": {"type": "string"},
                    "causationid": {"type": ["string", "null"]},
                    "actor": {"type": "string"},
                    "data": data,
                },
            }
        )
        return schema


def opened(schema: Any) -> Any:
    """`schema` without `additionalProperties: false` anywhere: tolerant readers, additive change.

    A schema-valued `additionalProperties` (the values of a free-form map) stays: it says
    what a value may be, not which names may appear.
    """
    if isinstance(schema, dict):
        return {
            key: opened(value)
            for key, value in schema.items()
            if not (key == "additionalProperties" and value is False)
        }
    if isinstance(schema, list):
        return [opened(item) for item in schema]
    return schema


def _seal_in_schema(schema: dict[str, Any], path: list[str]) -> None:
    """Mark `path` sealed; an array on the way is stepped into (its items), as crmkit.shredding does."""
    node = schema
    for name in path[:-1]:
        node = node.get("properties", {}).get(name, {})
        node = node.get("items", node) if node.get("type") == "array" else node
    properties = node.get("properties", {})
    if path[-1] in properties:
        properties[path[-1]] = {
            "anyOf": [SEALED, {"type": "null"}],
            "description": "personal data, sealed with the person's key; null once erased",
        }


def strict() -> bool:
    return chassis().strict_events


def write_docs(catalogues: Sequence[Catalogue], folder: Path) -> list[Path]:
    """Write every schema and the human page; returns the files written."""
    written = []
    for catalogue in catalogues:
        for event_type in sorted(catalogue.types.values(), key=lambda t: t.key):
            path = folder / catalogue.service / f"{event_type.name}.v{event_type.version}.schema.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(catalogue.wire_schema(event_type), indent=2, ensure_ascii=False) + "\n")
            written.append(path)
    page = folder / "README.md"
    page.write_text(render_page(catalogues))
    written.append(page)
    return written


def render_page(catalogues: Sequence[Catalogue]) -> str:
    lines = [
        "# Event catalogue",
        "",
        "Generated by `make catalogue` from the services' code; do not edit by hand. One JSON Schema per",
        "event type and version sits beside this page (`<service>/<Type>.v<N>.schema.json`), describing the",
        "whole CloudEvent as it travels on Kafka. Every event is keyed by its `subject` (the aggregate id);",
        "delivery is at least once, so dedupe by `id` (or `subject` + `streamversion`). Fields marked",
        '*personal* are sealed (`{"pii": ...}`) with the person\'s key and become unreadable after erasure.',
        "Each record's value is the whole CloudEvent and its header `content-type` is",
        "`application/cloudevents+json; charset=UTF-8` (structured mode of the CloudEvents Kafka binding);",
        "its `dataschema` is the `$id` of its schema here, `https://crm.example/events/<service>/<Type>.v<N>.schema.json`.",
        "The schemas are open: they list every field we emit today and allow fields added later, which keep",
        "the version. How versions evolve: docs/events-versioning.md.",
        "",
    ]
    for catalogue in catalogues:
        lines += [f"## {catalogue.title} — topic `crm.{catalogue.service}.events`", ""]
        lines += ["| type | aggregate | meaning |", "| --- | --- | --- |"]
        for event_type in sorted(catalogue.types.values(), key=lambda t: t.key):
            full = f"crm.{catalogue.service}.{event_type.name}.v{event_type.version}"
            lines.append(f"| `{full}` | {event_type.aggregate} | {event_type.description} |")
        lines.append("")
        for event_type in sorted(catalogue.types.values(), key=lambda t: t.key):
            personal = ", ".join(f"`{p}`" for p in event_type.personal) or "none"
            lines += [
                f"### {event_type.name} v{event_type.version}",
                "",
                event_type.description,
                "",
                f"- producer: {catalogue.service}; key: the {event_type.aggregate} id; personal fields: {personal}",
                f"- schema: [{catalogue.service}/{event_type.name}.v{event_type.version}.schema.json]"
                f"({catalogue.service}/{event_type.name}.v{event_type.version}.schema.json)",
                "",
                "```json",
                json.dumps(event_type.example, indent=2, ensure_ascii=False),
                "```",
                "",
            ]
    return "\n".join(lines)
