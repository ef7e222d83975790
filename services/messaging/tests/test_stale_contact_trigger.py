"""Data freshness, messaging's part: contacts' ContactBecameStale (the real stored event) fires the shipped
trigger `trg-contact-stale-confirm` once it is enabled; the mail is a consent-checked marketing message whose
signed link opens the contacts service's confirmation page, which records the person's answer."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import timedelta

from crm_messaging.triggers import CONFIRM_PURPOSE, TriggerReactor
from crmkit import signing
from crmkit.events import RecordedEvent, rfc3339, utcnow
from crmkit.testing import stored_events

from .conftest import World

TRIGGER = "trg-contact-stale-confirm"


def stale_contact(world: World, consents: tuple[str, ...], **fields: object) -> tuple[dict, RecordedEvent]:
    """A contact whose details were confirmed 400 days ago (stale at once), and its ContactBecameStale as stored."""
    contact = world.contact(consents, verified_at=rfc3339(utcnow() - timedelta(days=400)), **fields)
    [event] = [e for e in world.contacts.runtime.store.load(contact["id"]) if e.type == "ContactBecameStale"]
    return contact, event


def test_the_stale_trigger_ships_disabled_and_once_enabled_mails_a_signed_confirmation_link(world: World) -> None:
    sara, became_stale = stale_contact(world, ("email",), first_name="سارا", email="sara@example.com", locale="fa-IR")
    assert became_stale.full_type == "crm.contacts.ContactBecameStale.v1"
    world.messaging.project()
    shipped = world.get(f"/v1/triggers/{TRIGGER}").get_json()
    assert (shipped["enabled"], shipped["template_id"]) == (False, "tpl-confirm-details")
    assert world.get("/v1/templates/tpl-confirm-details").get_json()["category"] == "marketing"
    TriggerReactor(world.desk, topics=["crm.contacts.events"]).handle([became_stale])
    assert world.dispatch() == 0 and world.mails() == []  # off until an installation turns it on

    enabled = world.messaging.client.patch(
        f"/v1/triggers/{TRIGGER}", json={"enabled": True}, headers=world.messaging.headers()
    )
    assert enabled.status_code == 200, enabled.get_json()
    reactor = TriggerReactor(world.desk, topics=["crm.contacts.events"])
    reactor.handle([became_stale])
    reactor.handle([became_stale])  # redelivered: nothing more
    world.dispatch()
    [eml] = world.mails()
    mail = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert mail["Subject"] == "آیا مشخصات شما هنوز به‌روز است؟"  # the contact's locale
    assert mail["List-Unsubscribe"]  # marketing: it carries the unsubscribe link
    body = mail.get_body().get_content()
    [path, token] = re.findall(r"http://127\.0\.0\.1:8001(/v1/confirmations/([A-Za-z0-9_.-]+))", body)[0]
    assert signing.verify(CONFIRM_PURPOSE, token) == {"c": sara["id"], "s": became_stale.data["since"]}
    sent = stored_events(world.messaging.runtime.db["events"], type="MessageSent")
    assert len(sent) == 1 and sent[0]["data"]["consent"]["granted"] is True

    # the link opens the contacts service's page (no login), whose answer confirms the details
    page = world.contacts.client.get(path)
    assert page.status_code == 200 and 'dir="rtl"' in page.get_data(as_text=True)
    answer = world.contacts.client.post(path, json={"email": "sara.new@example.com"})
    assert answer.status_code == 200 and answer.get_json()["changed"] == ["email"]
    contact = world.contacts.client.get(f"/v1/contacts/{sara['id']}", headers=world.contacts.headers()).get_json()
    assert (contact["stale"], contact["email"], contact["verified_by"]) == (
        False,
        "sara.new@example.com",
        f"contact:{sara['id']}",
    )


def test_without_consent_the_request_to_confirm_is_suppressed(world: World) -> None:
    world.messaging.client.patch(f"/v1/triggers/{TRIGGER}", json={"enabled": True}, headers=world.messaging.headers())
    bo, became_stale = stale_contact(world, (), first_name="Bo", email="bo@example.com")
    TriggerReactor(world.desk, topics=["crm.contacts.events"]).handle([became_stale])
    world.dispatch()
    assert world.mails() == []
    [suppressed] = stored_events(world.messaging.runtime.db["events"], type="MessageSuppressed")
    assert suppressed["data"]["reason"] == "no_consent_recorded" and suppressed["data"]["contact_id"] == bo["id"]
