"""Issue 16: unmerge across the four services, on `crm up`, through public APIs only.

A deal, an activity, a ticket and a message belong to a duplicate; the merge moves them to
the survivor; a person then gives one deal to a third contact; the unmerge brings back to
the duplicate exactly the records the merge moved, and that deal stays where it was put.
"""

from __future__ import annotations

import pytest

from crmkit.testing import wait_until

from .conftest import LocalStack

pytestmark = pytest.mark.e2e
SLOW = 90  # seconds: each service's contacts projection joins its consumer group first


def _contact_of(crm: LocalStack, service: str, path: str) -> str:
    return crm.ok(service, "GET", path)["contact_id"]


def _all_on(crm: LocalStack, records: dict[str, tuple[str, str]], contact_id: str) -> bool:
    return all(_contact_of(crm, service, path) == contact_id for service, path in records.values())


def test_unmerge_moves_back_exactly_what_the_merge_moved(crm: LocalStack) -> None:
    _unmerge(crm)


def _unmerge(crm: LocalStack) -> None:
    survivor = crm.ok("contacts", "POST", "/v1/contacts", {"first_name": "Sara", "email": "sara@example.com"}, 201)
    duplicate = crm.ok("contacts", "POST", "/v1/contacts", {"first_name": "S.", "phone": "+98 912 123 4567"}, 201)
    third = crm.ok("contacts", "POST", "/v1/contacts", {"first_name": "Reza", "email": "reza@example.com"}, 201)
    dup = duplicate["id"]
    deal = crm.ok(
        "sales", "POST", "/v1/deals", {"title": "Renewal", "contact_id": dup, "amount": "100", "currency": "USD"}, 201
    )
    later = crm.ok(
        "sales", "POST", "/v1/deals", {"title": "Upsell", "contact_id": dup, "amount": "50", "currency": "USD"}, 201
    )
    activity = crm.ok(
        "sales",
        "POST",
        "/v1/activities",
        {"type": "call", "subject": "Call back", "due_at": "2026-12-01T10:00:00Z", "contact_id": dup},
        201,
    )
    ticket = crm.ok(
        "service-desk",
        "POST",
        "/v1/tickets",
        {"subject": "Order late", "contact_id": dup, "channel": "email", "type": "complaint"},
        201,
    )
    message = crm.ok(
        "messaging",
        "POST",
        "/v1/messages",
        {"contact_id": dup, "channel": "sms", "body": "Your order is on its way"},
        202,
    )
    moved = {
        "deal": ("sales", f"/v1/deals/{deal['id']}"),
        "activity": ("sales", f"/v1/activities/{activity['id']}"),
        "ticket": ("service-desk", f"/v1/tickets/{ticket['id']}"),
        "message": ("messaging", f"/v1/messages/{message['id']}"),
    }
    reassigned = ("sales", f"/v1/deals/{later['id']}")

    crm.ok("contacts", "POST", f"/v1/contacts/{survivor['id']}/merge", {"duplicate_id": dup})
    wait_until(
        lambda: _all_on(crm, {**moved, "later": reassigned}, survivor["id"]),
        timeout=SLOW,
        what="sales, the service desk and messaging to move the duplicate's records to the survivor",
    )
    put = crm.ok("sales", "PUT", f"/v1/deals/{later['id']}/contact", {"contact_id": third["id"]})
    assert put["contact_id"] == third["id"]

    unmerged = crm.ok("contacts", "POST", f"/v1/contacts/{survivor['id']}/unmerge", {"duplicate_id": dup})
    assert unmerged["merged_from"] == [] and unmerged["phone"] is None
    assert crm.ok("contacts", "GET", f"/v1/contacts/{dup}")["status"] == "active"
    wait_until(
        lambda: _all_on(crm, moved, dup), timeout=SLOW, what="every record the merge moved to be the duplicate's again"
    )
    assert _contact_of(crm, *reassigned) == third["id"]  # a person moved it after the merge: it stays
    again = crm.ok("contacts", "POST", f"/v1/contacts/{survivor['id']}/unmerge", {"duplicate_id": dup})
    assert again["version"] == unmerged["version"]  # harmless to repeat
    history = crm.ok("contacts", "GET", f"/v1/contacts/{dup}/history")["items"]
    assert [h["type"] for h in history][-2:] == ["ContactMerged", "ContactUnmerged"]
    deal_history = crm.ok("sales", "GET", f"/v1/deals/{deal['id']}/history")["items"]
    assert [h["type"] for h in deal_history].count("DealContactChanged") == 2
