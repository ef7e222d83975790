"""Campaigns over a real segment (members streamed over gRPC), and triggers on other services' events."""

from __future__ import annotations

import email
import email.policy
import re

from crm_messaging.dispatcher import UNBORN_GRACE
from crm_messaging.domain import Message
from crm_messaging.triggers import TriggerReactor
from crmkit import signing
from crmkit.events import Metadata, RecordedEvent, new_id, rfc3339, utcnow
from crmkit.testing import stored_events

from .conftest import World


def test_a_campaign_reaches_a_real_segment_throttled_pausable_with_stats(world: World) -> None:
    for i in range(4):
        world.contact(first_name=f"VIP{i}", email=f"vip{i}@example.com", tags=["vip"])
    world.contact(consents=(), first_name="NoConsent", email="nc@example.com", tags=["vip"])
    world.contact(first_name="Other", email="other@example.com", tags=["other"])
    world.contacts.project()
    segment = world.contacts.client.post(
        "/v1/segments",
        json={"name": "VIPs", "rules": {"all": [{"field": "tags", "op": "contains", "value": "vip"}]}},
        headers=world.contacts.headers(),
    ).get_json()
    tpl = world.messaging.client.post(
        "/v1/templates",
        json={
            "name": "Offer",
            "channel": "email",
            "default_locale": "en",
            "variants": {"en": {"subject": "For you, {{ first_name }}", "body": "A VIP offer."}},
        },
        headers=world.messaging.headers(),
    ).get_json()
    h = world.messaging.headers()
    campaign = world.messaging.client.post(
        "/v1/campaigns",
        json={
            "name": "VIP offer",
            "segment_id": segment["id"],
            "template_id": tpl["id"],
            "channel": "email",
            "throttle_per_minute": 60,
        },
        headers=h,
    ).get_json()
    assert campaign["status"] == "draft"
    launched = world.messaging.client.post(f"/v1/campaigns/{campaign['id']}/launch", json={}, headers=h)
    assert launched.status_code == 200 and launched.get_json()["status"] == "running"
    again = world.messaging.client.post(f"/v1/campaigns/{campaign['id']}/launch", json={}, headers=h)
    assert again.status_code == 409

    world.dispatch()  # expands the segment, then sends as fast as the throttle allows (1 per second)
    world.messaging.project()
    stats = world.get(f"/v1/campaigns/{campaign['id']}").get_json()["stats"]
    assert stats["targeted"] == 5 and stats["suppressed"] == 1 and stats["sent"] == 1
    assert world.messaging.client.post(f"/v1/campaigns/{campaign['id']}/pause", headers=h).status_code == 200
    world.clock.advance(seconds=30)
    world.dispatch()
    assert len(world.mails()) == 1  # paused: nothing more goes out
    assert world.messaging.client.post(f"/v1/campaigns/{campaign['id']}/resume", headers=h).status_code == 200
    for _ in range(5):
        world.clock.advance(seconds=5)
        world.dispatch()
    world.messaging.project()
    done = world.get(f"/v1/campaigns/{campaign['id']}").get_json()
    assert done["stats"] == {
        "queued": 0,
        "suppressed": 1,
        "sent": 4,
        "delivered": 0,
        "failed": 0,
        "targeted": 5,
        "progress": 1.0,
    }
    assert done["status"] == "completed"
    assert len(world.mails()) == 4
    events = [e.type for e in world.messaging.runtime.store.load(campaign["id"])]
    assert events[:3] == ["CampaignCreated", "CampaignLaunched", "CampaignTargeted"]
    assert world.messaging.client.post(f"/v1/campaigns/{campaign['id']}/pause", headers=h).status_code == 409


