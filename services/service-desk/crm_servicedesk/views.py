"""What the desk's use cases read from collections, in one place: the read side they depend on.

`TicketUseCases` (commands.py) decides on aggregates loaded from the event store, but
some answers come from read models: a page of tickets, the tickets due for the breach
sweep, a contact's tier and name, the ids of the SLA policies, a support summary.
`DeskViews` is that need, written as a protocol so the use cases run on any
implementation of it: `MongoDeskViews` here (the service's MongoDB read models), or an
in-memory one in the use-case tests (services/service-desk/tests/test_use_cases.py)
beside `crmkit.memstore.InMemoryEventStore`, no server. The SLA recompute
(recompute.py) reads its policy versions and tickets through `DeskViews` too;
`ServqualViews` is what SERVQUAL's use cases (servqual_desk.py) read: for the policy's
pass solved tickets, tier members, surveys already recorded; the survey list's pages.
Every MongoDB query of those use cases and jobs is here (the reports query their read
models themselves, reports.py); the documents are the projections'
(`crm_servicedesk.projections`, `servqual_desk.SurveysView`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

from crm_servicedesk import projections
from crm_servicedesk.domain import SlaPolicy
from crmkit.directory import ContactDirectory
from crmkit.web.pagination import page

# the keys of a ticket document a support summary reads
SUMMARY_FIELDS = ("status", "type", "breach_count", "csat", "nps", "rated_ms", "rated_at")
# the list filters that match a document key as given
EXACT_FILTERS = ("status", "assignee", "priority", "contact_id", "group", "team", "type", "channel", "customer_tier")
# the survey list's filters (each matches a document key as given)
SURVEY_FILTERS = ("contact_id", "status", "rule")


@dataclass(frozen=True)
class PolicyTickets:
    """Which tickets a recompute re-folds: those under an SLA policy in one of `statuses`, and (when
    `opened_from_ms` is given) opened in [opened_from_ms, opened_to_ms) (no upper bound when that is None)."""

    statuses: tuple[str, ...]
    opened_from_ms: int | None = None
    opened_to_ms: int | None = None


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

    def policy_versions(self) -> dict[str, int]:
        """Each SLA policy's version as the policies read model has it: what the recompute worker compares
        with its last finished run (a revision it has not seen yet starts a run)."""
        ...

    def count_policy_tickets(self, which: PolicyTickets) -> int:
        """How many tickets `which` selects (the recompute's progress total)."""
        ...

    def policy_ticket_ids(self, which: PolicyTickets, after: str, limit: int) -> list[str]:
        """The ids of the tickets `which` selects, greater than `after`, in id order, at most `limit`: one
        keyset batch of a recompute, so a run resumes after the last id it checkpointed."""
        ...


class ServqualViews(Protocol):
    """What SERVQUAL's use cases read: the policy's pass, whom its rules pick and which surveys already
    exist; the survey list, a page."""

    def survey_page(
        self, filters: Mapping[str, Any], limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of survey documents (`_id` order) matching the SURVEY_FILTERS given, and the next cursor."""
        ...

    def latest_group(self, contact_id: str) -> str | None:
        """The agent group of the contact's most recently opened ticket (None: no ticket, or no group):
        the group a survey not about one ticket is attributed to."""
        ...

    def solved_tickets(
        self, start_ms: int, end_ms: int, contact_ids: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """The tickets first solved in [start_ms, end_ms] (of these contacts, when given), in no order:
        `_id`, `contact_id`, `group`, `first_solved_ms` (a reopen keeps the first solve)."""
        ...

    def count_solved(self, start_ms: int, before_ms: int) -> int:
        """How many tickets were first solved in [start_ms, before_ms): the every-Nth-overall rule's count
        of the solves a pass does not look at again."""
        ...

    def tier_members(self, tiers: Sequence[str]) -> dict[str, str | None]:
        """The contacts whose current customer tier is one of `tiers`, with that tier."""
        ...

    def surveyed(self, survey_ids: Sequence[str]) -> set[str]:
        """Which of these surveys the surveys read model already holds (so a pass does not send them again)."""
        ...


def ticket_query(filters: Mapping[str, Any]) -> dict[str, Any]:
    """The MongoDB query of the ticket list's filters (those given)."""
    query: dict[str, Any] = {name: filters[name] for name in EXACT_FILTERS if filters.get(name)}
    if filters.get("tag"):
        query["tags"] = {"$in": [filters["tag"]]}  # $in: see docs/architecture.md (array equality gap)
    if filters.get("breached") is not None:
        query["breached"] = filters["breached"]
    return query


def policy_tickets_query(which: PolicyTickets) -> dict[str, Any]:
    """The MongoDB query of a recompute's selection of tickets."""
    query: dict[str, Any] = {"has_policy": True, "status": {"$in": list(which.statuses)}}
    if which.opened_from_ms is not None:
        opened: dict[str, int] = {"$gte": which.opened_from_ms}
        if which.opened_to_ms is not None:
            opened["$lt"] = which.opened_to_ms
        query["opened_ms"] = opened
    return query


class MongoDeskViews:
    """`DeskViews` and `ServqualViews` on the service's MongoDB: the `tickets`, `sla_policies`,
    `customer_tiers`, `contacts` and `servqual_surveys` read models, and the event store's
    `events` collection for the policy ids (policies have no projection the desk may wait
    for: they are read from the store)."""

    def __init__(self, db: Database[dict[str, Any]], directory: ContactDirectory) -> None:
        self.events = db["events"]
        self.tickets = db["tickets"]
        self.policies = db["sla_policies"]
        self.customer_tiers = projections.CustomerTiers(db["customer_tiers"])
        self.local_contacts = projections.local_contacts(db, directory)
        self.surveys = db["servqual_surveys"]

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

    def policy_versions(self) -> dict[str, int]:
        return {doc["_id"]: doc["version"] for doc in self.policies.find({}, {"version": 1})}

    def count_policy_tickets(self, which: PolicyTickets) -> int:
        return self.tickets.count_documents(policy_tickets_query(which))

    def policy_ticket_ids(self, which: PolicyTickets, after: str, limit: int) -> list[str]:
        query = {**policy_tickets_query(which), "_id": {"$gt": after}}
        return [doc["_id"] for doc in self.tickets.find(query, {"_id": 1}).sort("_id", ASCENDING).limit(limit)]

    def latest_group(self, contact_id: str) -> str | None:
        latest = list(
            self.tickets.find({"contact_id": contact_id}, {"group": 1}).sort("opened_ms", DESCENDING).limit(1)
        )
        return latest[0].get("group") if latest else None

    def solved_tickets(
        self, start_ms: int, end_ms: int, contact_ids: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {} if contact_ids is None else {"contact_id": {"$in": list(contact_ids)}}
        query["first_solved_ms"] = {"$gte": start_ms, "$lte": end_ms}
        return list(self.tickets.find(query, {"contact_id": 1, "group": 1, "first_solved_ms": 1}))

    def count_solved(self, start_ms: int, before_ms: int) -> int:
        return self.tickets.count_documents({"first_solved_ms": {"$gte": start_ms, "$lt": before_ms}})

    def tier_members(self, tiers: Sequence[str]) -> dict[str, str | None]:
        return {
            doc["_id"]: doc.get("tier")
            for doc in self.customer_tiers.collection.find({"tier": {"$in": list(tiers)}}, {"tier": 1})
        }

    def survey_page(
        self, filters: Mapping[str, Any], limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        query = {name: filters[name] for name in SURVEY_FILTERS if filters.get(name)}
        return page(self.surveys, query, limit, cursor)

    def surveyed(self, survey_ids: Sequence[str]) -> set[str]:
        return {doc["_id"] for doc in self.surveys.find({"_id": {"$in": list(survey_ids)}}, {"_id": 1})}
