"""What contacts does when another service records an event (crmkit.reactions).

The worker runs the projections of this table; nothing else in the service changes a
contact because of another service's events. (The insight views, `insight_deals`,
`insight_tickets` and `insight_tiers` in insights/projections.py, read other services'
events too, but only to count them for reports: they change no contact.)
"""

from __future__ import annotations

from crm_contacts.records import lifecycle
from crmkit.reactions import Reaction, Reactions
from crmkit.runtime import Runtime


def table(runtime: Runtime) -> Reactions:
    automation, derived = lifecycle.projections(runtime)
    return Reactions(
        "contacts",
        Reaction(
            "sales",
            ("DealCreated",),
            "a lead's or subscriber's first deal makes them an opportunity (lifecycle rule deal-opened)",
            automation,
        ),
        Reaction(
            "sales",
            ("DealWon",),
            "record the purchase: the contact is a customer (a churned one won back), its at-risk flag cleared",
            automation,
        ),
        Reaction(
            "sales",
            ("CustomerTierChanged",),
            "keep the derived values (tier, lifetime value, RFM) that segments select on (contact_derived, derived.*)",
            derived,
        ),
    )
