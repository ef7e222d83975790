"""Read models of the sales service, folded by the aggregates' own `apply`.

Each document is the aggregate's API view plus query keys: money as integer minor
units (`amount_minor`), times as epoch milliseconds (`*_ms`, since nx-27017 compares
datetimes at whole seconds), and the aggregate's state (`state`) so the next event
folds onto it without reading the stream again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from crm_sales import money
from crm_sales.domain import Activity, Deal, Pipeline, Product, Quote
from crmkit.aggregate import Aggregate
from crmkit.events import RecordedEvent, parse_time
from crmkit.eventstore import EventStore, epoch_ms
from crmkit.projector import StreamProjection

STATE_SKIP = ("pending", "id", "version", "created_at", "updated_at")


def _ms(value: str | None) -> int | None:
    return epoch_ms(parse_time(value)) if value else None


def deal_keys(deal: Deal) -> dict[str, Any]:
    try:
        minor = money.to_minor(money.parse(deal.amount), deal.currency)
    except money.MoneyError:
        minor = 0
    # nx-27017 evaluates no compound `$group` _id: the board groups by this one key instead
    return {"amount_minor": minor, "board_key": f"{deal.stage}|{deal.currency}", "opened_ms": _ms(deal.opened_at),
            "won_ms": _ms(deal.won_at), "closed_ms": _ms(deal.closed_at)}


def activity_keys(activity: Activity) -> dict[str, Any]:
    return {"due_ms": _ms(activity.due_at)}


class AggregateView(StreamProjection):
    """One document per aggregate of `kind`: its view, its state, and `keys(aggregate)`."""

    kind: type[Aggregate]
    indexes: Sequence[Sequence[str]] = ()

    def __init__(self, name: str, collection: Collection, store: EventStore, topic: str, kind: type[Aggregate],
                 keys: Callable[[Any], dict[str, Any]] | None = None, indexes: Sequence[Sequence[str]] = ()) -> None:
        super().__init__(name, collection, store, topic)
        self.kind = kind
        self.aggregate_types = (kind.aggregate_type,)
        self.keys = keys or (lambda _aggregate: {})
        self.indexes = indexes

    def fold(self, document: dict[str, Any] | None, events: Sequence[RecordedEvent]) -> dict[str, Any]:
        aggregate = self.kind(events[0].stream_id)
        if document:
            vars(aggregate).update(document["state"])
            aggregate.version = document["version"]
            aggregate.created_at, aggregate.updated_at = document.get("created_at"), document.get("updated_at")
        for event in events:
            aggregate.apply(event.type, event.data)
            aggregate.version = event.version
            aggregate.created_at = aggregate.created_at or event.time
            aggregate.updated_at = event.time
        state = {k: v for k, v in vars(aggregate).items() if k not in STATE_SKIP}
        return {**aggregate.view(), **self.keys(aggregate), "state": state,
                "created_ms": epoch_ms(aggregate.created_at)}

    def ensure_indexes(self) -> None:
        for keys in self.indexes:
            self.collection.create_index([(key, ASCENDING) for key in keys])


def public(document: dict[str, Any]) -> dict[str, Any]:
    """A read-model document as the API shows it."""
    hidden = {"_id", "state", "amount_minor", "opened_ms", "won_ms", "closed_ms", "due_ms", "created_ms", "board_key"}
    return {k: v for k, v in document.items() if k not in hidden}


def views(db: Database, store: EventStore, topic: str) -> list[AggregateView]:
    return [
        AggregateView("products", db["products"], store, topic, Product, indexes=[["sku"], ["active"]]),
        AggregateView("pipelines", db["pipelines"], store, topic, Pipeline),
        AggregateView("deals", db["deals"], store, topic, Deal, deal_keys,
                      indexes=[["pipeline_id", "stage"], ["contact_id"], ["status"], ["owner"], ["expected_close"]]),
        AggregateView("activities", db["activities"], store, topic, Activity, activity_keys,
                      indexes=[["owner"], ["status", "due_ms"], ["deal_id"], ["contact_id"]]),
        AggregateView("quotes", db["quotes"], store, topic, Quote, indexes=[["status", "valid_until"], ["deal_id"]]),
    ]
