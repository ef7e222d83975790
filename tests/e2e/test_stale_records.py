"""Issue 17, data freshness, on the shared `crm up` through public APIs only (the clock is not moved).

Time need not pass: a create may say when the details were last confirmed (`verified_at`), so a
contact confirmed 365 days ago less 20 seconds crosses the default threshold (365 days) 20 seconds
after it is made, and the contacts worker's periodic pass (every 60 s on the defaults) flags it:
`ContactBecameStale`, which this test's own trigger (filtered to its owner; the shipped one stays
disabled on the shared stack) turns into a consent-checked email with a signed link. The person
opens the page, corrects their phone, and the contact is verified; staff verify another; the
stale-records report follows. Bad input to each new endpoint is refused field by field.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from crmkit.testing import wait_until

from .conftest import LocalStack

pytestmark = pytest.mark.e2e
SLOW = 180  # seconds: the worker's pass (every 10 s on the shared stack), then Kafka, messaging's trigger, its send


def _ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


def test_stale_contacts_are_reported_asked_to_confirm_and_cleared(crm: LocalStack) -> None:
    tag = uuid.uuid4().hex[:10]
    owner, other_owner = f"owner-{tag}", f"other-{tag}"
    shipped = crm.ok("messaging", "GET", "/v1/triggers/trg-contact-stale-confirm")
    assert shipped["enabled"] is False and shipped["template_id"] == "tpl-confirm-details"
    crm.ok(
        "messaging",
        "POST",
        "/v1/triggers",
        {
            "name": f"confirm your details ({tag})",
            "event_type": "crm.contacts.ContactBecameStale.v1",
            "filter": {"owner": owner},
            "template_id": "tpl-confirm-details",
            "channel": "email",
        },
        201,
    )

    # two contacts that cross the line in 20 s (one consents to email, one does not), one already stale
    almost = _ago(days=365, seconds=-20)
    maryam = crm.ok(
        "contacts",
        "POST",
        "/v1/contacts",
        {
            "first_name": "مریم",
            "last_name": "Ahmadi",
            "email": f"maryam-{tag}@example.com",
            "phone": "+989121234567",
            "locale": "fa-IR",
            "owner": owner,
            "verified_at": almost,
        },
        201,
    )
    crm.ok("contacts", "PUT", f"/v1/contacts/{maryam['id']}/consents/email", {"status": "granted"})
    bo = crm.ok(
        "contacts",
        "POST",
        "/v1/contacts",
        {"first_name": "Bo", "email": f"bo-{tag}@example.com", "owner": owner, "verified_at": almost},
        201,
    )
    assert maryam["stale"] is False and bo["stale"] is False
    cy = crm.ok(
        "contacts",
        "POST",
        "/v1/contacts",
        {"first_name": "Cy", "owner": other_owner, "verified_at": _ago(days=400)},
        201,
    )
    assert cy["stale"] is True and cy["stale_since"]

    # bad input to each new endpoint: every bad field named, nothing stored
    code, problem = crm.call(
        "contacts",
        "POST",
        "/v1/contacts",
        {"email": f"future-{tag}@example.com", "verified_at": _ago(days=-3), "stale": True},
    )
    assert code == 422 and set(problem["errors"]) == {"verified_at", "stale"}, problem
    code, problem = crm.call("contacts", "POST", f"/v1/contacts/{cy['id']}/verify", {"method": "pigeon", "by": 1})
    assert code == 422 and set(problem["errors"]) == {"method", "by"}, problem
    assert crm.ok("contacts", "GET", f"/v1/contacts/{cy['id']}")["version"] == cy["version"]
    code, problem = crm.call("contacts", "GET", "/v1/insights/stale-records?limit=0&lifecycle_stage=vip")
    assert code == 422 and set(problem["errors"]) == {"limit", "lifecycle_stage"}, problem
    code, page = crm.call("contacts", "GET", "/v1/confirmations/not-a-link", auth=False)
    assert code == 404 and "Link not valid" in page
    assert crm.ok("contacts", "GET", f"/v1/contacts?email=future-{tag}@example.com")["items"] == []

    # the worker's pass flags both; the report counts them per owner
    def stale(who: str) -> dict:
        return crm.ok("contacts", "GET", f"/v1/insights/stale-records?owner={who}")

    listed = wait_until(lambda: (found := stale(owner))["total"] == 2 and found, SLOW, "both flagged stale")
    assert listed["by_owner"] == [{"owner": owner, "count": 2}]
    assert {item["id"] for item in listed["items"]} == {maryam["id"], bo["id"]}
    assert stale(other_owner)["items"][0]["id"] == cy["id"]

    # Maryam consented: an email in Persian with a signed link to the contacts service's page
    def mails_to(address: str) -> list:
        return [m for m in crm.mails() if address in str(m["To"])]

    [mail] = wait_until(lambda: mails_to(f"maryam-{tag}@example.com"), SLOW, "the request to confirm")
    assert mail["Subject"] == "آیا مشخصات شما هنوز به‌روز است؟" and mail["List-Unsubscribe"]
    body = mail.get_body().get_content()
    [link] = re.findall(rf"http://127\.0\.0\.1:{crm.ports['contacts']}(/v1/confirmations/[A-Za-z0-9_.-]+)", body)
    # Bo did not: his message was suppressed at send time, with the reason
    sent_to_bo = wait_until(
        lambda: [
            m
            for m in crm.ok("messaging", "GET", f"/v1/messages?contact_id={bo['id']}")["items"]
            if m["status"] != "queued"
        ],
        SLOW,
        "Bo's message decided",
    )
    assert [(m["status"], m["reason"]) for m in sent_to_bo] == [("suppressed", "no_consent_recorded")]
    assert mails_to(f"bo-{tag}@example.com") == []

    code, page = crm.call("contacts", "GET", link, auth=False)
    assert code == 200 and 'lang="fa" dir="rtl"' in page and f"maryam-{tag}@example.com" in page
    code, problem = crm.call("contacts", "POST", link, {"email": "nope", "phone": "call me"}, auth=False)
    assert code == 422 and set(problem["errors"]) == {"email", "phone"}, problem
    before = crm.ok("contacts", "GET", f"/v1/contacts/{maryam['id']}")
    assert before["stale"] is True and before["phone"] == "+989121234567"  # nothing stored
    code, page = crm.call(
        "contacts",
        "POST",
        link,
        auth=False,
        form={
            "first_name": "مریم",
            "last_name": "Ahmadi",
            "email": f"maryam-{tag}@example.com",
            "phone": "0935 111 2233",
        },
    )
    assert code == 200 and "سپاسگزاریم" in page
    after = crm.ok("contacts", "GET", f"/v1/contacts/{maryam['id']}")
    assert (after["stale"], after["phone"], after["verified_by"]) == (False, "+989351112233", f"contact:{maryam['id']}")
    assert crm.call("contacts", "POST", link, {}, auth=False)[0] == 409  # the link answered its flag

    verified = crm.ok("contacts", "POST", f"/v1/contacts/{bo['id']}/verify", {"method": "phone"})
    assert verified["stale"] is False and verified["verified_by"].startswith("user:")
    wait_until(lambda: stale(owner)["total"] == 0, SLOW, "the report to follow the confirmations")
    assert stale(other_owner)["total"] == 1
