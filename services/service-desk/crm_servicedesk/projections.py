"""Read models of the service desk: tickets, SLA policies, and what it learns from others.

- `tickets`: one document per ticket: the aggregate's state (`state`, folded by the
  same domain code as the write side) plus the keys lists, filters, the sweep and the
  reports query (status, priority, `next_due_ms`, `opened_ms`, minutes, rating...).
- `sla_policies`: one document per policy (its API view).
- `customer_tiers`: each contact's tier, from sales' `CustomerTierChanged` events.
- `contacts`: `crmkit.directory.LocalContacts` (names for lists; erasure and merges).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database

from crm_servicedesk.domain import SlaPolicy, Ticket, due_ms
from crmkit import clock
from crmkit.config import topic_of
from crmkit.directory import ContactDirectory, LocalContacts
from crmkit.events import RecordedEvent, epoch_ms, text_ms
from crmkit.eventstore import EventStore
from crmkit.projector import AggregateView


def ticket_document(ticket: Ticket) -> dict[str, Any]:
    """The read-model document of a ticket: its state plus what queries filter and sort on."""
    now = clock.now()
    rating = ticket.satisfaction or {}
    return {
        "state": ticket.snapshot(),
        "created_at": ticket.created_at,
        "updated_at": ticket.updated_at,
        "contact_id": ticket.contact_id,
        "status": ticket.status,
        "priority": ticket.priority,
        "assignee": ticket.assignee,
        "group": ticket.group,
        "team": ticket.team,
        "type": ticket.type,
        "channel": ticket.channel,
        "tags": ticket.tags,
        "customer_tier": ticket.customer_tier,
        "company_id": ticket.company_id,
        "deal_id": ticket.deal_id,
        "breached": bool(ticket.breaches),
        "breach_count": len(ticket.breaches),
        "breached_targets": sorted({b["target"] for b in ticket.breaches.values()}),
        **breach_times(ticket),
        "policy_id": (ticket.policy or {}).get("id"),
        "next_due_ms": due_ms(ticket.next_due(now)) if ticket.status in ("new", "open") else due_ms(None),
        "opened_ms": text_ms(ticket.opened_at),
        "solved_ms": text_ms(ticket.solved_at),
        # when it was first solved (a reopen keeps it): what SERVQUAL's every-Nth-solved rules count by
        "first_solved_ms": text_ms(ticket.solved_periods[0][0]) if ticket.solved_periods else None,
        "first_response_minutes": ticket.first_response_minutes(),
        "resolution_minutes": ticket.resolution_minutes() if ticket.solved_at else None,
        "sla_outcomes": {t["target"]: t["status"] for t in ticket.sla(now) if t["status"] in ("met", "breached")},
        "has_policy": ticket.policy is not None,
        "csat": rating.get("csat"),
        "nps": rating.get("nps"),
        "servqual": rating.get("servqual"),
        "rated_ms": text_ms(rating.get("at")),
        "rated_at": rating.get("at"),
    }


def breach_times(ticket: Ticket) -> dict[str, Any]:
    """When each breach happened (`breach_list`; the due time, however late it was found), and the first and
    last as epoch ms, so a report finds the tickets with a breach in its period on two plain fields."""
    found = sorted(
        (
            {
                "key": key,
                "target": b["target"],
                "priority": b.get("priority") or ticket.priority,
                "due_at": b["due_at"],
                "breached_at": b["breached_at"],
                "detected_at": b.get("detected_at"),
                "breached_ms": text_ms(b["breached_at"]),
            }
            for key, b in ticket.breaches.items()
        ),
        key=lambda b: (b["breached_ms"], b["key"]),
    )
    return {
        "breach_list": found,
        "first_breach_ms": found[0]["breached_ms"] if found else None,
        "last_breach_ms": found[-1]["breached_ms"] if found else None,
    }


class TicketsView(AggregateView):
    """One document per ticket (`ticket_document`): restored, folded and written back by the chassis."""

    kind = Ticket

    def document(self, aggregate: Ticket) -> dict[str, Any]:
        return ticket_document(aggregate)

    def ensure_indexes(self) -> None:
        for key in (
            "contact_id",
            "status",
            "assignee",
            "priority",
            "breached",
            "next_due_ms",
            "opened_ms",
            "group",
            "tags",
            "customer_tier",
            "last_breach_ms",
            "first_solved_ms",
            "team",
        ):
            self.collection.create_index([(key, ASCENDING)])


class PoliciesView(AggregateView):
    """One document per SLA policy: its API view (the id is the document's `_id`)."""

    kind = SlaPolicy

    def document(self, aggregate: SlaPolicy) -> dict[str, Any]:
        view = aggregate.view()
        view.pop("id")
        return view

    def ensure_indexes(self) -> None:
        pass


class CustomerTiers:
    """Each contact's current tier, from sales' CustomerTierChanged (`contact_id`, `tier`, `previous_tier`).

    Documents: `_id` = contact id, `tier`, `version`, `at_ms` (the event's time) and
    `event_id`. Sales records a contact's tier changes on one stream (its customer, id =
    contact id), so the stream version orders them: an older or repeated event changes
    nothing, whichever order they arrive in, and times from different clocks never
    decide. (A document from before versions were kept is compared by time.)
    """

    name = "customer_tiers"

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self.topics = (topic_of("sales"),)

    def handle(self, events: Sequence[RecordedEvent]) -> None:
        latest: dict[str, RecordedEvent] = {}
        for event in events:
            if event.service != "sales" or event.type != "CustomerTierChanged" or not event.data.get("contact_id"):
                continue
            cid = event.data["contact_id"]
            if cid not in latest or event.version > latest[cid].version:
                latest[cid] = event
        if not latest:
            return
        known = {doc["_id"]: doc for doc in self.collection.find({"_id": {"$in": list(latest)}})}
        writes = [
            UpdateOne(
                {"_id": cid},
                {
                    "$set": {
                        "tier": event.data.get("tier"),
                        "version": event.version,
                        "at_ms": epoch_ms(event.time),
                        "event_id": event.id,
                    }
                },
                upsert=True,
            )
            for cid, event in latest.items()
            if cid not in known or _newer(event, known[cid])
        ]
        if writes:
            self.collection.bulk_write(writes, ordered=False)

    def tier(self, contact_id: str) -> str | None:
        doc = self.collection.find_one({"_id": contact_id})
        return doc.get("tier") if doc else None

    def reset(self) -> None:
        self.collection.delete_many({})

    def ensure_indexes(self) -> None:
        pass


def _newer(event: RecordedEvent, known: dict[str, Any]) -> bool:
    if "version" in known:
        return event.version > known["version"]
    return epoch_ms(event.time) >= known.get("at_ms", 0)


def tickets_view(db: Database, store: EventStore, topic: str) -> TicketsView:
    return TicketsView("tickets", db["tickets"], store, topic)


def policies_view(db: Database, store: EventStore, topic: str) -> PoliciesView:
    return PoliciesView("sla_policies", db["sla_policies"], store, topic)


def local_contacts(
    db: Database,
    directory: ContactDirectory,
    on_merged: Callable[[str, str, str | None], Any] | None = None,
    on_erased: Callable[[str], Any] | None = None,
    on_unmerged: Callable[[str, str, str | None], Any] | None = None,
) -> LocalContacts:
    return LocalContacts(
        "contacts",
        db["contacts"],
        directory,
        on_merged=on_merged,
        on_erased=on_erased,
        on_unmerged=on_unmerged,
        service="service-desk",
    )
