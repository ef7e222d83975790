"""Records on Kafka are CloudEvents in the structured mode of the Kafka binding, as a
consumer using the CloudEvents SDK (not our own code) reads them off a real topic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka, from_structured
from cloudevents.core.formats.json import JSONFormat

from crmkit.events import KAFKA_CONTENT_TYPE, Metadata, NewEvent, RecordedEvent, new_id, schema_uri
from crmkit.eventstore import EventStore
from crmkit.publisher import Publisher
from crmkit.testing import Servers

from .conftest import read_topic

META = Metadata(actor="user:alice", correlation_id="corr-7", causation_id="cause-7")
WHEN = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)


def sdk_message(record: Any) -> KafkaMessage:
    """A kafka-python record as the SDK's binding takes it (header names are unique here)."""
    return KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)


def assert_structured_cloudevent(record: Any, event: RecordedEvent) -> None:
    headers = dict(record.headers)
    assert headers.get("content-type") == KAFKA_CONTENT_TYPE.encode()
    assert not [name for name in headers if name.lower().startswith("ce_")]  # no binary-mode attributes
    decoded = from_structured(sdk_message(record), JSONFormat())
    assert decoded.get_specversion() == "1.0"
    assert decoded.get_id() == event.id
    assert decoded.get_source() == f"crm/{event.service}"
    assert decoded.get_type() == event.full_type
    assert decoded.get_subject() == event.stream_id
    assert decoded.get_time() == event.time
    assert decoded.get_datacontenttype() == "application/json"  # the data's type; the header is the envelope's
    assert decoded.get_dataschema() == schema_uri(event.service, event.type, event.schema_version)
    assert decoded.get_data() == event.data
    assert decoded.get_extension("partitionkey") == event.stream_id  # the binding reads the record key
    extensions = {
        name: decoded.get_extension(name)
        for name in ("aggregatetype", "streamversion", "correlationid", "causationid", "actor")
    }
    assert extensions == {
        "aggregatetype": event.aggregate_type,
        "streamversion": event.version,
        "correlationid": event.correlation_id,
        "causationid": event.causation_id,
        "actor": event.actor,
    }
    auto = from_kafka(sdk_message(record), JSONFormat())  # the SDK's own mode detection agrees
    assert auto.get_id() == event.id and auto.get_dataschema() == decoded.get_dataschema()


def test_published_and_replayed_records_are_structured_cloudevents(
    servers: Servers, store: EventStore, publisher: Publisher, topic: str
) -> None:
    stream = new_id()
    events = store.append(
        stream,
        "Widget",
        0,
        [NewEvent("WidgetMade", {"name": "بشقاب"}), NewEvent("WidgetRenamed", {"name": "cup"}, schema_version=2)],
        META,
    )
    publisher.publish(events)
    publisher.flush()
    assert publisher.replay() == 2  # the replay path (`crm replay`) sends the same records again
    records = read_topic(servers.kafka_bootstrap, topic, 4)
    assert len(records) == 4
    by_id = {event.id: event for event in events}
    for record in records:
        assert_structured_cloudevent(record, by_id[RecordedEvent.from_bytes(record.value).id])


class TestDataschema:
    def test_names_the_catalogue_schema_of_the_type_and_version(self) -> None:
        uri = schema_uri("contacts", "ContactLifecycleStageChanged", 2)
        assert uri == "https://crm.example/events/contacts/ContactLifecycleStageChanged.v2.schema.json"
        parsed = urlparse(uri)
        assert parsed.scheme == "https" and parsed.netloc  # CloudEvents wants an absolute URI

    @pytest.mark.parametrize("with_dataschema", [True, False])
    def test_from_cloudevent_accepts_envelopes_with_or_without_it(self, with_dataschema: bool) -> None:
        event = RecordedEvent(
            id=new_id(),
            service="sales",
            stream_id=new_id(),
            aggregate_type="Deal",
            version=1,
            type="DealWon",
            schema_version=1,
            data={},
            time=WHEN,
            actor="a",
            correlation_id="c",
            causation_id=None,
        )
        envelope = event.to_cloudevent()
        assert envelope["dataschema"] == "https://crm.example/events/sales/DealWon.v1.schema.json"
        if not with_dataschema:  # recorded on the topic before the attribute existed
            del envelope["dataschema"]
        assert RecordedEvent.from_cloudevent(envelope) == event
