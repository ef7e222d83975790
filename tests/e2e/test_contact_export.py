"""Issue 16: the person's whole record in one export, on `crm up`, through public APIs only.

A contact with a deal, a quote with lines, an activity, a ticket with a comment and a
rating, and a message: `GET /v1/contacts/{id}/export`, with the token a data protection
officer would get (`crm token --roles contacts:export`), holds every one of them, as the
services' own GETs show them, and each message with the consent proof its send relied on.
A `contacts:read` token is refused.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crmkit.testing import wait_until

from .conftest import LocalStack

pytestmark = pytest.mark.e2e

SLOW = 90  # seconds: the worker's first consumer-group joins on the local broker are slow


def test_the_export_holds_what_all_four_services_hold_on_the_person(tmp_path: Path) -> None:
    crm = LocalStack(tmp_path, {"CRM_EXPORT_DEADLINE_SECONDS": "10"})
    crm.start()
    try:
        _export_journey(crm)
    finally:
        code = crm.stop()
    assert code == 0, crm.output.read_text()[-3000:]


def _export_journey(crm: LocalStack) -> None:
    sara = crm.ok(
        "contacts",
        "POST",
        "/v1/contacts",
        {"first_name": "سارا", "last_name": "Ahmadi", "email": "sara@example.com"},
        201,
    )
    crm.ok("contacts", "PUT", f"/v1/contacts/{sara['id']}/consents/email", {"status": "granted"})
    deal = crm.ok(
        "sales",
        "POST",
        "/v1/deals",
        {"title": "Laptops", "contact_id": sara["id"], "amount": "2500.00", "currency": "USD"},
        201,
    )
    quote = crm.ok(
        "sales",
        "POST",
        "/v1/quotes",
        {
            "deal_id": deal["id"],
            "valid_until": "2099-12-31",
            "lines": [{"description": "لپ‌تاپ", "quantity": "2", "unit_price": "1250.00"}],
        },
        201,
    )
    due = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    call = crm.ok(
        "sales",
        "POST",
        "/v1/activities",
        {"type": "call", "subject": "Delivery date", "contact_id": sara["id"], "due_at": due},
        201,
    )
    ticket = crm.ok(
        "service-desk",
        "POST",
        "/v1/tickets",
        {
            "subject": "سفارش نرسیده",
            "description": "Where are my laptops?",
            "contact_id": sara["id"],
            "channel": "email",
            "type": "complaint",
        },
        201,
    )
    crm.ok("service-desk", "POST", f"/v1/tickets/{ticket['id']}/comments", {"body": "On its way", "public": True}, 201)
    crm.ok("service-desk", "POST", f"/v1/tickets/{ticket['id']}/status", {"status": "solved"})
    crm.ok("service-desk", "POST", f"/v1/tickets/{ticket['id']}/satisfaction", {"csat": 5, "comment": "ممنون"}, 201)
    message = crm.ok(
        "messaging",
        "POST",
        "/v1/messages",
        {"contact_id": sara["id"], "channel": "email", "subject": "Your order", "body": "Shipped today"},
        202,
    )
    proof = wait_until(
        lambda: (answer := crm.ok("messaging", "GET", f"/v1/messages/{message['id']}/consent"))["consent"] and answer,
        SLOW,
        "the message sent, on the consent it checked",
    )

    officer = _token(crm, "contacts:export")
    refused = _as(crm, _token(crm, "contacts:read"), f"/v1/contacts/{sara['id']}/export")
    assert refused[0] == 403 and "contacts:export" in refused[1]["detail"]
    status, export = _as(crm, officer, f"/v1/contacts/{sara['id']}/export")

    assert status == 200, export
    assert export["contact"]["id"] == sara["id"] and export["contact"]["first_name"] == "سارا"
    assert export["contact"]["consents"]["email"]["status"] == "granted"
    assert {"ContactCreated", "ContactConsentChanged"} <= {entry["type"] for entry in export["history"]}
    sales = export["sales"]
    assert [d["id"] for d in sales["deals"]] == [deal["id"]] and sales["deals"][0]["amount"] == "2500.00"
    assert [q["id"] for q in sales["quotes"]] == [quote["id"]]
    assert sales["quotes"][0]["lines"][0]["description"] == "لپ‌تاپ" and sales["quotes"][0]["total"] == quote["total"]
    assert [a["id"] for a in sales["activities"]] == [call["id"]]
    [exported_ticket] = export["service-desk"]["tickets"]
    assert exported_ticket["id"] == ticket["id"] and exported_ticket["status"] == "solved"
    assert [c["body"] for c in exported_ticket["comments"]] == ["On its way"]
    assert (exported_ticket["satisfaction"]["csat"], exported_ticket["satisfaction"]["comment"]) == (5, "ممنون")
    messages = {m["id"]: m for m in export["messaging"]["messages"]}  # the survey the solved ticket sent, too
    assert messages[message["id"]]["subject"] == "Your order"
    assert messages[message["id"]]["consent_proof"] == proof
    assert {m["contact_id"] for m in messages.values()} == {sara["id"]}


def _token(crm: LocalStack, roles: str) -> str:
    """A person's token for the running stack, as `crm token` prints it."""
    made = subprocess.run(
        [sys.executable, "-m", "crmkit.cli", "token", "--roles", roles, "--subject", "dpo"],
        env=crm.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return made.stdout.strip()


def _as(crm: LocalStack, token: str, path: str) -> tuple[int, dict]:
    admin, crm.token = crm.token, token
    try:
        return crm.call("contacts", "GET", path)
    finally:
        crm.token = admin
