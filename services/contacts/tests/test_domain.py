"""Contact and Company aggregates: the rules, and the fold (no servers)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_contacts.records.domain import LIFECYCLE_STAGES, Company, Contact
from crmkit.aggregate import changes_by_event
from crmkit.errors import Conflict, ValidationFailed
from crmkit.events import RecordedEvent, utcnow

MANUAL = {"kind": "manual", "by": "user:test"}


def recorded(aggregate: Contact | Company) -> list[RecordedEvent]:
    """The aggregate's pending events as the store would record them."""
    now = utcnow()
    return [
        RecordedEvent(
            id=f"e{i}",
            service="contacts",
            stream_id=aggregate.id,
            aggregate_type=aggregate.aggregate_type,
            version=i,
            type=e.type,
            schema_version=e.schema_version,
            data=e.data,
            time=now,
            actor="t",
            correlation_id="c",
            causation_id=None,
        )
        for i, e in enumerate(aggregate.pending, start=1)
    ]


def test_a_contact_needs_some_identity() -> None:
    with pytest.raises(ValidationFailed) as caught:
        Contact.create("c1", {"tags": ["x"]})
    assert set(caught.value.errors) == {"first_name", "last_name", "email", "phone"}


def test_create_records_one_event_with_defaults() -> None:
    contact = Contact.create("c1", {"first_name": "Sara", "tags": ["b", "a", "b"]})
    assert [e.type for e in contact.pending] == ["ContactCreated"]
    assert contact.lifecycle_stage == "lead"
    assert contact.tags == ["a", "b"]
    assert contact.version == 1


def test_update_records_only_what_changes() -> None:
    contact = Contact.create("c1", {"first_name": "Sara", "email": "s@example.com"})
    contact.pending.clear()
    contact.update({"first_name": "Sara", "email": "s@example.com"}, stage_cause=MANUAL)
    assert contact.pending == []
    contact.update({"first_name": "Sarah", "attributes": {"city": "Tehran"}}, stage_cause=MANUAL)
    assert contact.pending[0].data["changes"] == {"first_name": "Sarah", "attributes": {"city": "Tehran"}}


def test_attributes_merge_and_null_removes() -> None:
    contact = Contact.create("c1", {"first_name": "S", "attributes": {"a": 1, "b": 2}})
    contact.update({"attributes": {"b": None, "c": 3}}, stage_cause=MANUAL)
    assert contact.attributes == {"a": 1, "c": 3}


def test_cannot_clear_the_last_identifying_field() -> None:
    contact = Contact.create("c1", {"email": "s@example.com"})
    with pytest.raises(ValidationFailed):
        contact.update({"email": None}, stage_cause=MANUAL)


def test_stage_change_records_from_to_and_cause() -> None:
    contact = Contact.create("c1", {"first_name": "S"})
    contact.update({"lifecycle_stage": "customer"}, stage_cause={"kind": "manual", "by": "user:ana"})
    event = contact.pending[-1]
    assert event.type == "ContactLifecycleStageChanged"
    assert event.data == {
        "contact_id": "c1",
        "from": "lead",
        "to": "customer",
        "cause": {"kind": "manual", "by": "user:ana"},
    }
    assert event.schema_version == 2


def test_unknown_stage_is_rejected() -> None:
    contact = Contact.create("c1", {"first_name": "S"})
    with pytest.raises(ValidationFailed):
        contact.change_stage("vip", cause=MANUAL)


def test_a_contact_that_is_not_active_cannot_change() -> None:
    contact = Contact.create("c1", {"first_name": "S"})
    contact.status = "merged"
    with pytest.raises(Conflict):
        contact.update({"first_name": "T"}, stage_cause=MANUAL)


updates = st.fixed_dictionaries(
    {},
    optional={
        "first_name": st.one_of(st.none(), st.text(min_size=1, max_size=10)),
        "last_name": st.one_of(st.none(), st.text(min_size=1, max_size=10)),
        "tags": st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
        "attributes": st.dictionaries(st.sampled_from(["x", "y"]), st.one_of(st.none(), st.integers())),
        "lifecycle_stage": st.sampled_from(LIFECYCLE_STAGES),
    },
)


@given(st.lists(updates, max_size=8))
def test_replaying_the_events_rebuilds_the_same_contact(changes: list[dict]) -> None:
    contact = Contact.create("c1", {"email": "s@example.com", "first_name": "S"})
    for fields in changes:
        contact.update(fields, stage_cause=MANUAL)
    events = recorded(contact)
    replayed = Contact.from_events("c1", events)
    assert replayed.view() | {"created_at": None, "updated_at": None} == contact.view()
    assert replayed.version == len(events)
    # and a projection continuing from a stored view gets the same result
    half = len(events) // 2
    restored = Contact.restore({**Contact.from_events("c1", events[:half]).view()}) if half else Contact("c1")
    for event in events[half:]:
        restored.apply_stored(event)
    assert restored.view()["tags"] == contact.view()["tags"]
    assert restored.view()["attributes"] == contact.view()["attributes"]
    assert restored.lifecycle_stage == contact.lifecycle_stage


def test_history_shows_before_and_after() -> None:
    contact = Contact.create("c1", {"first_name": "Sara"})
    contact.update({"first_name": "Sarah", "lifecycle_stage": "customer"}, stage_cause=MANUAL)
    history = changes_by_event(Contact, "c1", recorded(contact))
    assert [h["type"] for h in history] == ["ContactCreated", "ContactUpdated", "ContactLifecycleStageChanged"]
    assert history[1]["changes"] == {"first_name": {"before": "Sara", "after": "Sarah"}}
    assert history[2]["changes"] == {"lifecycle_stage": {"before": "lead", "after": "customer"}}


def test_company_update_and_fold() -> None:
    company = Company.create("k1", {"name": "Acme", "domain": "acme.example"})
    company.update({"name": "Acme Ltd", "tags": ["b2b"]})
    assert Company.from_events("k1", recorded(company)).view()["name"] == "Acme Ltd"
    with pytest.raises(ValidationFailed):
        company.update({"name": None})
