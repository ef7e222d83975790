"""Data freshness: the staleness rule on the Contact aggregate (time passed in, never waited for),
the thresholds from the environment, and the worker's pass over the read model at a chosen moment."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from crm_contacts.records import freshness
from crm_contacts.records.domain import Contact
from crm_contacts.records.freshness import BadSetting, FreshnessTimer, StalePolicy, stale_policy
from crmkit.errors import Conflict, ValidationFailed
from crmkit.events import RecordedEvent, new_id, parse_time, rfc3339, utcnow
from crmkit.repository import Repository
from crmkit.testing import ServiceHarness

YEAR = timedelta(days=365)
T0 = parse_time("2026-01-10T08:00:00.000Z")


def stored(contact: Contact, at: datetime) -> Contact:
    """The contact as folded from its events stored at `at` (so `created_at` is known)."""
    events = [
        RecordedEvent(
            id=new_id(),
            service="contacts",
            stream_id=contact.id,
            aggregate_type="contact",
            version=index + 1,
            type=event.type,
            schema_version=1,
            data=event.data,
            time=at,
            actor="user:ana",
            correlation_id="c",
            causation_id=None,
        )
        for index, event in enumerate(contact.pending)
    ]
    return Contact.from_events(contact.id, events)


def types(contact: Contact) -> list[str]:
    return [event.type for event in contact.pending]


def test_the_creation_counts_as_a_confirmation_and_staleness_is_flagged_once_when_the_line_is_crossed() -> None:
    ali = stored(Contact.create("c1", {"first_name": "Ali", "owner": "ana"}), T0)
    assert ali.last_verified_at == rfc3339(T0) and ali.view()["verified_at"] is None  # the creation counts
    assert ali.view()["stale"] is False
    assert ali.flag_stale(T0 + YEAR - timedelta(milliseconds=1), YEAR) is False
    assert ali.pending == []
    assert ali.flag_stale(T0 + YEAR + timedelta(days=3), YEAR) is True
    [event] = ali.pending
    assert event.type == "ContactBecameStale"
    assert event.data == {
        "contact_id": "c1",
        "since": rfc3339(T0 + YEAR),
        "verified_at": rfc3339(T0),
        "stale_after_days": 365.0,
        "lifecycle_stage": "lead",
        "owner": "ana",
    }
    assert (ali.stale, ali.stale_since) == (True, rfc3339(T0 + YEAR))
    assert ali.flag_stale(T0 + 3 * YEAR, YEAR) is False  # once: it stays flagged until confirmed
    assert len(ali.pending) == 1


def test_a_confirmation_clears_the_flag_and_restarts_the_clock() -> None:
    ali = stored(Contact.create("c1", {"first_name": "Ali"}), T0)
    ali.flag_stale(T0 + YEAR, YEAR)
    confirmed = T0 + YEAR + timedelta(days=10)
    ali.verify(confirmed, "user:ana", "staff", "phone")
    assert types(ali)[-1] == "ContactDetailsVerified"
    assert ali.pending[-1].data == {
        "contact_id": "c1",
        "at": rfc3339(confirmed),
        "by": "user:ana",
        "source": "staff",
        "method": "phone",
        "stale_since": rfc3339(T0 + YEAR),
    }
    view = ali.view()
    assert (view["stale"], view["stale_since"], view["verified_at"], view["verified_by"]) == (
        False,
        None,
        rfc3339(confirmed),
        "user:ana",
    )
    assert ali.flag_stale(confirmed + YEAR - timedelta(seconds=1), YEAR) is False
    assert ali.flag_stale(confirmed + YEAR, YEAR) is True
    assert ali.stale_since == rfc3339(confirmed + YEAR)


def test_a_create_may_say_when_the_details_were_confirmed_before() -> None:
    migrated = Contact.create("c2", {"email": "old@example.com", "verified_at": T0 - 2 * YEAR})
    assert migrated.view()["verified_at"] == rfc3339(T0 - 2 * YEAR)
    assert migrated.flag_stale(T0, YEAR) is True  # before it was even stored: stale from the start
    assert types(migrated) == ["ContactCreated", "ContactBecameStale"]
    assert migrated.stale_since == rfc3339(T0 - YEAR)


def test_the_person_confirms_correcting_their_details_and_may_not_clear_every_one() -> None:
    ali = stored(Contact.create("c1", {"first_name": "Ali", "email": "ali@example.com", "phone": "+989121234567"}), T0)
    ali.flag_stale(T0 + YEAR, YEAR)
    changed = ali.confirm_details({"phone": "+989351234567", "first_name": "Ali"}, T0 + YEAR + timedelta(days=1))
    assert changed == ["phone"]
    assert types(ali) == ["ContactBecameStale", "ContactUpdated", "ContactDetailsVerified"]
    assert ali.pending[1].data["changes"] == {"phone": "+989351234567"}
    assert ali.pending[2].data["by"] == "contact:c1" and ali.pending[2].data["source"] == "contact"
    assert ali.phone == "+989351234567" and not ali.stale

    bo = stored(Contact.create("c3", {"first_name": "Bo"}), T0)
    with pytest.raises(ValidationFailed) as refused:
        bo.confirm_details({"first_name": None, "email": None}, T0)
    assert set(refused.value.errors) == {"first_name"}
    assert bo.pending == []  # nothing recorded


def test_merged_and_erased_contacts_are_never_flagged_nor_verified() -> None:
    merged = stored(Contact.create("c1", {"first_name": "Dup"}), T0)
    merged.mark_merged("c9")
    erased = stored(Contact.create("c2", {"first_name": "Gone"}), T0)
    erased.erase("request")
    for contact in (merged, erased):
        assert contact.flag_stale(T0 + 5 * YEAR, YEAR) is False
        with pytest.raises(Conflict):
            contact.verify(T0, "user:ana", "staff")


def test_a_stale_contact_folds_back_from_its_view() -> None:
    ali = stored(Contact.create("c1", {"first_name": "Ali"}), T0)
    ali.flag_stale(T0 + YEAR, YEAR)
    again = Contact.restore(ali.view())
    assert (again.stale, again.stale_since, again.last_verified_at) == (True, rfc3339(T0 + YEAR), rfc3339(T0))


def test_the_thresholds_come_from_the_environment_and_a_bad_one_is_named() -> None:
    assert stale_policy({}) == StalePolicy(timedelta(days=365), {})
    policy = stale_policy(
        {
            "CRM_CONTACTS_STALE_AFTER_DAYS": "200",
            "CRM_CONTACTS_STALE_AFTER_DAYS_BY_STAGE": " customer=90 , subscriber=730.5,",
        }
    )
    assert policy.after("lead") == timedelta(days=200) and policy.after("customer") == timedelta(days=90)
    assert policy.after("subscriber") == timedelta(days=730.5)
    groups = policy.groups()
    assert groups[timedelta(days=90)] == ["customer"] and "lead" in groups[timedelta(days=200)]
    for environ, named in [
        ({"CRM_CONTACTS_STALE_AFTER_DAYS": "soon"}, "CRM_CONTACTS_STALE_AFTER_DAYS"),
        ({"CRM_CONTACTS_STALE_AFTER_DAYS": "0"}, "CRM_CONTACTS_STALE_AFTER_DAYS"),
        ({"CRM_CONTACTS_STALE_AFTER_DAYS": "1e9"}, "CRM_CONTACTS_STALE_AFTER_DAYS"),
        ({"CRM_CONTACTS_STALE_AFTER_DAYS_BY_STAGE": "vip=30"}, "_BY_STAGE"),
        ({"CRM_CONTACTS_STALE_AFTER_DAYS_BY_STAGE": "customer"}, "_BY_STAGE"),
        ({"CRM_CONTACTS_STALE_AFTER_DAYS_BY_STAGE": "customer=-1"}, "_BY_STAGE"),
    ]:
        with pytest.raises(BadSetting, match=named):
            stale_policy(environ)


def new_contact(contacts: ServiceHarness, **fields: object) -> str:
    response = contacts.client.post("/v1/contacts", json=fields, headers=contacts.headers("contacts:write"))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def view(contacts: ServiceHarness, contact_id: str) -> dict:
    return contacts.client.get(f"/v1/contacts/{contact_id}", headers=contacts.headers("contacts:read")).get_json()


def test_the_worker_pass_flags_each_contact_past_its_stage_threshold_once(contacts: ServiceHarness) -> None:
    lead = new_contact(contacts, first_name="Lead")
    customer = new_contact(contacts, first_name="Customer", lifecycle_stage="customer")
    gone = new_contact(contacts, first_name="Gone")
    contacts.client.post(f"/v1/contacts/{gone}/erasure", json={}, headers=contacts.headers())
    contacts.project()
    now = utcnow()
    policy = StalePolicy(YEAR, {"customer": timedelta(days=90)})
    timer = FreshnessTimer(
        Repository(contacts.runtime.store, Contact, contacts.runtime.publish),
        contacts.runtime.db["contacts"],
        now=lambda: now,
        policy=lambda: policy,
    )
    assert timer.step(now + timedelta(days=89)) == 0
    assert timer.step(now + timedelta(days=91)) == 1  # the customer's shorter threshold
    assert timer.step(now + timedelta(days=92)) == 0  # the read model is behind: decided again, not flagged again
    assert [e.type for e in contacts.runtime.store.load(customer)].count("ContactBecameStale") == 1
    contacts.project()
    assert timer.step(now + timedelta(days=200)) == 0
    assert timer.step() == 0  # the injected clock: now, nothing is due
    assert timer.step(now + YEAR + timedelta(days=1)) == 1  # the lead; the erased contact never
    contacts.project()
    assert view(contacts, lead)["stale"] is True and view(contacts, customer)["stale"] is True
    assert view(contacts, gone)["stale"] is False
    listed = contacts.client.get("/v1/contacts?status=all", headers=contacts.headers()).get_json()["items"]
    assert all("verified_ms" not in item for item in listed)  # a query key, never shown


def test_the_worker_pass_follows_the_moved_clock(contacts: ServiceHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    ali = new_contact(contacts, first_name="Ali")
    contacts.project()
    monkeypatch.setenv("CRM_CONTACTS_STALE_AFTER_DAYS", "10")
    monkeypatch.setenv("CRM_CLOCK_OFFSET_SECONDS", str(11 * 86400))
    assert freshness.timer(contacts.runtime).step() == 1
    [event] = [e for e in contacts.runtime.store.load(ali) if e.type == "ContactBecameStale"]
    assert event.actor == freshness.ACTOR and event.data["stale_after_days"] == 10.0
