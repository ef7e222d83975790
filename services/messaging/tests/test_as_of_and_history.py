"""`?as_of=` and `/history` on messaging's records (issue 16), through the REST API: a message,
a template, a campaign and a trigger as they were at a moment, and every change to them
(who, what, when, before and after), paged by version; a time before the record existed
is a 404, a time that is no time a 422. Also what the OpenAPI document promises about the
answers (issue 18): list items carry no store key, /v1/templates/preview is only a POST."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from crmkit.events import parse_time, rfc3339, utcnow

from .conftest import World

TEMPLATE = {
    "name": "Hello",
    "channel": "email",
    "default_locale": "en",
    "variants": {"en": {"subject": "Hi {{ first_name }}", "body": "Hello"}},
}


def after(stamp: str) -> None:
    """Let the clock pass `stamp`: event times have millisecond precision."""
    while utcnow() <= parse_time(stamp):
        time.sleep(0.001)


def ok(response: Any, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.get_json()
    return response.get_json()


def at(world: World, path: str, moment: str) -> Any:
    return world.messaging.client.get(path, query_string={"as_of": moment}, headers=world.messaging.headers())


def history(world: World, path: str, **query: object) -> dict[str, Any]:
    return ok(world.messaging.client.get(f"{path}/history", query_string=query, headers=world.messaging.headers()))


def test_a_message_as_it_was_and_its_history(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    queued = ok(world.send(contact_id=sara["id"], channel="email", subject="Hi", body="Hello Sara"), 202)
    after(queued["created_at"])
    world.dispatch()
    sent = ok(world.get(f"/v1/messages/{queued['id']}"))
    after(sent["updated_at"])
    ok(
        world.messaging.client.post(
            "/v1/providers/smtp/receipts",
            json={"message_id": queued["id"], "status": "delivered"},
            headers={"X-Receipt-Secret": world.desk.receipt_secret()},
        )
    )

    path = f"/v1/messages/{queued['id']}"
    then = at(world, path, queued["created_at"])
    assert then.status_code == 200 and then.headers["ETag"] == '"1"'
    assert (then.get_json()["status"], then.get_json()["address"]) == ("queued", None)
    middle = ok(at(world, path, sent["updated_at"]))
    assert (middle["status"], middle["address"], middle["version"]) == ("sent", "sara@example.com", 2)
    assert ok(world.get(path))["status"] == "delivered"
    assert at(world, path, rfc3339(parse_time(queued["created_at"]) - timedelta(seconds=5))).status_code == 404
    bad = at(world, path, "2026-13-01T00:00:00Z")
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"as_of"}

    first = history(world, path, limit=2)
    assert [(e["version"], e["type"]) for e in first["items"]] == [(1, "MessageQueued"), (2, "MessageSent")]
    assert first["items"][1]["changes"]["status"] == {"before": "queued", "after": "sent"}
    assert first["items"][1]["changes"]["address"] == {"before": None, "after": "sara@example.com"}
    assert first["items"][0]["actor"] == "user:tester"
    rest = history(world, path, limit=2, cursor=first["next_cursor"])
    assert [e["type"] for e in rest["items"]] == ["MessageDelivered"] and rest["next_cursor"] is None
    assert rest["items"][0]["changes"]["status"] == {"before": "sent", "after": "delivered"}


def test_a_template_as_it_was_and_its_history(world: World) -> None:
    h = world.messaging.headers()
    template = ok(world.messaging.client.post("/v1/templates", json=TEMPLATE, headers=h), 201)
    after(template["created_at"])
    path = f"/v1/templates/{template['id']}"
    renamed = ok(world.messaging.client.patch(path, json={"name": "Welcome"}, headers=h))
    after(renamed["updated_at"])
    ok(world.messaging.client.patch(path, json={"category": "transactional"}, headers=h))

    assert ok(at(world, path, template["created_at"]))["name"] == "Hello"
    middle = ok(at(world, path, renamed["updated_at"]))
    assert (middle["name"], middle["category"], middle["version"]) == ("Welcome", "marketing", 2)
    assert ok(world.get(path))["category"] == "transactional"
    assert at(world, path, "2020-01-01T00:00:00+03:30").status_code == 404
    assert at(world, path, "not a time").status_code == 422

    entries = history(world, path)["items"]
    assert [e["type"] for e in entries] == ["TemplateDefined", "TemplateUpdated", "TemplateUpdated"]
    assert entries[1]["changes"] == {"name": {"before": "Hello", "after": "Welcome"}}
    assert entries[2]["changes"] == {"category": {"before": "marketing", "after": "transactional"}}
    assert world.get("/v1/templates/no-such-template/history").status_code == 404


def test_a_campaign_as_it_was_has_no_stats_and_its_history_shows_each_step(world: World) -> None:
    h = world.messaging.headers()
    segment = ok(
        world.contacts.client.post(
            "/v1/segments",
            json={"name": "Leads", "rules": {"all": [{"field": "lifecycle_stage", "op": "eq", "value": "lead"}]}},
            headers=world.contacts.headers(),
        ),
        201,
    )
    template = ok(world.messaging.client.post("/v1/templates", json=TEMPLATE, headers=h), 201)
    campaign = ok(
        world.messaging.client.post(
            "/v1/campaigns",
            json={"name": "Spring", "segment_id": segment["id"], "template_id": template["id"], "channel": "email"},
            headers=h,
        ),
        201,
    )
    after(campaign["created_at"])
    path = f"/v1/campaigns/{campaign['id']}"
    ok(world.messaging.client.post(f"{path}/launch", json={"scheduled_at": "2099-01-01T09:00:00Z"}, headers=h))
    ok(world.messaging.client.post(f"{path}/cancel", headers=h))

    then = ok(at(world, path, campaign["created_at"]))
    assert (then["status"], then["scheduled_at"], then["stats"]) == ("draft", None, None)
    now = ok(world.get(path))
    assert now["status"] == "cancelled" and now["stats"]["targeted"] == 0
    entries = history(world, path)["items"]
    assert [e["type"] for e in entries] == ["CampaignCreated", "CampaignLaunched", "CampaignCancelled"]
    assert entries[1]["changes"]["status"] == {"before": "draft", "after": "running"}
    assert entries[1]["changes"]["scheduled_at"] == {"before": None, "after": "2099-01-01T09:00:00.000Z"}
    assert entries[2]["changes"] == {"status": {"before": "running", "after": "cancelled"}}


def test_a_trigger_as_it_was_and_its_history(world: World) -> None:
    h = world.messaging.headers()
    template = ok(world.messaging.client.post("/v1/templates", json=TEMPLATE, headers=h), 201)
    trigger = ok(
        world.messaging.client.post(
            "/v1/triggers",
            json={
                "name": "Won",
                "event_type": "crm.sales.DealWon.v1",
                "template_id": template["id"],
                "channel": "email",
            },
            headers=h,
        ),
        201,
    )
    after(trigger["created_at"])
    path = f"/v1/triggers/{trigger['id']}"
    ok(world.messaging.client.patch(path, json={"enabled": False}, headers=h))

    assert ok(at(world, path, trigger["created_at"]))["enabled"] is True
    assert ok(world.get(path))["enabled"] is False
    entries = history(world, path)["items"]
    assert [e["type"] for e in entries] == ["TriggerDefined", "TriggerDisabled"]
    assert entries[1]["changes"] == {"enabled": {"before": True, "after": False}}
    assert world.get(f"{path}/history?cursor=x").status_code == 422


def test_lists_show_records_as_documented_without_the_store_key(world: World) -> None:
    h = world.messaging.headers()
    template = ok(world.messaging.client.post("/v1/templates", json=TEMPLATE, headers=h), 201)
    world.messaging.project()
    items = ok(world.get("/v1/templates?limit=100"))["items"]
    assert template["id"] in [item["id"] for item in items]
    assert all("_id" not in item for item in items)
    document = ok(world.get("/openapi.json"))
    view = document["components"]["schemas"]["TemplateView"]
    assert view["additionalProperties"] is False
    assert set(items[0]) <= set(view["properties"])


def test_the_preview_path_is_only_a_post(world: World) -> None:
    """GET or PATCH /v1/templates/preview is not a template called "preview" but a method the
    path does not have: 405, whose Allow names only POST (what the document lists)."""
    for method in ("get", "patch", "put"):
        response = getattr(world.messaging.client, method)("/v1/templates/preview", headers=world.messaging.headers())
        assert response.status_code == 405, (method, response.get_json())
        assert {m.strip() for m in response.headers["Allow"].split(",")} - {"OPTIONS"} == {"POST"}
    preview = world.messaging.client.post(
        "/v1/templates/preview",
        json={"body": "Hi {{ name }}", "variables": {"name": "Sara"}},
        headers=world.messaging.headers(),
    )
    assert ok(preview) == {"locale": "", "subject": None, "body": "Hi Sara"}
