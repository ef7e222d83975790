"""Messaging events match their catalogue: in the store (strict mode refuses anything else)
and on the wire, with personal fields sealed as docs/events/messaging says."""

from __future__ import annotations

from pathlib import Path

from crm_messaging.catalogue import EVENTS
from crmkit.testing import stored_events_match_published_schemas

from .conftest import World

DOCS = Path(__file__).resolve().parents[3] / "docs" / "events"


def test_every_stored_event_matches_its_published_wire_schema(world: World) -> None:
    h = world.messaging.headers()
    client = world.messaging.client
    contact = world.contact(first_name="Sara", email="sara@example.com")
    tpl = client.post(
        "/v1/templates",
        headers=h,
        json={
            "name": "Hello",
            "channel": "email",
            "default_locale": "en",
            "variants": {"en": {"subject": "Hi {{ first_name }}", "body": "Hello {{ first_name }}"}},
        },
    ).get_json()
    assert (
        client.patch(
            f"/v1/templates/{tpl['id']}",
            headers=h,
            json={"name": "Hello again", "variants": {"en": {"subject": None, "body": "Hi"}, "fa": {"body": "سلام"}}},
        ).status_code
        == 200
    )
    assert (
        world.send(
            contact_id=contact["id"],
            channel="email",
            subject="Plain",
            body="Hello {{ first_name }}, {{ code }}",
            variables={"code": 7, "vip": True},
        ).status_code
        == 202
    )
    world.dispatch()
    campaign = client.post(
        "/v1/campaigns",
        headers=h,
        json={"name": "Draft", "segment_id": "seg-1", "template_id": tpl["id"], "channel": "email"},
    ).get_json()
    assert client.post(f"/v1/campaigns/{campaign['id']}/cancel", headers=h).status_code == 200
    trigger = client.post(
        "/v1/triggers",
        headers=h,
        json={
            "name": "Won",
            "event_type": "crm.sales.DealWon.v1",
            "filter": {"currency": "USD"},
            "template_id": tpl["id"],
            "channel": "email",
            "variables": {"source": "sales"},
        },
    ).get_json()
    for enabled in (False, True):
        assert client.patch(f"/v1/triggers/{trigger['id']}", headers=h, json={"enabled": enabled}).status_code == 200

    seen = stored_events_match_published_schemas(world.messaging.runtime.store, DOCS)
    assert seen >= {
        "TemplateDefined",
        "TemplateUpdated",
        "MessageQueued",
        "MessageSent",
        "CampaignCreated",
        "CampaignCancelled",
        "TriggerDefined",
        "TriggerDisabled",
        "TriggerEnabled",
    }
    assert {name for name, _ in EVENTS.types} >= seen
