"""Lifecycle automation and derived values fed by sales events, against the real local servers.

Sales events are built as the sales service records them (crm.sales.*, on its topic)
and handed to the contacts worker's projections the way its runner would; the timer job
runs one pass at a chosen moment. Nothing waits for real time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from crm_contacts.records import lifecycle
from crm_contacts.records.derived import DerivedValues
from crm_contacts.records.lifecycle import LifecycleAutomation, LifecycleTimers
from crmkit.events import RecordedEvent, new_id, rfc3339, utcnow
from crmkit.projector import rebuild
from crmkit.testing import ServiceHarness

YEAR, QUARTER = timedelta(days=365), timedelta(days=90)


def sales_event(kind: str, stream_id: str, version: int, aggregate: str = "deal", **data: Any) -> RecordedEvent:
    return RecordedEvent(
        id=new_id(),
        service="sales",
        stream_id=stream_id,
        aggregate_type=aggregate,
        version=version,
        type=kind,
        schema_version=1,
        data=data,
        time=utcnow(),
        actor="user:ana",
        correlation_id=new_id(),
        causation_id=None,
    )


def deal_created(deal_id: str, contact_id: str, at: datetime) -> RecordedEvent:
    return sales_event(
        "DealCreated",
        deal_id,
        1,
        deal_id=deal_id,
        contact_id=contact_id,
        pipeline_id="default",
        stage="new",
        at=rfc3339(at),
        title="Deal",
        amount="100.00",
        currency="USD",
    )


def deal_won(deal_id: str, contact_id: str, at: datetime, version: int = 2) -> RecordedEvent:
    return sales_event(
        "DealWon",
        deal_id,
        version,
        deal_id=deal_id,
        contact_id=contact_id,
        amount="100.00",
        currency="USD",
        at=rfc3339(at),
        **{"from": "new"},
    )


def tier_changed(contact_id: str, version: int, tier: str, previous: str, clv: str) -> RecordedEvent:
    return sales_event(
        "CustomerTierChanged",
        contact_id,
        version,
        aggregate="customer",
        contact_id=contact_id,
        tier=tier,
        previous_tier=previous,
        clv={"amount": clv, "currency": "USD"},
    )


def new_contact(contacts: ServiceHarness, **fields: Any) -> str:
    response = contacts.client.post("/v1/contacts", json=fields, headers=contacts.headers("contacts:write"))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def current(contacts: ServiceHarness, contact_id: str) -> dict[str, Any]:
    return contacts.client.get(f"/v1/contacts/{contact_id}", headers=contacts.headers("contacts:read")).get_json()


@pytest.fixture
def automation(contacts: ServiceHarness) -> LifecycleAutomation:
    projection = lifecycle.projections(contacts.runtime)[0]
    assert isinstance(projection, LifecycleAutomation)
    return projection


def test_lead_to_opportunity_to_customer_at_risk_churned_and_won_back(
    contacts: ServiceHarness, automation: LifecycleAutomation
) -> None:
    ali = new_contact(contacts, first_name="Ali", lifecycle_stage="lead")
    sara = new_contact(contacts, first_name="Sara", lifecycle_stage="evangelist")  # set by a person
    t0 = utcnow()
    timers = LifecycleTimers(automation.contacts, contacts.runtime.db["contacts"])

    automation.handle([deal_created("d1", ali, t0), deal_created("d2", sara, t0)])
    assert current(contacts, ali)["lifecycle_stage"] == "opportunity"
    won = deal_won("d1", ali, t0)
    automation.handle([won, deal_won("d2", sara, t0)])
    automation.handle([won])  # at-least-once: the same event again changes nothing
    view = current(contacts, ali)
    assert view["lifecycle_stage"] == "customer" and view["last_purchase_at"] == rfc3339(t0)
    assert current(contacts, sara)["lifecycle_stage"] == "evangelist"  # automation never leaves it

    contacts.project()
    assert timers.step(t0 + YEAR - timedelta(seconds=1)) == {"flagged": 0, "churned": 0}
    assert timers.step(t0 + YEAR) == {"flagged": 1, "churned": 0}  # Sara is no customer: not timed
    contacts.project()
    assert current(contacts, ali)["at_risk"] is True
    assert timers.step(t0 + YEAR + QUARTER - timedelta(seconds=1)) == {"flagged": 0, "churned": 0}
    assert timers.step(t0 + YEAR + QUARTER) == {"flagged": 0, "churned": 1}
    contacts.project()
    assert timers.step(t0 + 3 * YEAR) == {"flagged": 0, "churned": 0}  # churned is not timed again
    view = current(contacts, ali)
    assert view["lifecycle_stage"] == "churned" and view["at_risk"] is False

    automation.handle([deal_created("d3", ali, t0 + 2 * YEAR)])  # churned is off the forward path
    assert current(contacts, ali)["lifecycle_stage"] == "churned"
    automation.handle([deal_won("d3", ali, t0 + 2 * YEAR)])
    view = current(contacts, ali)
    assert view["lifecycle_stage"] == "customer" and view["win_backs"] == 1

    history = contacts.client.get(f"/v1/contacts/{ali}/history", headers=contacts.headers()).get_json()["items"]
    causes = [entry for entry in history if entry["type"] == "ContactLifecycleStageChanged"]
    assert [c["changes"]["lifecycle_stage"]["after"] for c in causes] == [
        "opportunity",
        "customer",
        "churned",
        "customer",
    ]
    stored = [e for e in contacts.runtime.store.load(ali) if e.type == "ContactLifecycleStageChanged"]
    assert [e.data["cause"]["by"] for e in stored] == [
        "rule:deal-opened",
        "rule:deal-won",
        "rule:churn",
        "rule:win-back",
    ]
    assert stored[0].data["cause"] == {"kind": "automation", "by": "rule:deal-opened", "detail": "d1"}
    assert all(e.actor == lifecycle.ACTOR and e.schema_version == 2 for e in stored)

    contacts.project()  # the list (read model) shows it too
    listed = contacts.client.get("/v1/contacts?lifecycle_stage=customer", headers=contacts.headers()).get_json()
    assert [(c["id"], c["win_backs"]) for c in listed["items"]] == [(ali, 1)]


def test_thresholds_come_from_the_environment(
    contacts: ServiceHarness, automation: LifecycleAutomation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_AT_RISK_AFTER_DAYS", "30")
    monkeypatch.setenv("CRM_CHURN_AFTER_DAYS", "7")
    monkeypatch.setenv("CRM_CLOCK_OFFSET_SECONDS", str(31 * 86400))
    reza = new_contact(contacts, first_name="Reza")
    t0 = utcnow()
    automation.handle([deal_won("d1", reza, t0, version=1)])
    contacts.project()
    timers = LifecycleTimers(automation.contacts, contacts.runtime.db["contacts"])
    assert timers.step() == {"flagged": 1, "churned": 0}  # the clock is 31 days ahead
    contacts.project()
    assert timers.step(lifecycle.now() + timedelta(days=7)) == {"flagged": 0, "churned": 1}


def test_events_for_merged_unknown_or_erased_contacts(
    contacts: ServiceHarness, automation: LifecycleAutomation
) -> None:
    survivor = new_contact(contacts, first_name="Ali", email="ali@example.com")
    duplicate = new_contact(contacts, first_name="Ali", phone="+989121234567")
    gone = new_contact(contacts, first_name="Gone")
    headers = contacts.headers()
    assert (
        contacts.client.post(
            f"/v1/contacts/{survivor}/merge", json={"duplicate_id": duplicate}, headers=headers
        ).status_code
        == 200
    )
    assert contacts.client.post(f"/v1/contacts/{gone}/erasure", json={}, headers=headers).status_code == 200
    automation.handle(
        [
            deal_created("d1", duplicate, utcnow()),
            deal_created("d2", "no-such-contact", utcnow()),
            deal_created("d3", gone, utcnow()),
        ]
    )
    assert current(contacts, survivor)["lifecycle_stage"] == "opportunity"  # followed the merge
    assert [e.type for e in contacts.runtime.store.load(gone)][-1] == "ContactErased"


def test_tier_changes_become_derived_values_segments_can_select(contacts: ServiceHarness) -> None:
    ali = new_contact(contacts, first_name="Ali")
    sara = new_contact(contacts, first_name="Sara")
    derived = lifecycle.projections(contacts.runtime)[1]
    assert isinstance(derived, DerivedValues)
    contacts.project()
    derived.handle(
        [
            tier_changed(ali, 1, "strategic", "standard", "25000.00"),
            tier_changed(sara, 1, "strategic", "standard", "9000.00"),
            tier_changed(sara, 2, "standard", "strategic", "9000.00"),
        ]
    )
    derived.handle([tier_changed(ali, 1, "strategic", "standard", "25000.00")])  # again: nothing changes

    def members(rules: dict) -> set[str]:
        created = contacts.client.post("/v1/segments", json={"name": "s", "rules": rules}, headers=contacts.headers())
        assert created.status_code == 201, created.get_json()
        contacts.project()  # the segments read model
        page = contacts.client.get(f"/v1/segments/{created.get_json()['id']}/members", headers=contacts.headers())
        return {item["id"] for item in page.get_json()["items"]}

    strategic = {"all": [{"field": "derived.tier", "op": "eq", "value": "strategic"}]}
    assert members(strategic) == {ali}
    assert members({"all": [{"field": "derived.clv", "op": "gte", "value": 5000}]}) == {ali, sara}

    # a contact event refolds the document, and a rebuild drops it: derived values survive both
    contacts.client.patch(f"/v1/contacts/{ali}", json={"tags": ["vip"]}, headers=contacts.headers())
    contacts.project()
    assert members(strategic) == {ali}
    views = [p for p in contacts.spec.projections(contacts.runtime) if p.name == "contacts"]
    rebuild(views[0], contacts.runtime.store)
    assert members(strategic) == {ali}
    document = contacts.runtime.db["contacts"].find_one({"_id": ali})
    assert document["derived"]["clv"] == 25000.0 and document["derived_version"] == 1
    listed = contacts.client.get("/v1/contacts?tag=vip", headers=contacts.headers()).get_json()["items"]
    assert listed[0]["derived"]["tier"] == "strategic" and "derived_version" not in listed[0]


def test_a_tier_for_a_contact_the_view_has_not_seen_yet_is_joined_when_it_arrives(contacts: ServiceHarness) -> None:
    derived = lifecycle.projections(contacts.runtime)[1]
    ali = new_contact(contacts, first_name="Ali")  # stored, not yet projected
    derived.handle([tier_changed(ali, 1, "strategic", "standard", "25000.00")])
    assert contacts.runtime.db["contacts"].find_one({"_id": ali}) is None
    contacts.project()
    assert contacts.runtime.db["contacts"].find_one({"_id": ali})["derived"]["tier"] == "strategic"
