"""What the service desk does when another service records an event (crmkit.reactions).

The worker builds its projections of other services' topics from `table`; nothing else
in the service reacts to another service's events.
"""

from __future__ import annotations

from crm_servicedesk import projections
from crm_servicedesk.commands import TicketDesk
from crmkit.projector import Projection
from crmkit.reactions import Reaction, Reactions
from crmkit.runtime import Runtime


def table(desk: TicketDesk) -> Reactions:
    return Reactions(
        "service-desk",
        Reaction(
            "contacts",
            ("ContactMerged",),
            "re-point the duplicate's tickets to the survivor, naming the merge",
            desk.repoint_contact,
        ),
        Reaction(
            "contacts", ("ContactUnmerged",), "move back the tickets that merge re-pointed", desk.contact_unmerged
        ),
        Reaction(
            "contacts",
            ("ContactErased",),
            "scrub the person's words from every ticket, forget their keys",
            desk.erase_contact,
        ),
        Reaction(
            "sales",
            ("CustomerTierChanged",),
            "keep each contact's tier (customer_tiers): it picks the SLA policy of a ticket opened for them",
            desk.tiers,
        ),
    )


def worker_projections(runtime: Runtime) -> list[Projection]:
    """The worker's projections of other services' topics: the local contacts copy with the table's hooks,
    and the table's own projections."""
    desk = TicketDesk(runtime)
    reactions = table(desk)
    return [
        projections.local_contacts(runtime.db, desk.directory, **reactions.contact_hooks()),
        *reactions.projections(),
    ]
