"""The service desk's `customer_tiers` (from sales' CustomerTierChanged) takes a late event in its stride."""

from __future__ import annotations

from datetime import datetime

from crm_servicedesk.projections import CustomerTiers
from crmkit.events import RecordedEvent, new_id, utcnow
from crmkit.testing import ServiceHarness


def tier_changed(contact_id: str, version: int, tier: str, at: datetime) -> RecordedEvent:
    return RecordedEvent(
        new_id(),
        "sales",
        contact_id,
        "customer",
        version,
        "CustomerTierChanged",
        1,
        {"contact_id": contact_id, "tier": tier, "previous_tier": None},
        at,
        "system",
        new_id(),
        None,
    )


def test_a_late_tier_change_leaves_the_tier_as_in_order(desk: ServiceHarness) -> None:
    tiers = CustomerTiers(desk.runtime.db["customer_tiers_late"])
    at = utcnow()  # one ranking pass may record two changes of a contact within a millisecond

    def stream(cid: str) -> list[RecordedEvent]:
        return [tier_changed(cid, 1, "strategic", at), tier_changed(cid, 2, "standard", at)]

    tiers.handle(stream("ali"))
    for event in reversed(stream("sara")):  # v2 first, then the late v1, each in a poll of its own
        tiers.handle([event])
    tiers.handle(stream("sara")[:1])  # and v1 once more
    assert tiers.tier("sara") == tiers.tier("ali") == "standard"


def test_the_stream_version_decides_not_the_clock(desk: ServiceHarness) -> None:
    tiers = CustomerTiers(desk.runtime.db["customer_tiers_clock"])
    now = utcnow()
    tiers.handle([tier_changed("omid", 1, "strategic", now)])
    tiers.handle([tier_changed("omid", 2, "standard", now.replace(year=now.year - 1))])  # written by a slow clock
    assert tiers.tier("omid") == "standard"
