"""What the segment use cases read from collections: the `segments` list, members, companies.

`SegmentUseCases` (commands.py) decides on segments loaded from the event store; a page
of segments, a page of a segment's members or all their ids (its rules compiled into a filter
over the `contacts` read model, crm_contacts.segments.domain.compile_filter) and the companies
a `company.*` condition names come from read models. `SegmentViews` is that need, as a
protocol: `MongoSegmentViews` here, or an in-memory one in the use-case tests
(services/contacts/tests/test_use_cases.py), no server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pymongo.collection import Collection
from pymongo.database import Database

from crmkit.web.pagination import page

Page = tuple[list[dict[str, Any]], str | None]


class SegmentViews(Protocol):
    """The reads the segment use cases need (pages in `_id` order)."""

    def segment_page(self, limit: int, cursor: str | None) -> Page:
        """A page of the `segments` read model's documents."""
        ...

    def contact_page(self, query: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        """A page of `contacts` documents matching a compiled segment filter."""
        ...

    def company_ids(self, query: Mapping[str, Any]) -> list[str]:
        """Ids of the `companies` documents matching a company condition's filter."""
        ...

    def contact_ids(self, query: Mapping[str, Any]) -> list[str]:
        """Ids of every `contacts` document matching a compiled segment filter."""
        ...


class MongoSegmentViews:
    """`SegmentViews` on the service's MongoDB: the `segments`, `contacts` and `companies` read models."""

    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.segments: Collection[dict[str, Any]] = db["segments"]
        self.contacts: Collection[dict[str, Any]] = db["contacts"]
        self.companies: Collection[dict[str, Any]] = db["companies"]

    def segment_page(self, limit: int, cursor: str | None) -> Page:
        return page(self.segments, {}, limit, cursor)

    def contact_page(self, query: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        return page(self.contacts, dict(query), limit, cursor)

    def company_ids(self, query: Mapping[str, Any]) -> list[str]:
        return [doc["_id"] for doc in self.companies.find(dict(query), {"_id": 1})]

    def contact_ids(self, query: Mapping[str, Any]) -> list[str]:
        return [doc["_id"] for doc in self.contacts.find(dict(query), {"_id": 1})]
