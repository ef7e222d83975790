"""What the contact use cases read from collections, in one place: the read side they depend on.

`ContactUseCases` (commands.py) decides on contacts and companies loaded from the event
store, but the lists come from read models: a page of contacts matching the list's
filters, a page of companies, the candidate duplicate pairs, the stale-records report's
counts per owner and its page, the active contacts gRPC's FindContacts matches by email or
phone. `ContactViews` is that need, written as a protocol so the use cases run on any
implementation of it: `MongoContactViews` here (the service's `contacts` and `companies`
read models), or an in-memory one in the use-case tests
(services/contacts/tests/test_use_cases.py) beside `crmkit.memstore.InMemoryEventStore`, no
server. Every MongoDB query the contact use cases make is here; the documents are the
projections' (`crm_contacts.records.projections`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pymongo import DESCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from crm_contacts.records import projections
from crmkit.web.pagination import page

# the contact list's filters that match a document key as given
CONTACT_FILTERS = ("lifecycle_stage", "company_id", "owner", "team", "email", "phone")
Page = tuple[list[dict[str, Any]], str | None]
# what the stale-records report shows of each contact (besides its id)
STALE_SUMMARY = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "owner",
    "lifecycle_stage",
    "created_at",
    "verified_at",
    "stale_since",
)


class ContactViews(Protocol):
    """The reads the contact use cases need, each a page of read-model documents (`_id` order)."""

    def contact_page(self, filters: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        """Contact documents matching the list's filters: every word of `q` starting a search
        term, the CONTACT_FILTERS given, `tag` among the tags, and `status` ("active" when
        not given, any with "all")."""
        ...

    def company_page(self, filters: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        """Company documents matching the words of `q` and the `domain` given."""
        ...

    def duplicate_pairs(self, limit: int, cursor: str | None) -> Page:
        """Candidate pairs of active contacts (same email, same phone, or same folded name at
        the same company), with the reason and the suggested survivor."""
        ...

    def stale_by_owner(self, owner: str | None, lifecycle_stage: str | None, max_owners: int) -> dict[str | None, int]:
        """How many stale active contacts each owner has (None: those without an owner), of
        this owner and this lifecycle stage when given; at most `max_owners` owners."""
        ...

    def stale_page(self, owner: str | None, lifecycle_stage: str | None, limit: int, cursor: str | None) -> Page:
        """Stale active contacts (of this owner and stage when given): `_id` and the STALE_SUMMARY fields."""
        ...

    def active_ids_by_address(self, email: str | None, phone: str | None, limit: int) -> list[str]:
        """Ids of active contacts with this email or this phone (those given, as stored), the
        most recently updated first, at most `limit`."""
        ...


def contact_query(filters: Mapping[str, Any]) -> dict[str, Any]:
    """The MongoDB query of the contact list's filters (those given)."""
    query: dict[str, Any] = projections.search_query(filters.get("q") or "")
    for name in CONTACT_FILTERS:
        if filters.get(name):
            query[name] = filters[name]
    if filters.get("tag"):
        # $in, not plain equality: nx-27017 misses array equality through an index (tests/compat)
        query["tags"] = {"$in": [filters["tag"]]}
    status = filters.get("status") or "active"
    if status != "all":
        query["status"] = status
    return query


def stale_query(owner: str | None, lifecycle_stage: str | None) -> dict[str, Any]:
    """The stale active contacts (of this owner and stage when given): what the `(stale, owner)`
    and `(stale, lifecycle_stage)` indexes serve."""
    query: dict[str, Any] = {"stale": True, "status": "active"}
    for name, value in (("owner", owner), ("lifecycle_stage", lifecycle_stage)):
        if value:
            query[name] = value
    return query


class MongoContactViews:
    """`ContactViews` on the service's MongoDB: the `contacts` and `companies` read models."""

    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.contacts: Collection[dict[str, Any]] = db["contacts"]
        self.companies: Collection[dict[str, Any]] = db["companies"]

    def contact_page(self, filters: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        return page(self.contacts, contact_query(filters), limit, cursor)

    def company_page(self, filters: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        query = projections.search_query(filters.get("q") or "")
        if filters.get("domain"):
            query["domain"] = filters["domain"]
        return page(self.companies, query, limit, cursor)

    def duplicate_pairs(self, limit: int, cursor: str | None) -> Page:
        return projections.duplicate_pairs(self.contacts, limit, cursor)

    def stale_by_owner(self, owner: str | None, lifecycle_stage: str | None, max_owners: int) -> dict[str | None, int]:
        # one $group on a single field with $sum: every server we run on supports it
        groups = self.contacts.aggregate(
            [
                {"$match": stale_query(owner, lifecycle_stage)},
                {"$group": {"_id": "$owner", "count": {"$sum": 1}}},
                {"$limit": max_owners},
            ]
        )
        return {group["_id"]: group["count"] for group in groups}

    def stale_page(self, owner: str | None, lifecycle_stage: str | None, limit: int, cursor: str | None) -> Page:
        summary = {"_id": 1, **{name: 1 for name in STALE_SUMMARY}}
        return page(self.contacts, stale_query(owner, lifecycle_stage), limit, cursor, summary)

    def active_ids_by_address(self, email: str | None, phone: str | None, limit: int) -> list[str]:
        wanted = [{name: value} for name, value in (("email", email), ("phone", phone)) if value]
        if not wanted:
            return []  # $or needs a clause: nobody has no address
        found = self.contacts.find({"$or": wanted, "status": "active"}, {"_id": 1})
        return [doc["_id"] for doc in found.sort("updated_ms", DESCENDING).limit(limit)]
