"""MongoDB features the sales service relies on (and one gap it designs around)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from pymongo import ReturnDocument
from pymongo.database import Database


def test_find_one_and_update_inc_upsert_numbers_quotes_without_gaps_or_repeats(db: Database) -> None:
    """SalesBook.next_quote_number: one counter document per year, `$inc` upsert, the new value returned."""
    counters = db["counters"]

    def next_number(_: int) -> int:
        doc = counters.find_one_and_update(
            {"_id": "quote-2026"}, {"$inc": {"seq": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        return doc["seq"]

    with ThreadPoolExecutor(4) as pool:
        numbers = list(pool.map(next_number, range(40)))
    assert sorted(numbers) == list(range(1, 41))


def test_group_by_one_field_sums_integers(db: Database) -> None:
    """Board sums (crm_sales.api.reports_board): `$group` on one field with `$sum` of integer minor units."""
    deals = db["deals"]
    deals.insert_many(
        [
            {"p": "a", "k": "q|USD", "m": 10},
            {"p": "a", "k": "q|USD", "m": 5},
            {"p": "a", "k": "q|IRR", "m": 7},
            {"p": "b", "k": "q|USD", "m": 100},
        ]
    )
    rows = {
        r["_id"]: (r["count"], r["total"])
        for r in deals.aggregate(
            [{"$match": {"p": "a"}}, {"$group": {"_id": "$k", "count": {"$sum": 1}, "total": {"$sum": "$m"}}}]
        )
    }
    assert rows == {"q|USD": (2, 15), "q|IRR": (1, 7)}


def test_gap_compound_group_id(db: Database) -> None:
    """nx-27017 does not evaluate a document `_id` in `$group`; deals carry a `board_key` instead."""
    deals = db["deals"]
    deals.insert_many([{"s": "q", "c": "USD"}, {"s": "r", "c": "USD"}])
    rows = list(deals.aggregate([{"$group": {"_id": {"stage": "$s", "currency": "$c"}, "n": {"$sum": 1}}}]))
    if len(rows) == 1 and rows[0]["_id"] == {"stage": "$s", "currency": "$c"}:
        pytest.skip("stand-in gap: compound $group _id is taken literally")
    assert len(rows) == 2
