"""Inputs the fuzz run (tests/fuzz) turned into 500s: each is now a 4xx naming the field, and changes nothing."""

from __future__ import annotations

from .conftest import World


def test_a_launch_scheduled_at_a_time_with_no_utc_equivalent_is_422_and_leaves_the_draft(world: World) -> None:
    h = world.messaging.headers()
    template = world.messaging.client.post(
        "/v1/templates",
        headers=h,
        json={
            "name": "News",
            "channel": "email",
            "default_locale": "en",
            "variants": {"en": {"subject": "News", "body": "It is here."}},
        },
    ).get_json()
    campaign = world.messaging.client.post(
        "/v1/campaigns",
        headers=h,
        json={"name": "Spring", "segment_id": "segment-1", "template_id": template["id"], "channel": "email"},
    ).get_json()
    for moment in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):  # was a 500: OverflowError
        response = world.messaging.client.post(
            f"/v1/campaigns/{campaign['id']}/launch", headers=h, json={"scheduled_at": moment}
        )
        assert response.status_code == 422, response.get_json()
        assert set(response.get_json()["errors"]) == {"scheduled_at"}
    assert world.get(f"/v1/campaigns/{campaign['id']}").get_json()["version"] == campaign["version"]
