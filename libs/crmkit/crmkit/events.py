"""Events as the rest of the platform sees them: recorded facts in a CloudEvents envelope.

An aggregate decides `NewEvent`s; the event store turns them into `RecordedEvent`s (id,
stream version, time, causality); the publisher puts them on Kafka as CloudEvents 1.0
structured JSON exactly as contract.md fixes, and consumers turn them back.
Old shapes are upcast on the way in, so domain code only ever sees the newest version.

On Kafka each event is one record in the structured mode of the CloudEvents Kafka
binding: the value is the whole envelope, the header `content-type` says so
(`KAFKA_CONTENT_TYPE`), and `dataschema` names the event's schema in docs/events.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

KAFKA_CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"  # contract.md, structured mode
# Schemas are named, not fetched: the `$id` of docs/events/<service>/<Type>.v<N>.schema.json.
# The `.example` domain is reserved (RFC 2606), so the name never resolves to anyone's page.
SCHEMA_BASE = "https://crm.example/events/"


def schema_uri(service: str, name: str, version: int) -> str:
    """The `dataschema` of an event type and version: its catalogue schema's `$id`.

    A path under SCHEMA_BASE mirrors the file under docs/events, so a consumer maps one
    to the other by dropping the base. CloudEvents requires an absolute URI here.
    """
    return f"{SCHEMA_BASE}{service}/{name}.v{version}.schema.json"


def utcnow() -> datetime:
    """Now, in UTC, truncated to milliseconds: the precision MongoDB keeps."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 UTC with millisecond precision and a `Z`."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time into an aware UTC datetime (raises ValueError)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("time must carry a zone offset")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 has no UTC equivalent
        raise ValueError("time out of range") from None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch: the form time ranges are queried in.

    nx-27017 compares stored datetimes at whole-second precision (tests/compat pins
    it), so "as of 12:00:00.120" would include an event of 12:00:00.900. Integers
    compare exactly on every server.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)


def text_ms(text: str | None) -> int | None:
    """An RFC 3339 time (as events and views carry them) in epoch milliseconds; None stays None."""
    return epoch_ms(parse_time(text)) if text else None


def new_id() -> str:
    """A UUIDv7: unique, and sortable by creation time, so ids double as cursor keys."""
    millis = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10))  # 74 of these 80 bits are used; one call: each cost ~0.1 ms here
    value = (millis & (2**48 - 1)) << 80 | 0x7 << 76 | (random >> 62 & 0xFFF) << 64
    value |= 0b10 << 62 | random & (2**62 - 1)
    return str(uuid.UUID(int=value))


@dataclass(frozen=True)
class NewEvent:
    """A fact an aggregate has decided, before it is stored."""

    type: str
    data: dict[str, Any]
    schema_version: int = 1


@dataclass(frozen=True)
class Metadata:
    """Who caused a change and as part of which request (the envelope's extensions)."""

    actor: str = "system"
    correlation_id: str = field(default_factory=new_id)
    causation_id: str | None = None


@dataclass(frozen=True)
class RecordedEvent:
    """A stored event: the unit the store, the publisher and projectors exchange."""

    id: str
    service: str
    stream_id: str
    aggregate_type: str
    version: int
    type: str
    schema_version: int
    data: dict[str, Any]
    time: datetime
    actor: str
    correlation_id: str
    causation_id: str | None
    # The stream version that begins the stored commit holding this event (one decision's
    # events are one commit, crmkit.eventstore): the outbox marks whole commits published.
    # Not on the wire; 0 for an event read off Kafka.
    commit: int = field(default=0, compare=False, repr=False)

    @property
    def full_type(self) -> str:
        return f"crm.{self.service}.{self.type}.v{self.schema_version}"

    @property
    def dataschema(self) -> str:
        return schema_uri(self.service, self.type, self.schema_version)

    def to_cloudevent(self) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": self.id,
            "source": f"crm/{self.service}",
            "type": self.full_type,
            "subject": self.stream_id,
            "time": rfc3339(self.time),
            "datacontenttype": "application/json",
            "dataschema": self.dataschema,
            "data": self.data,
            "aggregatetype": self.aggregate_type,
            "streamversion": self.version,
            "correlationid": self.correlation_id,
            "causationid": self.causation_id,
            "actor": self.actor,
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_cloudevent(), ensure_ascii=False, separators=(",", ":")).encode()

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """The headers of this event's Kafka record: structured mode, the value is the envelope."""
        return [("content-type", KAFKA_CONTENT_TYPE.encode())]

    @classmethod
    def from_cloudevent(cls, envelope: dict[str, Any]) -> RecordedEvent:
        """Rebuild a recorded event from its envelope; raises ValueError when it is not ours.

        `dataschema` is accepted and not kept: it follows from `type` (an event recorded
        before it was added has none), and the upcasters, not the reader, decide the shape.
        """
        try:
            prefix, service, name, version = envelope["type"].split(".")
            if prefix != "crm" or not version.startswith("v"):
                raise ValueError(envelope["type"])
            return cls(
                id=envelope["id"],
                service=service,
                stream_id=envelope["subject"],
                aggregate_type=envelope["aggregatetype"],
                version=int(envelope["streamversion"]),
                type=name,
                schema_version=int(version[1:]),
                data=envelope.get("data") or {},
                time=parse_time(envelope["time"]),
                actor=envelope.get("actor") or "system",
                correlation_id=envelope.get("correlationid") or envelope["id"],
                causation_id=envelope.get("causationid"),
            )
        except (KeyError, AttributeError, TypeError) as exc:
            raise ValueError(f"not a CRM CloudEvent: {exc}") from exc

    @classmethod
    def from_bytes(cls, raw: bytes) -> RecordedEvent:
        return cls.from_cloudevent(json.loads(raw))


Upcast = Callable[[dict[str, Any]], dict[str, Any]]


class Upcasters:
    """Turns old event shapes into the newest one as events are read.

    Register one function per (event type, from-version); reading chains them, so a v1
    event passes v1→v2→v3. History is never rewritten: stored events keep their shape.
    """

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcast] = {}

    def register(self, event_type: str, from_version: int) -> Callable[[Upcast], Upcast]:
        def decorate(step: Upcast) -> Upcast:
            self._steps[(event_type, from_version)] = step
            return step

        return decorate

    def upcast(self, event: RecordedEvent) -> RecordedEvent:
        while (step := self._steps.get((event.type, event.schema_version))) is not None:
            event = replace(event, data=step(dict(event.data)), schema_version=event.schema_version + 1)
        return event

    def upcast_all(self, events: Iterable[RecordedEvent]) -> list[RecordedEvent]:
        return [self.upcast(event) for event in events]
