"""A campaign to a 10,000-member segment, end to end: contacts (real events, real contacts
projection and segment, members streamed over the real gRPC), the campaign launched over
REST, the dispatcher run to completion on the test's clock; every member is accounted for
exactly once. About two minutes on the stand-in database, most of it the stand-in's
inserts (the dispatcher needs a handful of round trips per batch of 500).
`CRM_TEST_CAMPAIGN_SIZE` runs it at another size."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from crm_contacts.domain import Contact
from crm_contacts.projections import projections as contact_projections
from crm_messaging.dispatcher import Bucket
from crm_messaging.providers import Outgoing
from crmkit.events import Metadata, new_id, rfc3339

from .conftest import World

SIZE = int(os.environ.get("CRM_TEST_CAMPAIGN_SIZE", "10000"))
BATCH = 1000


def create_contacts(world: World, size: int) -> tuple[set[str], set[str]]:
    """`size` tagged contacts (every 7th without email consent) plus a few outside the segment,
    written the way the bulk import writes them: real ContactCreated/ContactConsentChanged
    events in one `start_streams` insert per batch; then the contacts projections applied."""
    store = world.contacts.runtime.store
    meta = Metadata(actor="test:bulk", correlation_id=new_id())
    at = rfc3339(world.clock())
    members: set[str] = set()
    without_consent: set[str] = set()
    streams = []
    for i in range(size + 5):
        contact = Contact.create(new_id(), {"first_name": f"Person{i}", "email": f"p{i}@example.com",
                                            "tags": ["launch"] if i < size else ["other"]})
        if i % 7 == 3 and i < size:
            without_consent.add(contact.id)
        else:
            contact.set_consent("email", {"status": "granted", "source": "web_form", "legal_basis": "consent",
                                          "at": at})
        if i < size:
            members.add(contact.id)
        streams.append((contact.id, Contact.aggregate_type, contact.pending))
        if len(streams) == BATCH:
            store.start_streams(streams, meta)
            streams = []
    if streams:
        store.start_streams(streams, meta)
    runtime = world.contacts.runtime
    views = contact_projections(runtime.db, store, runtime.settings.topic)
    for batch in store.scan(batch_size=BATCH):
        for view in views:
            view.handle(batch)
    return members, without_consent


@pytest.mark.timeout(max(300, SIZE // 10))  # ~10 ms a member on nx-27017: 10,000 take ~2 min
def test_a_campaign_to_a_10000_member_segment_accounts_for_every_member_once(world: World) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    members, without_consent = create_contacts(world, SIZE)
    timings["contacts"] = time.monotonic() - started
    assert world.contacts.runtime.db["contacts"].count_documents({}) == SIZE + 5

    segment = world.contacts.client.post("/v1/segments", json={
        "name": "Launch", "rules": {"all": [{"field": "tags", "op": "contains", "value": "launch"}]}},
        headers=world.contacts.headers()).get_json()
    h = world.messaging.headers()
    tpl = world.messaging.client.post("/v1/templates", json={
        "name": "Launch", "channel": "email", "default_locale": "en",
        "variants": {"en": {"subject": "News for {{ first_name }}", "body": "It is here."}}}, headers=h).get_json()
    campaign = world.messaging.client.post("/v1/campaigns", json={
        "name": "Launch", "segment_id": segment["id"], "template_id": tpl["id"], "channel": "email",
        "throttle_per_minute": 100_000}, headers=h).get_json()
    assert world.messaging.client.post(f"/v1/campaigns/{campaign['id']}/launch", json={},
                                       headers=h).status_code == 200

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
        if world.desk.campaigns.get(campaign["id"]).status == "completed":
            break
        world.clock.advance(seconds=5)
    timings["dispatch"] = time.monotonic() - started
    assert world.desk.campaigns.get(campaign["id"]).status == "completed"

    started = time.monotonic()
    events = world.messaging.runtime.db["events"]
    [targeted] = [e["data"]["targeted"] for e in events.find({"stream_id": campaign["id"], "type": "CampaignTargeted"})]
    assert targeted == SIZE
    queued = list(events.find({"type": "MessageQueued"}, {"stream_id": 1, "data": 1}))
    assert all(e["data"]["campaign_id"] == campaign["id"] for e in queued)
    assert len(queued) == len({e["stream_id"] for e in queued}) == SIZE
    assert {e["data"]["contact_id"] for e in queued} == members
    contact_of = {e["stream_id"]: e["data"]["contact_id"] for e in queued}

    outcomes = list(events.find({"type": {"$in": ["MessageSent", "MessageSuppressed", "MessageFailed"]}},
                                {"stream_id": 1, "type": 1, "data": 1}))
    by_type = Counter(e["type"] for e in outcomes)
    assert by_type["MessageSent"] + by_type["MessageSuppressed"] == SIZE and not by_type["MessageFailed"]
    assert len({e["stream_id"] for e in outcomes}) == SIZE  # one outcome per message
    assert len({contact_of[e["stream_id"]] for e in outcomes}) == SIZE  # one per contact
    suppressed = {contact_of[e["stream_id"]] for e in outcomes if e["type"] == "MessageSuppressed"}
    assert suppressed == without_consent
    assert {e["data"]["reason"] for e in outcomes if e["type"] == "MessageSuppressed"} == {"no_consent_recorded"}
    assert len(sent_keys) == len(set(sent_keys)) == SIZE - len(without_consent)  # the provider: none twice

    world.messaging.project()
    stats = world.get(f"/v1/campaigns/{campaign['id']}").get_json()["stats"]
    assert stats == {"targeted": SIZE, "queued": 0, "suppressed": len(without_consent),
                     "sent": SIZE - len(without_consent), "delivered": 0, "failed": 0, "progress": 1.0}
    timings["check"] = time.monotonic() - started
    print(f"campaign of {SIZE}: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
