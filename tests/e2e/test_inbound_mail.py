"""Issue 17: tickets from inbound mail and SMS, on `crm up`, through public interfaces only.

A known contact mails the support mailbox (real SMTP to CRM_SERVICEDESK_INBOUND_SMTP_PORT): an email
ticket opens for them. Solved, it sends the survey mail; the contact's reply to that mail (In-Reply-To its
Message-ID, the `[#ticket]` tag in the subject) becomes their comment and reopens the ticket. A stranger's
mail makes them a contact (tagged `inbound`, source inbound_email) with a ticket. The SMS gateway's webhook
does the same for SMS. A bounce of the survey mail, mailed back to the mailbox, makes messaging suppress the
next send to that address (`address_bounced`).
"""

from __future__ import annotations

import json
import smtplib
import urllib.request
import uuid
from email import policy
from email.message import EmailMessage

import pytest

from crm_servicedesk.inbound import InboundConfig
from crm_servicedesk.inbound_api import secret
from crmkit import stack
from crmkit.testing import wait_until

from .conftest import LocalStack

pytestmark = pytest.mark.e2e
SLOW = 90  # seconds: the first consumer-group joins on the local broker are slow


def _mail(crm: LocalStack, sender: str, subject: str, body: str, **headers: str) -> tuple[int, str]:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, "support@crm.local", subject
    message["Message-ID"] = f"<{uuid.uuid4()}@example.com>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    with smtplib.SMTP("127.0.0.1", crm.ports["inbound_smtp"], timeout=60) as client:
        client.ehlo()
        client.mail(sender.rsplit("<", 1)[-1].rstrip(">"))
        client.rcpt("support@crm.local")
        try:
            code, text = client.data(message.as_bytes(policy=policy.SMTP))  # CRLF line ends
        except smtplib.SMTPDataError as refused:  # smtplib raises for any answer but 250
            code, text = refused.smtp_code, refused.smtp_error
    return code, text.decode()


def _tickets_of(crm: LocalStack, contact_id: str) -> list[dict]:
    return crm.ok("service-desk", "GET", f"/v1/tickets?contact_id={contact_id}")["items"]


