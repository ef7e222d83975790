"""Other services' events arriving late (v2 before v1) come out as if they had come in order.

The publishers keep each stream's order on the topic (crmkit.publisher), but a topic
written before that, or a producer that gave up on v1 and delivered v2, can still show
a later version first. Each projection of the contacts worker that reads another
service's topic is fed the same stream twice: in order for one id, newest first (each
event in a batch of its own, as separate polls would) for another; the outcomes match.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from crm_contacts.insights.projections import insight_projections
from crm_contacts.records import lifecycle
from crmkit.events import RecordedEvent, epoch_ms, new_id, rfc3339, utcnow
from crmkit.testing import ServiceHarness

Stream = Callable[[str], list[RecordedEvent]]  # a stream's events, in version order, for the given id


def sales_event(
    kind: str,
    stream_id: str,
    version: int,
    when: datetime,
    aggregate: str = "deal",
    service: str = "sales",
    **data: Any,
) -> RecordedEvent:
    return RecordedEvent(
        id=new_id(),
        service=service,
        stream_id=stream_id,
        aggregate_type=aggregate,
        version=version,
        type=kind,
        schema_version=1,
        data=data,
        time=when,
        actor="user:ana",
        correlation_id=new_id(),
        causation_id=None,
    )


def in_order_and_late(handle: Callable[[list[RecordedEvent]], None], stream: Stream, first: str, second: str) -> None:
    """`first`'s stream in one batch in order; `second`'s newest first, one event per batch."""
    handle(stream(first))
    for event in reversed(stream(second)):
        handle([event])


def without_id(doc: dict[str, Any] | None) -> dict[str, Any]:
    assert doc is not None
    return {key: value for key, value in doc.items() if key != "_id"}


def new_contact(contacts: ServiceHarness, name: str) -> str:
    response = contacts.client.post("/v1/contacts", json={"first_name": name}, headers=contacts.headers())
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def test_insight_deals_tickets_and_tiers_apply_a_late_event_in_its_place(contacts: ServiceHarness) -> None:
    db, at = contacts.runtime.db, utcnow()
    projections = {p.name: p for p in insight_projections(db, contacts.runtime.store, contacts.runtime.settings.topic)}

    def deal(deal_id: str) -> list[RecordedEvent]:
        return [
            sales_event(
                "DealCreated",
                deal_id,
                1,
                at,
                deal_id=deal_id,
                contact_id="c1",
                amount="10.00",
                currency="EUR",
                at=rfc3339(at),
                pipeline_id="default",
                stage="new",
                title="t",
            ),
            sales_event("DealUpdated", deal_id, 2, at, deal_id=deal_id, changes={"amount": "12.50"}),
            sales_event(
                "DealWon",
                deal_id,
                3,
                at + timedelta(days=1),
                deal_id=deal_id,
                contact_id="c1",
                amount="12.50",
                currency="EUR",
                at=rfc3339(at + timedelta(days=1)),
                **{"from": "new"},
            ),
            sales_event(
                "DealContactChanged", deal_id, 4, at, deal_id=deal_id, reason="merged", **{"from": "c1", "to": "c2"}
            ),
        ]

    def ticket(ticket_id: str) -> list[RecordedEvent]:
        later = at + timedelta(hours=2)
        return [
            sales_event(kind, ticket_id, version, at, aggregate="ticket", service="servicedesk", **data)
            for version, (kind, data) in enumerate(
                [
                    (
                        "TicketOpened",
                        {"contact_id": "c1", "type": "complaint", "customer_tier": "gold", "opened_at": rfc3339(at)},
                    ),
                    ("TicketSolved", {"at": rfc3339(later)}),
                    ("TicketStatusChanged", {"from": "solved", "to": "open", "at": rfc3339(later)}),
                    ("TicketSolved", {"at": rfc3339(later + timedelta(hours=1))}),
                    ("SatisfactionRated", {"contact_id": "c1", "csat": 4, "nps": 9, "at": rfc3339(later)}),
                ],
                start=1,
            )
        ]

    def tiers(contact_id: str) -> list[RecordedEvent]:
        return [
            sales_event(
                "CustomerTierChanged",
                contact_id,
                version,
                at + timedelta(days=version),
                aggregate="customer",
                contact_id=contact_id,
                tier=tier,
            )
            for version, tier in enumerate(["standard", "strategic", "standard"], start=1)
        ]

    for name, stream in (("insight_deals", deal), ("insight_tickets", ticket), ("insight_tiers", tiers)):
        in_order_and_late(projections[name].handle, stream, f"{name}-a", f"{name}-b")
        in_order, late = (db[name].find_one({"_id": f"{name}-{x}"}) for x in "ab")
        assert without_id(late) == without_id(in_order), name
        projections[name].handle(stream(f"{name}-b")[:2])  # a redelivery changes nothing
        assert without_id(db[name].find_one({"_id": f"{name}-b"})) == without_id(in_order), name

    deal_doc = db["insight_deals"].find_one({"_id": "insight_deals-b"})
    assert (deal_doc["contact_id"], deal_doc["status"], deal_doc["amount_minor"], deal_doc["created_ms"]) == (
        "c2",
        "won",
        1250,
        epoch_ms(at),
    )
    assert db["insight_tickets"].find_one({"_id": "insight_tickets-b"})["type"] == "complaint"
    assert [c["tier"] for c in db["insight_tiers"].find_one({"_id": "insight_tiers-b"})["changes"]] == [
        "standard",
        "strategic",
        "standard",
    ]


def test_a_late_tier_change_leaves_the_derived_values_as_in_order(contacts: ServiceHarness) -> None:
    ali, sara = new_contact(contacts, "Ali"), new_contact(contacts, "Sara")
    contacts.project()
    derived = lifecycle.projections(contacts.runtime)[1]

    def tiers(contact_id: str) -> list[RecordedEvent]:
        return [
            sales_event(
                "CustomerTierChanged",
                contact_id,
                version,
                utcnow(),
                aggregate="customer",
                contact_id=contact_id,
                tier=tier,
                previous_tier=previous,
                clv={"amount": clv, "currency": "USD"},
            )
            for version, (tier, previous, clv) in enumerate(
                [("strategic", "standard", "25000.00"), ("standard", "strategic", "9000.00")], start=1
            )
        ]

    in_order_and_late(derived.handle, tiers, ali, sara)  # the late v1 is older than what Sara has: ignored

    def outcome(contact_id: str) -> tuple[Any, ...]:
        document = contacts.runtime.db["contacts"].find_one({"_id": contact_id})
        stored = contacts.runtime.db["contact_derived"].find_one({"_id": contact_id})
        return document["derived"], document["derived_version"], without_id(stored)

    assert outcome(sara) == outcome(ali)
    assert outcome(sara)[0]["tier"] == "standard" and outcome(sara)[1] == 2


def test_late_deal_events_move_the_lifecycle_as_in_order(contacts: ServiceHarness) -> None:
    ali, sara = new_contact(contacts, "Ali"), new_contact(contacts, "Sara")
    automation = lifecycle.projections(contacts.runtime)[0]
    at = utcnow()
    contact_of = {"deal-ali": ali, "deal-sara": sara}

    def deal(deal_id: str) -> list[RecordedEvent]:
        contact = contact_of[deal_id]
        return [
            sales_event("DealCreated", deal_id, 1, at, deal_id=deal_id, contact_id=contact, at=rfc3339(at)),
            sales_event("DealWon", deal_id, 2, at, deal_id=deal_id, contact_id=contact, at=rfc3339(at)),
        ]

    # each event is remembered by (stream, version), so the late DealCreated is still acted on, and the rules
    # only move forward: opportunity after customer changes nothing
    in_order_and_late(automation.handle, deal, "deal-ali", "deal-sara")

    def outcome(contact_id: str) -> tuple[Any, ...]:
        view = contacts.client.get(f"/v1/contacts/{contact_id}", headers=contacts.headers()).get_json()
        return view["lifecycle_stage"], view["last_purchase_at"], view["at_risk"]

    assert outcome(sara) == outcome(ali) == ("customer", rfc3339(at), False)
    applied = contacts.runtime.db["lifecycle_applied"]
    assert applied.count_documents({"_id": {"$in": ["deal-sara:1", "deal-sara:2"]}}) == 2
