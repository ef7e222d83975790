"""A campaign to a 10,000-member segment, end to end: contacts (real events, real contacts
projection and segment, members streamed over the real gRPC), the campaign launched over
REST, the dispatcher run to completion on the test's clock; every member is accounted for
exactly once. About three minutes on the stand-in database, most of it the stand-in's
inserts (the dispatcher needs a handful of round trips per batch of 500, and one append
per send so that a crash re-sends at most the message in flight).
`CRM_TEST_CAMPAIGN_SIZE` runs it at another size."""

from __future__ import annotations

import os
import time

import pytest

from crm_messaging.dispatcher import Bucket
from crm_messaging.providers import Outgoing

from .conftest import World, bulk_audience, every_member_accounted_for_once, launch_campaign

SIZE = int(os.environ.get("CRM_TEST_CAMPAIGN_SIZE", "10000"))


@pytest.mark.timeout(max(300, SIZE // 10))  # ~15 ms a member on nx-27017: 10,000 take ~3 min
def test_a_campaign_to_a_10000_member_segment_accounts_for_every_member_once(world: World) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    audience = bulk_audience(world, SIZE, "launch")
    timings["contacts"] = time.monotonic() - started
    assert world.contacts.runtime.db["contacts"].count_documents({}) == SIZE + 5
    campaign_id = launch_campaign(world, "launch", throttle_per_minute=100_000)

    sent_keys: list[str] = []

    class Recording:
        name = "recording"

        def send(self, message: Outgoing) -> str:
            sent_keys.append(message.key)
            return f"r-{message.key}"

        def close(self) -> None:
            pass

    world.dispatcher.providers["email"] = Recording()
    world.dispatcher.channel_buckets["email"] = Bucket(1_000_000)  # CRM_MESSAGING_EMAIL_PER_MINUTE raised
    started = time.monotonic()
    for _ in range(SIZE):  # each round: all that is due, then the clock moves on 5 s
        world.dispatch()
        if world.desk.campaigns.get(campaign_id).status == "completed":
            break
        world.clock.advance(seconds=5)
    timings["dispatch"] = time.monotonic() - started
    assert world.desk.campaigns.get(campaign_id).status == "completed"

    started = time.monotonic()
    sent = every_member_accounted_for_once(world, campaign_id, audience)
    assert len(sent_keys) == len(set(sent_keys)) == len(sent)  # the provider: none twice
    assert set(sent_keys) == sent

    world.messaging.project()
    stats = world.get(f"/v1/campaigns/{campaign_id}").get_json()["stats"]
    assert stats == {
        "targeted": SIZE,
        "queued": 0,
        "suppressed": len(audience.without_consent),
        "sent": SIZE - len(audience.without_consent),
        "delivered": 0,
        "failed": 0,
        "progress": 1.0,
    }
    timings["check"] = time.monotonic() - started
    print(f"campaign of {SIZE}: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
