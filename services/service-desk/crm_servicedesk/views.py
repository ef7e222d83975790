"""What the desk's use cases read from collections, in one place: the read side they depend on.

`TicketUseCases` (commands.py) decides on aggregates loaded from the event store, but
some answers come from read models: a page of tickets, the tickets due for the breach
sweep, a contact's tier and name, the ids of the SLA policies, a support summary.
`DeskViews` is that need, written as a protocol so the use cases run on any
implementation of it: `MongoDeskViews` here (the service's MongoDB read models), or an
in-memory one in the use-case tests (services/service-desk/tests/test_use_cases.py)
beside `crmkit.memstore.InMemoryEventStore`, no server. Every MongoDB query the desk's
use cases make is here; the documents are the projections' (`crm_servicedesk.projections`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pymongo import ASCENDING
from pymongo.database import Database

from crm_servicedesk import projections
from crm_servicedesk.domain import SlaPolicy
from crmkit.directory import ContactDirectory
from crmkit.web.pagination import page

# the keys of a ticket document a support summary reads
SUMMARY_FIELDS = ("status", "type", "breach_count", "csat", "nps", "rated_ms", "rated_at")
# the list filters that match a document key as given
EXACT_FILTERS = ("status", "assignee", "priority", "contact_id", "group", "team", "type", "channel", "customer_tier")


class DeskViews(Protocol):
    """The reads (and the local contact copy's one write) the desk's use cases need."""

    def policy_ids(self) -> list[str]:
        """The id of every SLA policy ever defined, sorted."""
        ...

    def tier(self, contact_id: str) -> str | None:
        """The contact's current customer tier, as sales last said."""
        ...

    def tiers(self, contact_ids: Sequence[str]) -> dict[str, str | None]:
        """The tiers of these contacts (those with none are left out)."""
        ...

    def contacts(self, contact_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The local copies of these contacts (names, status), unknown ones left out."""
        ...

    def remember_contact(self, contact: dict[str, Any]) -> None:
        """Keep a contact the directory just returned, so lists name them without asking again."""
        ...

    def ticket_page(
        self, filters: Mapping[str, Any], limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of ticket documents (`_id` order) matching the list filters, and the next cursor."""
        ...

    def policy_page(self, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """A page of policy documents (their API view under `_id`), and the next cursor."""
        ...

    def due_tickets(self, now_ms: int, limit: int, skip: set[str]) -> list[str]:
        """Ids of new or open tickets whose next due time is at or before `now_ms`, earliest first,
        at most `limit`, none of `skip` (those this sweep already decided)."""
        ...

    def tickets_of_contacts(self, contact_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The ticket documents of these contacts (`_id` and the SUMMARY_FIELDS)."""
        ...


def ticket_query(filters: Mapping[str, Any]) -> dict[str, Any]:
    """The MongoDB query of the ticket list's filters (those given)."""
    query: dict[str, Any] = {name: filters[name] for name in EXACT_FILTERS if filters.get(name)}
    if filters.get("tag"):
        query["tags"] = {"$in": [filters["tag"]]}  # $in: see docs/architecture.md (array equality gap)
    if filters.get("breached") is not None:
        query["breached"] = filters["breached"]
    return query


class MongoDeskViews:
    """`DeskViews` on the service's MongoDB: the `tickets`, `sla_policies`, `customer_tiers` and
    `contacts` read models, and the event store's `events` collection for the policy ids
    (policies have no projection the desk may wait for: they are read from the store)."""

    def __init__(self, db: Database[dict[str, Any]], directory: ContactDirectory) -> None:
        self.events = db["events"]
        self.tickets = db["tickets"]
        self.policies = db["sla_policies"]
        self.customer_tiers = projections.CustomerTiers(db["customer_tiers"])
        self.local_contacts = projections.local_contacts(db, directory)

    def ensure_indexes(self) -> None:
        self.events.create_index([("aggregate_type", ASCENDING)])

    def policy_ids(self) -> list[str]:
        return sorted(
            {
                doc["stream_id"]
                for doc in self.events.find(
                    {"aggregate_type": SlaPolicy.aggregate_type, "version": 1}, {"stream_id": 1}
                )
            }
        )

    def tier(self, contact_id: str) -> str | None:
        return self.customer_tiers.tier(contact_id)

    def tiers(self, contact_ids: Sequence[str]) -> dict[str, str | None]:
        return {
            doc["_id"]: doc.get("tier")
            for doc in self.customer_tiers.collection.find({"_id": {"$in": list(set(contact_ids))}})
        }

    def contacts(self, contact_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self.local_contacts.find(contact_ids)

    def remember_contact(self, contact: dict[str, Any]) -> None:
        self.local_contacts.remember(contact)

    def ticket_page(
        self, filters: Mapping[str, Any], limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return page(self.tickets, ticket_query(filters), limit, cursor)

    def policy_page(self, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        return page(self.policies, {}, limit, cursor)

    def due_tickets(self, now_ms: int, limit: int, skip: set[str]) -> list[str]:
        query: dict[str, Any] = {"next_due_ms": {"$lte": now_ms}, "status": {"$in": ["new", "open"]}}
        if skip:
            query["_id"] = {"$nin": list(skip)}
        return [doc["_id"] for doc in self.tickets.find(query, {"_id": 1}).sort("next_due_ms", ASCENDING).limit(limit)]

    def tickets_of_contacts(self, contact_ids: Sequence[str]) -> list[dict[str, Any]]:
        return list(self.tickets.find({"contact_id": {"$in": list(contact_ids)}}, dict.fromkeys(SUMMARY_FIELDS, 1)))