def test_default_triggers_send_the_survey_once_even_when_the_event_comes_again(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    world.messaging.project()
    listed = world.get("/v1/triggers").get_json()["items"]
    assert {t["id"] for t in listed} >= {"trg-ticket-solved-survey", "trg-deal-won-welcome"}
    solved = RecordedEvent(
        id=new_id(),
        service="servicedesk",
        stream_id="ticket-1",
        aggregate_type="ticket",
        version=3,
        type="TicketSolved",
        schema_version=1,
        data={"ticket_id": "T-42", "contact_id": sara["id"]},
        time=utcnow(),
        actor="user:agent",
        correlation_id="c",
        causation_id=None,
    )
    assert solved.full_type == "crm.servicedesk.TicketSolved.v1"
    reactor = TriggerReactor(world.desk, topics=["crm.servicedesk.events"])
    reactor.handle([solved])
    reactor.handle([solved])  # redelivered
    world.dispatch()
    [eml] = world.mails()
    text = eml.read_text()
    assert "Subject: How did we do? (ticket T-42)" in text
    body = email.message_from_string(text, policy=email.policy.default).get_body().get_content()
    [token] = re.findall(r"http://127\.0\.0\.1:8003/v1/surveys/([A-Za-z0-9_.-]+)", body)
    assert signing.verify("survey", token) == {"ticket_id": "T-42", "contact_id": sara["id"]}
    world.messaging.project()
    assert len(world.get(f"/v1/messages?contact_id={sara['id']}").get_json()["items"]) == 1

    custom = world.messaging.client.post(
        "/v1/triggers",
        json={
            "name": "Big deals",
            "event_type": "crm.sales.DealWon.v1",
            "filter": {"currency": "IRR"},
            "template_id": "tpl-welcome",
            "channel": "email",
        },
        headers=world.messaging.headers(),
    )
    assert custom.status_code == 201
    trigger = world.desk.triggers.get(custom.get_json()["id"])
    assert trigger.matches("crm.sales.DealWon.v1", {"currency": "IRR", "contact_id": "x"})
    assert not trigger.matches("crm.sales.DealWon.v1", {"currency": "EUR", "contact_id": "x"})


def deal_won(contact_id: object, currency: str = "IRR") -> RecordedEvent:
    deal_id = new_id()
    return RecordedEvent(
        id=new_id(),
        service="sales",
        stream_id=deal_id,
        aggregate_type="deal",
        version=4,
        type="DealWon",
        schema_version=1,
        time=utcnow(),
        actor="user:ana",
        correlation_id="c",
        causation_id=None,
        data={"deal_id": deal_id, "contact_id": contact_id, "currency": currency, "amount": "10.00"},
    )


def test_a_batch_of_events_queues_one_message_per_trigger_and_event_in_one_go(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    omid = world.contact(first_name="Omid", email="omid@example.com")
    custom = world.messaging.client.post(
        "/v1/triggers",
        json={
            "name": "Rial deals",
            "event_type": "crm.sales.DealWon.v1",
            "filter": {"currency": "IRR"},
            "template_id": "tpl-welcome",
            "channel": "email",
            "variables": {"source": "rial"},
        },
        headers=world.messaging.headers(),
    ).get_json()
    for_sara, for_omid = deal_won(sara["id"]), deal_won(omid["id"], currency="EUR")
    batch = [for_sara, for_sara, for_omid, deal_won("no-such-contact"), deal_won(None)]  # one event redelivered

    reactor = TriggerReactor(world.desk, topics=["crm.sales.events"])  # a fresh worker finds the new trigger
    reactor.handle(batch)
    reactor.handle([for_sara])  # and again, in a later batch

    events = world.messaging.runtime.db["events"]
    queued = [(e["data"]["contact_id"], e["data"]["trigger_id"]) for e in stored_events(events, type="MessageQueued")]
    assert sorted(queued) == sorted(
        [(sara["id"], "trg-deal-won-welcome"), (sara["id"], custom["id"]), (omid["id"], "trg-deal-won-welcome")]
    )  # EUR: not the custom trigger's
    assert world.dispatch() == 3
    assert len(world.mails()) == 3


def test_an_entry_whose_message_never_arrived_waits_then_is_let_go(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    late = Message.queue(
        new_id(),
        {"contact_id": sara["id"], "channel": "email", "body": "late", "category": "transactional"},
        rfc3339(world.clock()),
    )
    lost = Message.queue(
        new_id(),
        {"contact_id": sara["id"], "channel": "email", "body": "lost", "category": "transactional"},
        rfc3339(world.clock()),
    )
    world.desk.schedule_messages([late, lost])  # the writers are between their two writes (or died there)
    world.dispatch()
    schedule = world.messaging.runtime.db["schedule"]
    assert {e["_id"]: e["state"] for e in schedule.find({"_id": {"$in": [late.id, lost.id]}})} == {
        late.id: "pending",
        lost.id: "pending",
    }

    world.desk.messages.save(late, Metadata(actor="test", correlation_id="c"))  # one append lands
    world.clock.advance(seconds=5)
    world.dispatch()
    assert world.desk.messages.get(late.id).status == "sent"
    world.clock.advance(seconds=UNBORN_GRACE.total_seconds())
    world.dispatch()
    assert schedule.find_one({"_id": lost.id})["state"] == "done"  # nothing to send: the writer died
    assert len(world.mails()) == 1
