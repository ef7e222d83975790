"""What messaging does when another service records an event (crmkit.reactions).

The worker builds its projections of other services' topics from `table`: the local copy
of contacts (`MessageDesk.contacts`, built with the table's hooks), the trigger reactor
and the mail-report reactor; nothing else in the service reacts to another service's events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crmkit.reactions import ANY_EVENT, ContactHooks, Reaction, Reactions

if TYPE_CHECKING:
    from crm_messaging.commands import MessageDesk
    from crmkit.projector import Projection


def contact_reactions(desk: MessageDesk) -> list[Reaction]:
    return [
        Reaction(
            "contacts",
            ("ContactMerged",),
            "the duplicate's messages show on the survivor, naming the merge",
            desk.contact_merged,
        ),
        Reaction(
            "contacts",
            ("ContactUnmerged",),
            "the messages that merge moved are the duplicate's again",
            desk.contact_unmerged,
        ),
        Reaction(
            "contacts",
            ("ContactErased",),
            "the person's bodies, addresses and variables become unreadable",
            desk.erase_contact,
        ),
    ]


def contact_hooks(desk: MessageDesk) -> ContactHooks:
    """The hooks of `MessageDesk.contacts`, its local copy of contacts."""
    return Reactions("messaging", *contact_reactions(desk)).contact_hooks()


def table(desk: MessageDesk, triggers: Projection, reports: Projection) -> Reactions:
    """`triggers`: crm_messaging.triggers.TriggerReactor; `reports`: crm_messaging.suppressions.ReportReactor."""
    return Reactions(
        "messaging",
        *contact_reactions(desk),
        Reaction("service-desk", ("TicketSolved",), "email the satisfaction survey (default trigger)", triggers),
        Reaction("service-desk", ("ServqualSurveySent",), "email the SERVQUAL questionnaire's link", triggers),
        Reaction("contacts", ("ContactBecameStale",), "email a signed link to confirm one's details", triggers),
        Reaction("sales", ("DealWon",), "email the welcome (default trigger)", triggers),
        Reaction("service-desk", (ANY_EVENT,), "whatever an enabled trigger names: send its template", triggers),
        Reaction("sales", (ANY_EVENT,), "whatever an enabled trigger names: send its template", triggers),
        Reaction("contacts", (ANY_EVENT,), "whatever an enabled trigger names: send its template", triggers),
        Reaction(
            "service-desk",
            ("MailReportReceived",),
            "a bounce or complaint about our mail suppresses the address",
            reports,
        ),
    )


def worker_projections(desk: MessageDesk) -> list[Projection]:
    """The worker's projections of other services' topics, from the table."""
    from crm_messaging.suppressions import ReportReactor
    from crm_messaging.triggers import TriggerReactor

    return [desk.contacts, *table(desk, TriggerReactor(desk), ReportReactor(desk)).projections()]
