"""The CloudEvents envelope, upcasting, ids and times (no servers)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmkit.events import NewEvent, RecordedEvent, Upcasters, new_id, parse_time, rfc3339, utcnow

WHEN = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)


def recorded(**changes: object) -> RecordedEvent:
    fields: dict[str, object] = {
        "id": "0190a3c2-0000-7000-8000-000000000001",
        "service": "contacts",
        "stream_id": "0190a3c2-0000-7000-8000-0000000000aa",
        "aggregate_type": "Contact",
        "version": 3,
        "type": "ContactCreated",
        "schema_version": 2,
        "data": {"first_name": "Zahra", "last_name": "احمدی", "tags": ["vip"]},
        "time": WHEN,
        "actor": "user:alice",
        "correlation_id": "corr-1",
        "causation_id": "cause-1",
    }
    fields.update(changes)
    return RecordedEvent(**fields)  # type: ignore[arg-type]


class TestEnvelope:
    def test_has_exactly_the_contract_attributes(self) -> None:
        envelope = recorded().to_cloudevent()
        assert envelope == {
            "specversion": "1.0",
            "id": "0190a3c2-0000-7000-8000-000000000001",
            "source": "crm/contacts",
            "type": "crm.contacts.ContactCreated.v2",
            "subject": "0190a3c2-0000-7000-8000-0000000000aa",
            "time": "2024-05-06T07:08:09.123Z",
            "datacontenttype": "application/json",
            "dataschema": "https://crm.example/events/contacts/ContactCreated.v2.schema.json",
            "data": {"first_name": "Zahra", "last_name": "احمدی", "tags": ["vip"]},
            "aggregatetype": "Contact",
            "streamversion": 3,
            "correlationid": "corr-1",
            "causationid": "cause-1",
            "actor": "user:alice",
        }

    def test_type_names_service_event_and_schema_version(self) -> None:
        assert recorded(service="sales", type="DealWon", schema_version=1).full_type == "crm.sales.DealWon.v1"
        assert recorded(schema_version=12).to_cloudevent()["type"] == "crm.contacts.ContactCreated.v12"

    def test_time_is_rfc3339_utc_even_from_another_zone(self) -> None:
        tehran = WHEN.astimezone(timezone(timedelta(hours=3, minutes=30)))
        assert recorded(time=tehran).to_cloudevent()["time"] == "2024-05-06T07:08:09.123Z"

    def test_bytes_are_compact_utf8_json(self) -> None:
        raw = recorded().to_bytes()
        assert "احمدی".encode() in raw  # not \u-escaped
        assert json.loads(raw) == recorded().to_cloudevent()

    def test_round_trip_through_dict_and_bytes(self) -> None:
        event = recorded()
        assert RecordedEvent.from_cloudevent(event.to_cloudevent()) == event
        assert RecordedEvent.from_bytes(event.to_bytes()) == event

    def test_round_trip_without_causation(self) -> None:
        event = recorded(causation_id=None)
        assert event.to_cloudevent()["causationid"] is None
        assert RecordedEvent.from_bytes(event.to_bytes()) == event

    @settings(deadline=None, max_examples=60)
    @given(
        data=st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(), st.booleans(), st.none())),
        version=st.integers(1, 10_000),
        schema=st.integers(1, 50),
        millis=st.integers(0, 4_000_000_000_000),
    )
    def test_round_trip_property(self, data: dict, version: int, schema: int, millis: int) -> None:
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
        event = recorded(data=data, version=version, schema_version=schema, time=moment)
        assert RecordedEvent.from_bytes(event.to_bytes()) == event

    @pytest.mark.parametrize(
        "change",
        [
            {"type": "com.example.OrderPlaced.v1"},  # someone else's namespace
            {"type": "crm.contacts.ContactCreated"},  # no version
            {"type": "crm.contacts.ContactCreated.1"},  # version without the v
            {"type": "crm.contacts.ContactCreated.vX"},
            {"type": "crm.a.b.c.v1"},
            {"type": 42},
            {"time": "yesterday"},
            {"time": "2024-05-06T07:08:09"},  # no zone
            {"streamversion": "three"},
        ],
    )
    def test_rejects_foreign_or_broken_envelopes_with_value_error(self, change: dict) -> None:
        envelope = {**recorded().to_cloudevent(), **change}
        with pytest.raises(ValueError):
            RecordedEvent.from_cloudevent(envelope)

    @pytest.mark.parametrize("missing", ["id", "type", "subject", "time", "aggregatetype", "streamversion"])
    def test_rejects_envelopes_missing_a_required_attribute(self, missing: str) -> None:
        envelope = recorded().to_cloudevent()
        del envelope[missing]
        with pytest.raises(ValueError):
            RecordedEvent.from_cloudevent(envelope)

    @pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"null", b'"text"', b"\xff\xfe", b"{}"])
    def test_from_bytes_rejects_what_is_not_an_event(self, raw: bytes) -> None:
        with pytest.raises(ValueError):
            RecordedEvent.from_bytes(raw)


class TestUpcasters:
    def make(self) -> Upcasters:
        upcasters = Upcasters()

        @upcasters.register("ContactCreated", 1)
        def split_name(data: dict) -> dict:
            first, _, last = data.pop("name").partition(" ")
            return {**data, "first_name": first, "last_name": last}

        @upcasters.register("ContactCreated", 2)
        def add_tags(data: dict) -> dict:
            return {**data, "tags": data.get("tags", [])}

        return upcasters

    def test_chains_v1_to_v2_to_v3(self) -> None:
        old = recorded(schema_version=1, data={"name": "Zahra Ahmadi"})
        new = self.make().upcast(old)
        assert new.schema_version == 3
        assert new.data == {"first_name": "Zahra", "last_name": "Ahmadi", "tags": []}
        assert new.full_type == "crm.contacts.ContactCreated.v3"
        assert (new.id, new.version, new.stream_id) == (old.id, old.version, old.stream_id)

    def test_starts_from_the_stored_version(self) -> None:
        v2 = recorded(schema_version=2, data={"first_name": "Z", "last_name": "A", "tags": ["x"]})
        assert self.make().upcast(v2).data == {"first_name": "Z", "last_name": "A", "tags": ["x"]}
        assert self.make().upcast(v2).schema_version == 3

    def test_newest_and_unregistered_types_pass_unchanged(self) -> None:
        upcasters = self.make()
        newest = recorded(schema_version=3)
        other = recorded(type="CompanyCreated", schema_version=1)
        assert upcasters.upcast(newest) is newest
        assert upcasters.upcast(other) is other

    def test_history_is_not_rewritten(self) -> None:
        stored = {"name": "Zahra Ahmadi"}
        old = recorded(schema_version=1, data=stored)
        self.make().upcast(old)
        assert old.data == {"name": "Zahra Ahmadi"} and old.schema_version == 1

    def test_upcast_all_keeps_order(self) -> None:
        events = [recorded(schema_version=1, data={"name": f"A B{i}"}, version=i) for i in range(1, 4)]
        result = self.make().upcast_all(events)
        assert [e.version for e in result] == [1, 2, 3]
        assert all(e.schema_version == 3 for e in result)


class TestIds:
    def test_new_id_is_a_uuid7_with_the_rfc_variant(self) -> None:
        value = uuid.UUID(new_id())
        assert value.version == 7
        assert value.variant == uuid.RFC_4122

    def test_new_id_is_canonical_text(self) -> None:
        text = new_id()
        assert text == str(uuid.UUID(text)) and len(text) == 36

    def test_new_id_carries_the_creation_millisecond(self) -> None:
        before = time.time_ns() // 1_000_000
        value = uuid.UUID(new_id())
        after = time.time_ns() // 1_000_000
        assert before <= value.int >> 80 <= after

    def test_new_ids_are_unique(self) -> None:
        ids = [new_id() for _ in range(10_000)]
        assert len(set(ids)) == len(ids)

    def test_ids_of_different_milliseconds_sort_by_time(self) -> None:
        first = new_id()
        stamp = uuid.UUID(first).int >> 80
        while time.time_ns() // 1_000_000 <= stamp:
            pass  # spin into the next millisecond (bounded by the clock, not a sleep)
        assert new_id() > first

    def test_new_event_defaults_to_schema_version_1(self) -> None:
        assert NewEvent("X", {}).schema_version == 1


class TestTimes:
    def test_rfc3339_is_utc_milliseconds_with_z(self) -> None:
        assert rfc3339(datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)) == "2024-01-02T03:04:05.678Z"
        plus_two = timezone(timedelta(hours=2))
        assert rfc3339(datetime(2024, 1, 2, 3, 4, 5, tzinfo=plus_two)) == "2024-01-02T01:04:05.000Z"

    def test_rfc3339_treats_naive_as_utc(self) -> None:
        # MongoDB returns naive UTC datetimes unless the client is tz-aware.
        assert rfc3339(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05.000Z"

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
            ("2024-01-02T03:04:05.250z", datetime(2024, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)),
            ("2024-01-02T06:34:05+03:30", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
            ("2024-01-01T23:00:00-05:00", datetime(2024, 1, 2, 4, 0, 0, tzinfo=UTC)),
        ],
    )
    def test_parse_time_returns_aware_utc(self, text: str, expected: datetime) -> None:
        parsed = parse_time(text)
        assert parsed == expected
        assert parsed.utcoffset() == timedelta(0)

    @pytest.mark.parametrize("text", ["2024-01-02T03:04:05", "2024-01-02", "", "soon", "2024-13-01T00:00:00Z"])
    def test_parse_time_rejects_zoneless_or_malformed(self, text: str) -> None:
        with pytest.raises(ValueError):
            parse_time(text)

    def test_round_trip(self) -> None:
        moment = utcnow()
        assert parse_time(rfc3339(moment)) == moment

    def test_utcnow_is_aware_and_truncated_to_milliseconds(self) -> None:
        now = utcnow()
        assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
        assert now.microsecond % 1000 == 0
