"""What the sales use cases read from collections, in one place: the read side they depend on.

`SalesUseCases` (commands.py) decides on aggregates loaded from the event store, but some
answers come from read models: whether a SKU is taken, a page of products, deals,
activities or quotes, the sent quotes past their date, a contact's local copy; and the
quote numbers come from a counter. `SalesViews` is that need, written as a protocol so the
use cases run on any implementation of it: `MongoSalesViews` here (the service's MongoDB
read models and counters), or an in-memory one in the use-case tests
(services/sales/tests/test_use_cases.py) beside `crmkit.memstore.InMemoryEventStore`, no
server. Every MongoDB query the sales use cases make is here; the documents are the
projections' (`crm_sales.projections`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database

from crmkit.directory import LocalContacts
from crmkit.events import epoch_ms
from crmkit.web.pagination import page

# the list filters that match a document key as given, by list
DEAL_FILTERS = ("pipeline_id", "stage", "status", "owner", "team", "contact_id")
ACTIVITY_FILTERS = ("owner", "team", "deal_id", "contact_id", "status", "type")
QUOTE_FILTERS = ("deal_id", "status", "contact_id")
Page = tuple[list[dict[str, Any]], str | None]


class SalesViews(Protocol):
    """The reads (and the counter and local contact copy's writes) the sales use cases need."""

    def sku_taken(self, sku: str) -> bool:
        """Whether a product with this SKU exists."""
        ...

    def product_page(self, query: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        """A page of product documents (`_id` order), only the `active` ones or not when given."""
        ...

    def deal_page(self, query: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        """A page of deal documents matching the DEAL_FILTERS given."""
        ...

    def activity_page(self, query: Mapping[str, Any], now_ms: int, limit: int, cursor: str | None) -> Page:
        """A page of activity documents matching the ACTIVITY_FILTERS given, due before
        `due_before` when given, and open and due before `now_ms` when `overdue`."""
        ...

    def quote_page(self, query: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        """A page of quote documents matching the QUOTE_FILTERS given."""
        ...

    def expiring_quotes(self, today: str, limit: int) -> list[str]:
        """Ids of sent quotes valid until before `today` (ISO date), at most `limit`."""
        ...

    def next_quote_sequence(self, year: int) -> int:
        """The next number of the year's quote counter (1, 2, ...; never twice, across processes)."""
        ...

    def contacts(self, contact_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The local copies of these contacts (`_id`, names, status...), a merged id's being the
        survivor's; unknown ones left out."""
        ...

    def remember_contact(self, contact: dict[str, Any]) -> None:
        """Keep a contact the directory just returned, so lists name them without asking again."""
        ...


def activity_query(query: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """The MongoDB query of the activity list's filters (those given)."""
    filters: dict[str, Any] = {k: query[k] for k in ACTIVITY_FILTERS if query.get(k)}
    if query.get("due_before"):
        filters["due_ms"] = {"$lt": epoch_ms(query["due_before"])}
    if query.get("overdue"):
        filters["status"] = "open"
        filters["due_ms"] = {"$lt": min(now_ms, filters.get("due_ms", {}).get("$lt", 2**62))}
    return filters


class MongoSalesViews:
    """`SalesViews` on the service's MongoDB: the `products`, `deals`, `activities` and `quotes`
    read models, the `counters` collection and the local copy of contacts (`LocalContacts`,
    which the worker also runs as a projection of the contacts topic)."""

    def __init__(self, db: Database[dict[str, Any]], local: LocalContacts) -> None:
        self.counters: Collection[dict[str, Any]] = db["counters"]
        self.deals: Collection[dict[str, Any]] = db["deals"]
        self.activities: Collection[dict[str, Any]] = db["activities"]
        self.quotes: Collection[dict[str, Any]] = db["quotes"]
        self.products: Collection[dict[str, Any]] = db["products"]
        self.pipelines: Collection[dict[str, Any]] = db["pipelines"]
        self.local = local

    def sku_taken(self, sku: str) -> bool:
        return self.products.find_one({"sku": sku}, {"_id": 1}) is not None

    def product_page(self, query: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        filters = {"active": query["active"]} if query.get("active") is not None else {}
        return page(self.products, filters, limit, cursor)

    def deal_page(self, query: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        return page(self.deals, {k: query[k] for k in DEAL_FILTERS if query.get(k)}, limit, cursor)

    def activity_page(self, query: Mapping[str, Any], now_ms: int, limit: int, cursor: str | None) -> Page:
        return page(self.activities, activity_query(query, now_ms), limit, cursor)

    def quote_page(self, query: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        return page(self.quotes, {k: query[k] for k in QUOTE_FILTERS if query.get(k)}, limit, cursor)

    def expiring_quotes(self, today: str, limit: int) -> list[str]:
        return [
            doc["_id"]
            for doc in self.quotes.find({"status": "sent", "valid_until": {"$lt": today}}, {"_id": 1}).limit(limit)
        ]

    def next_quote_sequence(self, year: int) -> int:
        # `$inc` upsert, one document per year (tests/compat pins the numbering)
        counter = self.counters.find_one_and_update(
            {"_id": f"quote-{year}"}, {"$inc": {"seq": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        assert counter is not None  # an upsert returning the document AFTER always has one
        return int(counter["seq"])

    def contacts(self, contact_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self.local.find(contact_ids)

    def remember_contact(self, contact: dict[str, Any]) -> None:
        self.local.remember(contact)
