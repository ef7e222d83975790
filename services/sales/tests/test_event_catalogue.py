"""Sales events match their catalogue: in the store (strict mode refuses anything else) and
on the wire, as docs/events/sales says."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from crm_sales.catalogue import EVENTS
from crm_sales.commands import SalesBook
from crmkit.events import new_id, rfc3339, utcnow
from crmkit.testing import ServiceHarness, stored_events_match_published_schemas

DOCS = Path(__file__).resolve().parents[3] / "docs" / "events"


def _ok(response: Any) -> dict:
    assert response.status_code in (200, 201), response.get_json()
    return response.get_json()


def test_every_stored_event_matches_its_published_wire_schema(sales: ServiceHarness, people) -> None:
    h = sales.headers()
    client = sales.client
    duplicate, survivor = people.add(new_id(), first_name="Sara"), people.add(new_id(), first_name="Sarah")
    deal = _ok(
        client.post(
            "/v1/deals",
            headers=h,
            json={"title": "Laptops", "contact_id": duplicate, "amount": "1000", "currency": "USD"},
        )
    )
    _ok(
        client.patch(
            f"/v1/deals/{deal['id']}",
            headers=h,
            json={"amount": "1250.5", "expected_close": "2030-01-31", "company_id": None, "owner": "ana"},
        )
    )
    activity = _ok(
        client.post(
            "/v1/activities",
            headers=h,
            json={
                "type": "call",
                "subject": "Follow up",
                "due_at": rfc3339(utcnow() + timedelta(days=1)),
                "deal_id": deal["id"],
            },
        )
    )
    _ok(client.post(f"/v1/activities/{activity['id']}/complete", headers=h, json={"outcome": "call back"}))
    _ok(client.patch(f"/v1/deals/{deal['id']}", headers=h, json={"title": "Laptops for Sara"}))
    _ok(
        client.post(
            "/v1/quotes",
            headers=h,
            json={
                "deal_id": deal["id"],
                "valid_until": "2099-01-01",
                "notes": "for Sara",
                "lines": [{"description": "Setup", "quantity": "1", "unit_price": "10"}],
            },
        )
    )
    product = _ok(
        client.post(
            "/v1/products",
            headers=h,
            json={"sku": "W-1", "name": "Widget", "unit_price": "19.9", "currency": "USD", "tax_rate": "9"},
        )
    )
    _ok(client.patch(f"/v1/products/{product['id']}", headers=h, json={"unit_price": "21", "active": False}))
    sales.project()
    SalesBook(sales.runtime).contact_merged(duplicate, survivor)
    stored_so_far = sales.runtime.store.count()
    SalesBook(sales.runtime).contact_merged(duplicate, survivor)  # the views lag; the streams say it is done
    assert sales.runtime.store.count() == stored_so_far
    SalesBook(sales.runtime).erase_contact(survivor)

    seen = stored_events_match_published_schemas(sales.runtime.store, DOCS)  # sealed fields too, in lists too
    assert seen >= {
        "PipelineCreated",
        "DealCreated",
        "DealUpdated",
        "ActivityScheduled",
        "ProductCreated",
        "ProductUpdated",
        "DealContactChanged",
        "ActivityContactChanged",
        "ActivityCompleted",
        "QuoteDrafted",
        "DealCustomerDataErased",
        "ActivityCustomerDataErased",
        "QuoteCustomerDataErased",
    }
    assert {name for name, _ in EVENTS.types} >= seen
    stored = sales.runtime.store.load(deal["id"])
    assert stored[0].data["amount"] == "1000.00"
    assert stored[1].data["changes"]["amount"] == "1250.50"  # money in events has the currency's decimals
    assert sales.runtime.store.load(product["id"])[1].data["changes"]["unit_price"] == "21.00"
