"""Triggers react to each event of another service once, whatever order a stream's events arrive in."""

from __future__ import annotations

from crm_messaging.triggers import TriggerReactor
from crmkit.events import RecordedEvent, new_id, utcnow
from crmkit.testing import stored_events

from .conftest import World


def won_twice(contact_id: str) -> list[RecordedEvent]:
    """A deal won (v2), reopened, and won again (v4): two welcome triggers."""
    deal_id = new_id()
    return [
        RecordedEvent(
            id=new_id(),
            service="sales",
            stream_id=deal_id,
            aggregate_type="deal",
            version=version,
            type="DealWon",
            schema_version=1,
            time=utcnow(),
            actor="user:ana",
            correlation_id="c",
            causation_id=None,
            data={"deal_id": deal_id, "contact_id": contact_id, "currency": "EUR", "amount": "10.00"},
        )
        for version in (2, 4)
    ]


def test_a_late_event_fires_its_trigger_as_in_order(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")["id"]
    omid = world.contact(first_name="Omid", email="omid@example.com")["id"]
    reactor = TriggerReactor(world.desk, topics=["crm.sales.events"])
    in_order, late = won_twice(sara), won_twice(omid)
    reactor.handle(in_order)
    for event in reversed(late):  # v4 first; the late v2 is no stale version to skip but an event of its own
        reactor.handle([event])
    reactor.handle(late[:1])  # redelivered: nothing more

    queued = stored_events(world.messaging.runtime.db["events"], type="MessageQueued")
    causes = sorted(
        (e["data"]["contact_id"], e["causation_id"])
        for e in queued
        if e["data"]["trigger_id"] == "trg-deal-won-welcome"
    )
    assert causes == sorted([(sara, e.id) for e in in_order] + [(omid, e.id) for e in late])
