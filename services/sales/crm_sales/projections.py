"""Read models of the sales service, folded by the aggregates' own `apply`.

Each document is the aggregate's API view plus query keys: money as integer minor
units (`amount_minor`) and times as epoch milliseconds (`*_ms`, since nx-27017 compares
datetimes at whole seconds). The next event folds onto the aggregate restored from the
document (`restore`), without reading the stream again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from crm_sales import money
from crm_sales.domain import Activity, Deal, Pipeline, Product, Quote
from crmkit.events import epoch_ms, text_ms
from crmkit.eventstore import EventStore
from crmkit.projector import AggregateView


def deal_keys(deal: Deal) -> dict[str, Any]:
    try:
        minor = money.to_minor(money.parse(deal.amount), deal.currency)
    except money.MoneyError:
        minor = 0
    # nx-27017 evaluates no compound `$group` _id: the board groups by this one key instead
    return {
        "amount_minor": minor,
        "board_key": f"{deal.stage}|{deal.currency}",
        "opened_ms": text_ms(deal.opened_at),
        "won_ms": text_ms(deal.won_at),
        "closed_ms": text_ms(deal.closed_at),
    }


class SalesView(AggregateView):
    """One document per aggregate of `kind`: its view plus the query keys of `keys(aggregate)`."""

    indexes: Sequence[Sequence[str]] = ()

    def keys(self, aggregate: Any) -> dict[str, Any]:
        return {}

    def document(self, aggregate: Any) -> dict[str, Any]:
        return {**aggregate.view(), **self.keys(aggregate), "created_ms": epoch_ms(aggregate.created_at)}

    def ensure_indexes(self) -> None:
        for keys in self.indexes:
            self.collection.create_index([(key, ASCENDING) for key in keys])


class ProductsView(SalesView):
    kind = Product
    indexes = (("sku",), ("active",))


class PipelinesView(SalesView):
    kind = Pipeline


class DealsView(SalesView):
    kind = Deal
    indexes = (
        ("pipeline_id", "stage"),
        ("contact_id",),
        ("status",),
        ("owner",),
        ("team",),
        ("expected_close",),
        ("pipeline_id", "team"),
    )  # a team's board

    def keys(self, aggregate: Any) -> dict[str, Any]:
        return deal_keys(aggregate)


class ActivitiesView(SalesView):
    kind = Activity
    indexes = (("owner",), ("team",), ("status", "due_ms"), ("deal_id",), ("contact_id",))

    def keys(self, aggregate: Any) -> dict[str, Any]:
        return {"due_ms": text_ms(aggregate.due_at)}


class QuotesView(SalesView):
    kind = Quote
    indexes = (("status", "valid_until"), ("deal_id",))


def public(document: dict[str, Any]) -> dict[str, Any]:
    """A read-model document as the API shows it."""
    hidden = {"_id", "state", "amount_minor", "opened_ms", "won_ms", "closed_ms", "due_ms", "created_ms", "board_key"}
    return {k: v for k, v in document.items() if k not in hidden}


def views(db: Database, store: EventStore, topic: str) -> list[SalesView]:
    return [
        view(name, db[name], store, topic)
        for name, view in (
            ("products", ProductsView),
            ("pipelines", PipelinesView),
            ("deals", DealsView),
            ("activities", ActivitiesView),
            ("quotes", QuotesView),
        )
    ]
