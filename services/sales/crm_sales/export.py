"""A person's records in sales, for their data subject access request (ExportContactRecords).

Found as erasure finds them (`SalesBook.erasable`): in the event store by the `refs` of their
events, so a record no read model has folded yet is exported too, then folded from the store.
A record that names the person no more (moved to another contact) is not theirs and is left
out; a quote is theirs when it names them or belongs to one of their deals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crm_sales.commands import SalesBook
from crm_sales.domain import Activity, Deal, Quote


def contact_records(book: SalesBook, contact_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """{"deals", "quotes", "activities"} of these contact ids, each as its REST GET shows it
    (a deal's stage history with the time spent in each stage), oldest first."""
    store, wanted = book.runtime.store, set(contact_ids)
    found: dict[str, set[str]] = {kind: set() for kind in book.erasable}
    for stream_id, kind in store.streams_referring(list(contact_ids), list(book.erasable)):
        found[kind].add(stream_id)
    deals = [
        deal for deal in book.deals.get_many(sorted(found[Deal.aggregate_type])).values() if deal.contact_id in wanted
    ]
    deal_ids = {deal.id for deal in deals}
    found[Quote.aggregate_type] |= {
        stream for stream, _ in store.streams_referring(sorted(deal_ids), [Quote.aggregate_type])
    }
    quotes = [
        quote
        for quote in book.quotes.get_many(sorted(found[Quote.aggregate_type])).values()
        if quote.contact_id in wanted or quote.deal_id in deal_ids
    ]
    activities = [
        activity
        for activity in book.activities.get_many(sorted(found[Activity.aggregate_type])).values()
        if activity.contact_id in wanted
    ]
    now = book.clock()
    return {
        "deals": _oldest_first([{**deal.view(), "stage_history": deal.history_view(now)} for deal in deals]),
        "quotes": _oldest_first([quote.view() for quote in quotes]),
        "activities": _oldest_first([activity.view() for activity in activities]),
    }


def _oldest_first(views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(views, key=lambda view: (str(view.get("created_at") or ""), view["id"]))
