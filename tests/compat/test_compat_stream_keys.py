"""Reading a stream by primary key: what EventStore.load and load_many rely on.

Event documents are keyed "<stream>:<version>" and a stream is read with `_id $in`
over its next versions. On MongoDB that is an `_id` index lookup. The stand-in answers
it with a primary-key search, while a query on `stream_id` scans the whole collection
even with the compound index in place (the gap is pinned below, from the query plan,
not from timings).
"""

import pytest

from crmkit.eventstore import stream_key


def test_a_stream_is_found_by_its_keys_in_version_order(db) -> None:
    db["events"].insert_many([{"_id": stream_key(s, v), "stream_id": s, "version": v}
                              for s in ("a", "b") for v in range(1, 4)])
    found = db["events"].find({"_id": {"$in": [stream_key("a", v) for v in range(1, 17)]}})
    assert sorted(doc["version"] for doc in found) == [1, 2, 3]
    assert stream_key("a", 2) < stream_key("a", 10)  # zero-padded: key order is version order


def test_the_primary_key_lookup_uses_an_index(db) -> None:
    db["events"].insert_one({"_id": stream_key("a", 1), "stream_id": "a", "version": 1})
    plan = db["events"].find({"_id": {"$in": [stream_key("a", 1)]}}).explain()
    winning = plan.get("queryPlanner", {}).get("winningPlan")
    text = str(winning)
    assert "COLLSCAN" not in text and "SCAN events" not in text, winning


def test_gap_a_secondary_index_is_not_used_for_equality(db) -> None:
    events = db["events"]
    events.create_index([("stream_id", 1), ("version", 1)], unique=True)
    events.insert_one({"_id": stream_key("a", 1), "stream_id": "a", "version": 1})
    winning = str(events.find({"stream_id": "a"}).explain().get("queryPlanner", {}).get("winningPlan"))
    if "SCAN events" in winning and "USING INDEX" not in winning:
        pytest.skip(f"server gap: {{stream_id: ...}} scans the collection ({winning}); avoided: _id $in lookups")
    assert "IXSCAN" in winning or "USING INDEX" in winning
