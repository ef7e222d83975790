"""Group commit: concurrent inserts share a round trip, and each request gets its own outcome."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pymongo.errors import AutoReconnect, BulkWriteError

from crmkit.events import Metadata, NewEvent, new_id
from crmkit.eventstore import EventStore
from crmkit.groupcommit import GroupCommit
from crmkit.store import ConcurrencyError

META = Metadata(actor="user:alice")


class HeldCollection:
    """A collection whose first insert_many waits until released, so others queue behind it."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.entered, self.release = threading.Event(), threading.Event()
        self.fail = fail
        self.taken: set[str] = set()

    def insert_many(self, documents: list[dict[str, Any]], ordered: bool) -> None:
        assert ordered is False
        self.calls.append(documents)
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(10)
        if self.fail is not None and len(self.calls) > 1:
            raise self.fail
        errors = [{"index": i, "code": 11000} for i, doc in enumerate(documents) if doc["_id"] in self.taken]
        self.taken |= {doc["_id"] for doc in documents}
        if errors:
            raise BulkWriteError({"writeErrors": errors})


def run_behind_a_held_write(collection: HeldCollection, batches: list[list[dict[str, Any]]]) -> list[Any]:
    """One request holds the write; `batches` queue behind it; returns each queued request's outcome."""
    commits = GroupCommit(collection, "test")  # type: ignore[arg-type]
    outcomes: list[Any] = [None] * len(batches)
    first = threading.Thread(target=commits.insert, args=([{"_id": "first"}],))
    first.start()
    assert collection.entered.wait(10)

    def insert(number: int) -> None:
        try:
            outcomes[number] = commits.insert(batches[number])
        except BaseException as exc:
            outcomes[number] = exc

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(len(batches))]
    for thread in threads:
        thread.start()
    while len(commits._queue) < len(batches):  # every request is queued behind the held write
        threading.Event().wait(0.001)
    collection.release.set()
    for thread in [first, *threads]:
        thread.join(10)
    return outcomes


def test_requests_that_arrive_during_a_write_share_the_next_round_trip() -> None:
    collection = HeldCollection()
    batches = [[{"_id": f"r{n}-{i}"} for i in range(n + 1)] for n in range(5)]
    outcomes = run_behind_a_held_write(collection, batches)
    assert outcomes == [set()] * 5
    assert [len(call) for call in collection.calls] == [1, 15]  # the lone first write, then all five at once


def test_each_request_hears_only_of_its_own_duplicates() -> None:
    collection = HeldCollection()
    collection.taken = {"b-1", "c-0"}
    outcomes = run_behind_a_held_write(
        collection, [[{"_id": "a-0"}], [{"_id": "b-0"}, {"_id": "b-1"}], [{"_id": "c-0"}, {"_id": "c-1"}]]
    )
    assert outcomes == [set(), {1}, {0}]


def test_a_failed_round_trip_is_every_request_s_error() -> None:
    collection = HeldCollection(fail=AutoReconnect("connection reset"))
    outcomes = run_behind_a_held_write(collection, [[{"_id": "a"}], [{"_id": "b"}]])
    assert all(isinstance(outcome, AutoReconnect) for outcome in outcomes)


def test_another_write_error_is_raised_to_its_request_alone() -> None:
    class Refusing(HeldCollection):
        def insert_many(self, documents: list[dict[str, Any]], ordered: bool) -> None:
            self.calls.append(documents)
            if len(self.calls) == 1:
                self.entered.set()
                assert self.release.wait(10)
                return
            bad = [i for i, doc in enumerate(documents) if doc["_id"] == "too-big"]
            raise BulkWriteError({"writeErrors": [{"index": i, "code": 10334, "errmsg": "too large"} for i in bad]})

    outcomes = run_behind_a_held_write(Refusing(), [[{"_id": "fine"}], [{"_id": "too-big"}]])
    assert outcomes[0] == set()
    assert isinstance(outcomes[1], BulkWriteError) and outcomes[1].details["writeErrors"][0]["code"] == 10334


@pytest.mark.parametrize("writers", [8])
def test_racing_multi_event_commits_leave_one_whole_decision(store: EventStore, writers: int) -> None:
    """Against the server: writers decide three events each on the same version; one commit wins
    whole, the losers leave nothing, and writers on other streams (grouped with them) all win."""
    contested, barrier = new_id(), threading.Barrier(writers * 2)
    won: list[int] = []
    lost: list[int] = []
    others = [new_id() for _ in range(writers)]

    def contest(number: int) -> None:
        barrier.wait(10)
        try:
            store.append(
                contested, "Widget", 0, [NewEvent("WidgetRenamed", {"by": number, "n": n}) for n in range(3)], META
            )
            won.append(number)
        except ConcurrencyError:
            lost.append(number)

    def own_stream(number: int) -> None:
        barrier.wait(10)
        store.append(others[number], "Widget", 0, [NewEvent("WidgetRenamed", {"n": n}) for n in range(2)], META)

    threads = [threading.Thread(target=f, args=(n,)) for n in range(writers) for f in (contest, own_stream)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(won) == 1 and sorted(won + lost) == list(range(writers))
    assert [(e.version, e.data) for e in store.load(contested)] == [(n + 1, {"by": won[0], "n": n}) for n in range(3)]
    assert all([e.version for e in store.load(stream)] == [1, 2] for stream in others)
    assert store.count() == 3 + 2 * writers
