"""What the contact use cases read from collections, in one place: the read side they depend on.

`ContactUseCases` (commands.py) decides on contacts and companies loaded from the event
store, but the lists come from read models: a page of contacts matching the list's
filters, a page of companies, the candidate duplicate pairs. `ContactViews` is that need,
written as a protocol so the use cases run on any implementation of it: `MongoContactViews`
here (the service's `contacts` and `companies` read models), or an in-memory one in the
use-case tests (services/contacts/tests/test_use_cases.py) beside
`crmkit.memstore.InMemoryEventStore`, no server. Every MongoDB query the contact use cases
make is here; the documents are the projections' (`crm_contacts.records.projections`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pymongo.collection import Collection
from pymongo.database import Database

from crm_contacts.records import projections
from crmkit.web.pagination import page

# the contact list's filters that match a document key as given
CONTACT_FILTERS = ("lifecycle_stage", "company_id", "owner", "team", "email", "phone")
Page = tuple[list[dict[str, Any]], str | None]


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
