"""Bounces and complaints become suppressions (crm_messaging.suppressions): a receipt or a report mailed back
to the service desk, then every later send to that address is suppressed with the reason."""

from __future__ import annotations

import email
from dataclasses import replace
from email import policy

from crm_messaging.providers import THREAD_MARK, THREAD_PURPOSE
from crm_messaging.suppressions import ReportReactor, suppression_id
from crmkit import signing
from crmkit.events import RecordedEvent, new_id
from crmkit.testing import stored_events

from .conftest import World


def sent_mail(world: World, contact: dict, **body: object) -> dict:
    queued = world.send(contact_id=contact["id"], channel="email", subject="Hello", body="hi", **body).get_json()
    world.dispatch()
    message = world.get(f"/v1/messages/{queued['id']}").get_json()
    assert message["status"] == "sent", message
    return message


def outcome_of_next_send(world: World, contact: dict) -> dict:
    queued = world.send(contact_id=contact["id"], channel="email", subject="Again", body="hi").get_json()
    world.dispatch()
    return world.get(f"/v1/messages/{queued['id']}").get_json()


def receipt(world: World, message: dict, status: str, reason: str | None = None):
    return world.messaging.client.post(
        "/v1/providers/smtp/receipts",
        json={"message_id": message["id"], "status": status, **({"reason": reason} if reason else {})},
        headers={"X-Receipt-Secret": world.desk.receipt_secret()},
    )


def suppressed_events(world: World) -> list[dict]:
    return stored_events(world.messaging.runtime.db["events"], type="AddressSuppressed")


def test_a_hard_bounce_suppresses_later_sends_to_that_address_until_it_changes(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    first = sent_mail(world, sara)
    answer = receipt(world, first, "bounced", "550 5.1.1 user unknown")
    assert answer.status_code == 200 and answer.get_json()["status"] == "bounced"
    assert receipt(world, first, "bounced", "550 5.1.1 user unknown").status_code == 200  # repeated: nothing new
    [recorded] = suppressed_events(world)
    assert recorded["stream_id"] == suppression_id(sara["id"], "email")
    assert recorded["data"]["reason"] == "bounced" and recorded["data"]["source"] == "receipt"
    assert "sara@example.com" not in str(recorded)  # the address is sealed with the stream's key
    mails_before = len(world.mails())

    later = outcome_of_next_send(world, sara)
    assert (later["status"], later["reason"]) == ("suppressed", "address_bounced")
    proof = world.get(f"/v1/messages/{later['id']}/consent").get_json()
    assert proof["consent"]["granted"] is True  # consent was there: the address is what stopped it
    assert len(world.mails()) == mails_before

    patched = world.contacts.client.patch(
        f"/v1/contacts/{sara['id']}", json={"email": "sara@new.example"}, headers=world.contacts.headers()
    )
    assert patched.status_code == 200
    assert outcome_of_next_send(world, sara)["status"] == "sent"  # a new address is mailed


def test_a_complaint_suppresses_without_failing_the_delivered_message(world: World) -> None:
    bahar = world.contact(first_name="Bahar", email="bahar@example.com")
    first = sent_mail(world, bahar)
    assert receipt(world, first, "delivered").status_code == 200
    assert receipt(world, first, "complained").get_json()["status"] == "delivered"
    assert [e["data"]["reason"] for e in suppressed_events(world)] == ["complained"]
    assert outcome_of_next_send(world, bahar)["reason"] == "address_complained"


def test_a_bounce_mailed_back_to_the_service_desk_suppresses_once(world: World) -> None:
    omid = world.contact(first_name="Omid", email="omid@example.com")
    first = sent_mail(world, omid)
    message_id = first["provider_message_id"].strip("<>")
    report = RecordedEvent(
        id=new_id(),
        service="servicedesk",
        stream_id=new_id(),
        aggregate_type="mail_report",
        version=1,
        type="MailReportReceived",
        schema_version=1,
        time=world.clock(),
        actor="system:inbound-email",
        correlation_id=new_id(),
        causation_id=None,
        data={
            "report_id": "r-1",
            "kind": "bounce",
            "original_message_id": message_id,
            "feedback_type": None,
            "recipients": [{"action": "failed", "status": "5.1.1", "diagnostic": "smtp; 550 <address> unknown"}],
            "received_at": "2026-03-02T10:05:00.000Z",
        },
    )
    reactor = ReportReactor(world.desk)
    reactor.handle([report])
    reactor.handle([report])  # redelivered
    assert world.get(f"/v1/messages/{first['id']}").get_json()["status"] == "bounced"
    [recorded] = suppressed_events(world)
    assert (recorded["data"]["source"], recorded["data"]["message_id"]) == ("mail_report", first["id"])
    assert outcome_of_next_send(world, omid)["reason"] == "address_bounced"
    unknown = replace(report, id=new_id(), data={**report.data, "original_message_id": "nobody@else"})
    assert reactor.apply(unknown) is False


def test_erasure_makes_the_suppressed_address_unreadable(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    receipt(world, sent_mail(world, sara), "bounced")
    stream = suppression_id(sara["id"], "email")
    assert set(world.desk.suppressions.repository.get(stream).addresses) == {"sara@example.com"}
    world.desk.erase_contact(sara["id"])
    assert world.desk.suppressions.repository.get(stream).addresses == {}


def test_a_mail_about_a_ticket_carries_its_tag_and_a_signed_thread_token(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    sent_mail(world, sara, variables={"ticket_id": "T-42"})
    [eml] = world.mails()
    mail = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert str(mail["Subject"]) == "Hello [#T-42]"
    local = str(mail["Message-ID"]).strip("<>").rsplit("@", 1)[0]
    assert signing.verify(THREAD_PURPOSE, local.rsplit(THREAD_MARK, 1)[1]) == {"t": "T-42"}
