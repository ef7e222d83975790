"""A person's tickets, for their data subject access request (ExportContactRecords).

Found as erasure finds them: in the event store by the `refs` of their events, so a ticket
no read model has folded yet is exported too, then folded from the store with its comments,
satisfaction rating, SLA clocks and breaches. A ticket that names the person no more (moved to
the survivor of a merge they are not part of) is not theirs and is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crm_servicedesk.commands import TicketDesk
from crm_servicedesk.domain import Ticket
from crmkit import clock


def contact_records(desk: TicketDesk, contact_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """{"tickets": [...]} of these contact ids, each as its REST GET shows it, oldest first."""
    wanted = set(contact_ids)
    streams = desk.runtime.store.streams_referring(list(contact_ids), [Ticket.aggregate_type])
    tickets = [
        ticket
        for ticket in desk.tickets.get_many(sorted(stream for stream, _ in streams)).values()
        if ticket.contact_id in wanted
    ]
    now = clock.now()
    views = [ticket.view(now) for ticket in tickets]
    return {"tickets": sorted(views, key=lambda view: (str(view.get("created_at") or ""), view["id"]))}