def test_mail_and_sms_open_tickets_replies_comment_and_bounces_suppress(
    crm: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    unique = uuid.uuid4().hex[:10]
    address = f"sara.{unique}@example.com"
    sara = crm.ok("contacts", "POST", "/v1/contacts", {"first_name": "سارا", "email": address}, 201)
    crm.ok("contacts", "PUT", f"/v1/contacts/{sara['id']}/consents/email", {"status": "granted"})
    # the mailbox finds who wrote in contacts' read model (FindContacts), as a search would: a mail
    # arriving before the contact is projected there comes from a stranger (a new contact)
    wait_until(
        lambda: crm.ok("contacts", "GET", f"/v1/contacts?email={address}")["items"],
        SLOW,
        "Sara in the contacts list, where the mailbox looks senders up",
    )

    stack.wait_for_port(crm.ports["inbound_smtp"], timeout=SLOW)  # the support mailbox, started by crm up
    assert _mail(crm, f"Sara <{address}>", "سفارش نرسیده", "سفارش من هنوز نرسیده است")[0] == 250
    [ticket] = wait_until(lambda: _tickets_of(crm, sara["id"]), SLOW, "the mail's ticket in the list")
    assert (ticket["channel"], ticket["subject"], ticket["description"]) == (
        "email",
        "سفارش نرسیده",
        "سفارش من هنوز نرسیده است",
    )

    crm.ok("service-desk", "POST", f"/v1/tickets/{ticket['id']}/status", {"status": "open"})
    crm.ok("service-desk", "POST", f"/v1/tickets/{ticket['id']}/status", {"status": "solved"})
    [survey] = wait_until(lambda: [m for m in crm.mails() if address in str(m["To"])], SLOW, "the survey mail")
    assert f"[#{ticket['id']}]" in str(survey["Subject"])
    assert (
        _mail(
            crm,
            address,
            f"Re: {survey['Subject']}",
            "رسید، ممنون\n\nOn Mon, Support wrote:\n> solved",
            In_Reply_To=str(survey["Message-ID"]),
        )[0]
        == 250
    )
    replied = wait_until(
        lambda: (t := crm.ok("service-desk", "GET", f"/v1/tickets/{ticket['id']}"))["comments"] and t,
        SLOW,
        "the reply as a comment",
    )
    assert [(c["author_type"], c["author"], c["body"]) for c in replied["comments"]] == [
        ("customer", f"contact:{sara['id']}", "رسید، ممنون")
    ]
    assert replied["status"] == "open"  # a customer reply reopens a solved ticket
    assert len(_tickets_of(crm, sara["id"])) == 1

    stranger = f"bahar.{unique}@example.com"
    assert _mail(crm, f"Bahar Karimi <{stranger}>", "Price list?", "Please send it")[0] == 250
    [made] = wait_until(
        lambda: crm.ok("contacts", "GET", f"/v1/contacts?email={stranger}")["items"], SLOW, "the stranger as a contact"
    )
    assert (made["first_name"], made["last_name"], made["tags"]) == ("Bahar", "Karimi", ["inbound"])
    assert made["attributes"] == {"source": "inbound_email"}
    assert wait_until(lambda: _tickets_of(crm, made["id"]), SLOW, "the stranger's ticket")[0]["channel"] == "email"

    monkeypatch.setenv("CRM_DATA_DIR", str(crm.home))  # the stack's link secret, which the webhook's is derived from
    monkeypatch.delenv("CRM_LINK_SECRET", raising=False)
    phone = f"+98912{int(unique[:7], 16) % 10_000_000:07d}"
    sms = {"provider_message_id": f"sms-{unique}", "from": phone, "text": "کالا خراب رسید"}
    code, refused = crm.call("service-desk", "POST", "/v1/inbound/sms", sms, auth=False)
    assert code == 401, refused
    answer = _sms(crm, sms, secret(InboundConfig.from_env({})))
    assert answer["outcome"] == "ticket" and not answer["duplicate"]
    assert _sms(crm, sms, secret(InboundConfig.from_env({})))["duplicate"] is True
    sms_ticket = crm.ok("service-desk", "GET", f"/v1/tickets/{answer['ticket_id']}")
    assert (sms_ticket["channel"], sms_ticket["contact_id"]) == ("sms", answer["contact_id"])

    bounce = _dsn(survey_id=str(survey["Message-ID"]), address=address)
    with smtplib.SMTP("127.0.0.1", crm.ports["inbound_smtp"], timeout=60) as client:
        client.sendmail("", ["support@crm.local"], bounce)
    queued = crm.ok(
        "messaging",
        "POST",
        "/v1/messages",
        {"contact_id": sara["id"], "channel": "email", "subject": "News", "body": "hello"},
        202,
    )
    # the report reaches messaging through the desk's topic; the next send may be decided before it does
    later = wait_until(
        lambda: _suppressed_after_bounce(crm, sara["id"]), SLOW, "a send to the bounced address suppressed"
    )
    assert later["reason"] == "address_bounced"
    assert crm.ok("messaging", "GET", f"/v1/messages/{queued['id']}")["status"] in ("sent", "suppressed")


def _sms(crm: LocalStack, body: dict, shared: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{crm.ports['service-desk']}/v1/inbound/sms",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "X-Inbound-Secret": shared},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def _suppressed_after_bounce(crm: LocalStack, contact_id: str) -> dict | None:
    """Send again until a send is suppressed for the bounce (each try is a new message)."""
    message = crm.ok(
        "messaging",
        "POST",
        "/v1/messages",
        {"contact_id": contact_id, "channel": "email", "subject": "Again", "body": "hello"},
        202,
    )
    decided = wait_until(
        lambda: (m := crm.ok("messaging", "GET", f"/v1/messages/{message['id']}"))["status"] != "queued" and m,
        SLOW,
        "the send decided",
    )
    return decided if decided["status"] == "suppressed" else None


def _dsn(survey_id: str, address: str) -> bytes:
    return f"""From: Mail Delivery System <MAILER-DAEMON@mx.example.com>
To: support@crm.local
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-{uuid.uuid4()}@mx.example.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; {address}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 User unknown

--B
Content-Type: text/rfc822-headers

To: {address}
Message-ID: {survey_id}

--B--
""".replace("\n", "\r\n").encode()
