"""The event store against the MongoDB-protocol server: optimistic appends, loads, outbox."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pymongo.database import Database

from crmkit import eventstore
from crmkit.aggregate import Aggregate
from crmkit.errors import Conflict, NotFound, PreconditionFailed
from crmkit.events import Metadata, NewEvent, RecordedEvent, Upcasters, new_id
from crmkit.eventstore import EventStore, stream_key
from crmkit.repository import Repository
from crmkit.store import ConcurrencyError, StreamAppend
from crmkit.testing import Servers

META = Metadata(actor="user:alice", correlation_id="corr-1", causation_id="cause-1")


def ev(kind: str = "WidgetRenamed", **data: object) -> NewEvent:
    return NewEvent(kind, dict(data) or {"name": "x"})


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[datetime], None]]:
    """Pin the store's clock: `clock(moment)` makes the next appends happen at `moment`."""
    now = [datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)]
    monkeypatch.setattr(eventstore, "utcnow", lambda: now[0])

    def set_to(moment: datetime) -> None:
        now[0] = moment

    yield set_to


class TestAppend:
    def test_first_append_numbers_from_one_and_records_the_envelope(self, store: EventStore) -> None:
        stream = new_id()
        recorded = store.append(stream, "Widget", 0, [ev("WidgetCreated", name="Cog"), ev(name="Gear")], META)
        assert [e.version for e in recorded] == [1, 2]
        assert [e.type for e in recorded] == ["WidgetCreated", "WidgetRenamed"]
        for event in recorded:
            assert uuid.UUID(event.id).version == 7
            assert (event.service, event.stream_id, event.aggregate_type) == ("widgets", stream, "Widget")
            assert (event.actor, event.correlation_id, event.causation_id) == ("user:alice", "corr-1", "cause-1")
            assert event.schema_version == 1 and event.time.tzinfo is not None
        assert recorded[0].time == recorded[1].time  # one append, one moment
        assert len({e.id for e in recorded}) == 2

    def test_appended_events_load_back_identically(self, store: EventStore) -> None:
        stream = new_id()
        data = {"name": "چرخ‌دنده", "nested": {"list": [1, {"a": None}]}, "flag": True}
        recorded = store.append(stream, "Widget", 0, [NewEvent("WidgetCreated", data, schema_version=2)], META)
        assert store.load(stream) == recorded

    def test_next_append_continues_the_stream(self, store: EventStore) -> None:
        stream = new_id()
        store.append(stream, "Widget", 0, [ev()], META)
        assert [e.version for e in store.append(stream, "Widget", 1, [ev(), ev()], META)] == [2, 3]
        assert [e.version for e in store.load(stream)] == [1, 2, 3]

    def test_empty_append_stores_nothing(self, store: EventStore) -> None:
        assert store.append(new_id(), "Widget", 0, [], META) == []
        assert store.count() == 0

    def test_stale_expected_version_is_a_concurrency_error_and_changes_nothing(self, store: EventStore) -> None:
        stream = new_id()
        first = store.append(stream, "Widget", 0, [ev(name="a"), ev(name="b")], META)
        for stale in (0,):  # a writer appends at a version a load returned: the end of a commit
            with pytest.raises(ConcurrencyError) as caught:
                store.append(stream, "Widget", stale, [ev(name="lost")], META)
            assert (caught.value.stream_id, caught.value.expected_version) == (stream, stale)
        assert store.load(stream) == first

    def test_streams_are_independent(self, store: EventStore) -> None:
        a, b = new_id(), new_id()
        store.append(a, "Widget", 0, [ev()], META)
        assert store.append(b, "Widget", 0, [ev()], META)[0].version == 1

    def test_new_events_are_unpublished(self, store: EventStore, db: Database) -> None:
        recorded = store.append(new_id(), "Widget", 0, [ev(), ev()], META)
        assert db["events"].count_documents({"published": False}) == 1  # one commit
        assert store.unpublished() == recorded

    def test_a_decision_is_one_document(self, store: EventStore, db: Database) -> None:
        stream = new_id()
        recorded = store.append(stream, "Widget", 0, [ev(name="a"), ev(name="b"), ev(name="c")], META)
        [doc] = db["events"].find({"stream_id": stream})
        assert doc["_id"] == stream_key(stream, 1) and (doc["version"], doc["last"], doc["count"]) == (1, 3, 3)
        assert [e["event_id"] for e in doc["events"]] == [e.id for e in recorded]
        assert {e.commit for e in recorded} == {1} and store.count() == 3

    def test_a_writer_that_loses_a_race_leaves_nothing_of_its_decision(self, store: EventStore) -> None:
        """The gap the one-document commit closes: with a document per event, a two-event append
        that lost at its second event kept its first."""
        stream = new_id()
        store.append(stream, "Widget", 0, [ev(name="v1")], META)
        theirs = store.append(stream, "Widget", 1, [ev(name="theirs-2"), ev(name="theirs-3")], META)
        with pytest.raises(ConcurrencyError):
            store.append(stream, "Widget", 1, [ev(name="mine-2"), ev(name="mine-3"), ev(name="mine-4")], META)
        assert [e.data["name"] for e in store.load(stream)] == ["v1", "theirs-2", "theirs-3"]
        assert store.load(stream)[1:] == theirs and store.count() == 3

    def test_documents_from_before_commits_read_as_one_event_commits(self, store: EventStore, db: Database) -> None:
        """Stores written by earlier versions hold a document per event, `_id` "<stream>:<version>"."""
        stream, moment = new_id(), datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
        db["events"].insert_many(
            [
                {
                    "_id": stream_key(stream, version),
                    "event_id": new_id(),
                    "stream_id": stream,
                    "aggregate_type": "Widget",
                    "version": version,
                    "type": "WidgetRenamed",
                    "schema_version": 1,
                    "data": {"name": f"old-{version}"},
                    "time": moment,
                    "time_ms": eventstore.epoch_ms(moment),
                    "actor": "user:old",
                    "correlation_id": "c",
                    "causation_id": None,
                    "published": version == 1,
                }
                for version in (1, 2)
            ]
        )
        added = store.append(stream, "Widget", 2, [ev(name="new-3"), ev(name="new-4")], META)
        events = store.load(stream)
        assert [(e.version, e.data["name"], e.commit) for e in events] == [
            (1, "old-1", 1),
            (2, "old-2", 2),
            (3, "new-3", 3),
            (4, "new-4", 3),
        ]
        assert [e.version for e in store.load(stream, after_version=3)] == [4]
        assert [e.version for e in store.unpublished()] == [2, 3, 4]
        assert [e.version for e in store.unsent_through({stream: 4})] == [2, 3, 4]
        store.mark_published(events[1:2] + added)
        assert store.unpublished() == [] and store.count() == 4
        with pytest.raises(ConcurrencyError):  # an old document's key still takes part in concurrency
            store.append(stream, "Widget", 1, [ev()], META)


class TestStartStreams:
    def test_begins_many_streams_in_one_go(self, store: EventStore) -> None:
        a, b = new_id(), new_id()
        stored, taken = store.start_streams(
            [(a, "Widget", [ev("WidgetCreated", name="a"), ev(name="a2")]), (b, "Gadget", [ev("GadgetCreated")])],
            META,
        )
        assert taken == set()
        assert [(e.stream_id, e.version, e.aggregate_type) for e in stored] == [
            (a, 1, "Widget"),
            (a, 2, "Widget"),
            (b, 1, "Gadget"),
        ]
        assert store.load(a) == stored[:2] and store.load(b) == stored[2:]

    def test_streams_that_exist_are_reported_and_left_untouched(self, store: EventStore) -> None:
        existing, fresh = new_id(), new_id()
        original = store.append(existing, "Widget", 0, [ev(name="original")], META)
        stored, taken = store.start_streams(
            [(existing, "Widget", [ev(name="import-1"), ev(name="import-2")]), (fresh, "Widget", [ev(name="new")])],
            META,
        )
        assert taken == {existing}
        assert [e.stream_id for e in stored] == [fresh]
        assert store.load(existing) == original  # not even the import's version 2 is left behind
        assert [e.data["name"] for e in store.load(fresh)] == ["new"]
        assert store.count() == 2

    def test_nothing_to_start(self, store: EventStore) -> None:
        assert store.start_streams([], META) == ([], set())


class TestAppendStreams:
    def test_appends_to_many_streams_at_their_expected_versions_in_one_call(self, store: EventStore) -> None:
        a, b, c = new_id(), new_id(), new_id()
        store.append(a, "Widget", 0, [ev(name="a1")], META)
        store.append(b, "Widget", 0, [ev(name="b1"), ev(name="b2")], META)
        meta_b = Metadata(actor="user:bob", correlation_id="corr-b")
        stored, taken = store.append_streams(
            [
                StreamAppend(a, "Widget", 1, [ev(name="a2"), ev(name="a3")], META),
                StreamAppend(b, "Widget", 2, [ev(name="b3")], meta_b),
                StreamAppend(c, "Gadget", 0, [ev("GadgetCreated", name="c1")], META),
            ]
        )
        assert taken == set()
        assert [(e.stream_id, e.version, e.data["name"]) for e in stored] == [
            (a, 2, "a2"),
            (a, 3, "a3"),
            (b, 3, "b3"),
            (c, 1, "c1"),
        ]
        assert [(e.actor, e.correlation_id) for e in stored] == [("user:alice", "corr-1")] * 2 + [
            ("user:bob", "corr-b"),
            ("user:alice", "corr-1"),
        ]
        assert stored[3].aggregate_type == "Gadget"
        assert store.load(a)[1:] == stored[:2]
        assert store.load(b)[2:] == stored[2:3]
        assert store.load(c) == stored[3:]

    def test_a_stream_that_moved_on_is_taken_and_none_of_its_events_is_kept(
        self, store: EventStore, db: Database
    ) -> None:
        stale, other, fresh = new_id(), new_id(), new_id()
        theirs = store.append(stale, "Widget", 0, [ev(name="v1")], META)
        theirs += store.append(stale, "Widget", 1, [ev(name="theirs-2")], META)
        before = store.append(other, "Widget", 0, [ev(name="o1")], META)
        # decided on version 1: the commit after version 1 is taken, so none of versions 2 and 3 is stored
        stored, taken = store.append_streams(
            [
                StreamAppend(stale, "Widget", 1, [ev(name="mine-2"), ev(name="mine-3")], META),
                StreamAppend(other, "Widget", 1, [ev(name="o2"), ev(name="o3")], META),
                StreamAppend(fresh, "Widget", 0, [ev(name="f1")], META),
            ]
        )
        assert taken == {stale}
        assert [(e.stream_id, e.data["name"]) for e in stored] == [(other, "o2"), (other, "o3"), (fresh, "f1")]
        assert store.load(stale) == theirs  # the winner's version 2 is untouched
        assert db["events"].count_documents({"stream_id": stale}) == 2  # nothing was inserted, nothing deleted
        assert [e.data["name"] for e in store.load(other)] == ["o1", "o2", "o3"]
        assert [e.data["name"] for e in store.load(fresh)] == ["f1"]
        assert store.count() == 2 + 3 + 1
        # the outbox holds what was stored and nothing of the taken stream's batch
        assert {e.id for e in store.unpublished()} == {e.id for e in theirs + before + stored}

    def test_several_streams_can_be_taken_in_one_batch(self, store: EventStore) -> None:
        first, second, free = new_id(), new_id(), new_id()
        originals = {
            s: store.append(s, "Widget", 0, [ev(name="v1")], META) + store.append(s, "Widget", 1, [ev(name="v2")], META)
            for s in (first, second)
        }
        stored, taken = store.append_streams(
            [
                StreamAppend(first, "Widget", 0, [ev(name="lost")], META),
                StreamAppend(free, "Widget", 0, [ev(name="won")], META),
                StreamAppend(second, "Widget", 1, [ev(name="lost-2"), ev(name="lost-3"), ev(name="lost-4")], META),
            ]
        )
        assert taken == {first, second}
        assert [(e.stream_id, e.version) for e in stored] == [(free, 1)]
        assert store.load_many([first, second]) == originals
        assert store.count() == 5

    def test_every_stream_taken_stores_nothing(self, store: EventStore) -> None:
        stream = new_id()
        original = store.append(stream, "Widget", 0, [ev()], META)
        assert store.append_streams([StreamAppend(stream, "Widget", 0, [ev(), ev()], META)]) == ([], {stream})
        assert store.load(stream) == original and store.count() == 1

    def test_nothing_to_append(self, store: EventStore) -> None:
        assert store.append_streams([]) == ([], set())
        assert store.append_streams([StreamAppend(new_id(), "Widget", 0, [], META)]) == ([], set())
        assert store.count() == 0


class TestRaces:
    def test_threads_racing_on_one_stream_have_exactly_one_winner_per_version(self, store: EventStore) -> None:
        stream, writers, rounds = new_id(), 6, 8
        barrier = threading.Barrier(writers)
        wins: dict[int, list[int]] = {r: [] for r in range(rounds)}
        failures: list[BaseException] = []

        def writer(number: int) -> None:
            try:
                for expected in range(rounds):
                    barrier.wait(timeout=30)  # everyone tries the same version at once
                    try:
                        store.append(stream, "Widget", expected, [ev(name=f"w{number}")], META)
                        wins[expected].append(number)
                    except ConcurrencyError:
                        pass
            except BaseException as exc:  # surfaced below, not lost in the thread
                failures.append(exc)
                barrier.abort()

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not failures
        assert all(len(winners) == 1 for winners in wins.values()), wins
        events = store.load(stream)
        assert [e.version for e in events] == list(range(1, rounds + 1))
        assert [e.data["name"] for e in events] == [f"w{wins[r][0]}" for r in range(rounds)]

    def test_processes_racing_with_retries_leave_contiguous_versions(
        self, servers: Servers, store: EventStore, db: Database
    ) -> None:
        stream, processes, each = new_id(), 4, 10
        script = textwrap.dedent("""
            import json, sys
            from datetime import UTC
            from pymongo import MongoClient
            from crmkit.events import Metadata, NewEvent
            from crmkit.store import ConcurrencyError
            from crmkit.eventstore import EventStore
            url, name, stream, me, each = sys.argv[1:6]
            store = EventStore(MongoClient(url, tz_aware=True, tzinfo=UTC)[name], "widgets")
            print("ready", flush=True)
            sys.stdin.readline()  # start together
            done = conflicts = 0
            while done < int(each):
                seen = len(store.load(stream))
                try:
                    store.append(stream, "Widget", seen, [NewEvent("WidgetRenamed", {"by": me, "n": done})],
                                 Metadata())
                    done += 1
                except ConcurrencyError:
                    conflicts += 1
            print(json.dumps({"done": done, "conflicts": conflicts}), flush=True)
        """)
        children = [
            subprocess.Popen(
                [sys.executable, "-c", script, servers.mongo_url, db.name, stream, str(n), str(each)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in range(processes)
        ]
        try:
            for child in children:
                assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            results = [json.loads(child.communicate(timeout=60)[0]) for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
        assert all(child.returncode == 0 for child in children)
        assert [r["done"] for r in results] == [each] * processes
        events = store.load(stream)
        assert [e.version for e in events] == list(range(1, processes * each + 1))
        per_writer = {n: [e.data["n"] for e in events if e.data["by"] == str(n)] for n in range(processes)}
        assert all(sequence == list(range(each)) for sequence in per_writer.values())  # no lost or doubled write
        assert db["events"].count_documents({"stream_id": stream}) == processes * each


class TestLoad:
    def test_after_version(self, store: EventStore) -> None:
        stream = new_id()
        store.append(stream, "Widget", 0, [ev(name=str(n)) for n in range(5)], META)
        assert [e.version for e in store.load(stream, after_version=3)] == [4, 5]  # inside a commit
        assert store.load(stream, after_version=5) == []
        store.append(stream, "Widget", 5, [ev(name=str(n)) for n in range(40)], META)  # past the first window
        store.append(stream, "Widget", 45, [ev()], META)
        assert [e.version for e in store.load(stream, after_version=43)] == [44, 45, 46]
        assert [e.version for e in store.load(stream, after_version=5)] == list(range(6, 47))

    def test_unknown_stream_is_empty(self, store: EventStore) -> None:
        assert store.load(new_id()) == []

    def test_as_of_is_exact_to_the_millisecond(self, store: EventStore, clock: Callable[[datetime], None]) -> None:
        stream, t0 = new_id(), datetime(2024, 3, 1, 12, 0, 0, 120000, tzinfo=UTC)
        clock(t0)
        store.append(stream, "Widget", 0, [ev(name="a")], META)
        clock(t0 + timedelta(milliseconds=780))  # same second
        store.append(stream, "Widget", 1, [ev(name="b")], META)
        clock(t0 + timedelta(seconds=5))
        store.append(stream, "Widget", 2, [ev(name="c")], META)

        def names(as_of: datetime) -> list[str]:
            return [e.data["name"] for e in store.load(stream, as_of=as_of)]

        assert names(t0 - timedelta(milliseconds=1)) == []
        assert names(t0) == ["a"]
        assert names(t0 + timedelta(milliseconds=779)) == ["a"]
        assert names(t0 + timedelta(milliseconds=780)) == ["a", "b"]
        assert names(t0 + timedelta(seconds=4)) == ["a", "b"]
        assert names(t0 + timedelta(days=1)) == ["a", "b", "c"]
        assert names((t0 + timedelta(milliseconds=780)).replace(tzinfo=None)) == ["a", "b"]  # naive = UTC
        tehran = (t0 + timedelta(milliseconds=780)).astimezone(timezone(timedelta(hours=3.5)))
        assert names(tehran) == ["a", "b"]

    def test_times_survive_the_round_trip(self, store: EventStore, clock: Callable[[datetime], None]) -> None:
        moment = datetime(2024, 3, 1, 23, 59, 59, 999000, tzinfo=UTC)
        clock(moment)
        stream = new_id()
        store.append(stream, "Widget", 0, [ev()], META)
        assert store.load(stream)[0].time == moment

    def test_load_many_groups_by_stream_in_version_order(self, store: EventStore) -> None:
        a, b, c, missing = new_id(), new_id(), new_id(), new_id()
        store.append(b, "Widget", 0, [ev(name="b1")], META)
        store.append(a, "Widget", 0, [ev(name="a1"), ev(name="a2")], META)
        store.append(b, "Widget", 1, [ev(name="b2"), ev(name="b3")], META)
        store.append(c, "Widget", 0, [ev(name="c1")], META)
        streams = store.load_many([a, b, missing])
        assert set(streams) == {a, b}
        assert [e.data["name"] for e in streams[a]] == ["a1", "a2"]
        assert [e.data["name"] for e in streams[b]] == ["b1", "b2", "b3"]
        assert streams[b] == store.load(b)
        assert store.load_many([]) == {}

    def test_load_many_reads_long_streams_whole_beside_short_and_unknown_ones(self, store: EventStore) -> None:
        # several streams are read 4 versions at a time, then 16, 64, ...: lengths around each step
        lengths = {new_id(): n for n in (1, 3, 4, 5, 19, 20, 21, 84, 85, 130)}
        for stream, n in lengths.items():
            half = n // 2  # two appends, so no stream is one insert
            store.append(stream, "Widget", 0, [ev(name=f"{stream}:{v}") for v in range(1, half + 1)], META)
            store.append(stream, "Widget", half, [ev(name=f"{stream}:{v}") for v in range(half + 1, n + 1)], META)
        unknown = [new_id(), new_id()]
        streams = store.load_many([unknown[0], *reversed(lengths), unknown[1]])
        assert set(streams) == set(lengths)
        for stream, n in lengths.items():
            assert [e.version for e in streams[stream]] == list(range(1, n + 1)), n
            assert [e.data["name"] for e in streams[stream]] == [f"{stream}:{v}" for v in range(1, n + 1)]
        assert streams == {stream: store.load(stream) for stream in lengths}
        assert store.load_many([*lengths, *lengths]) == streams  # repeated ids are read once

    def test_scan_yields_every_event_per_stream_in_version_order(self, store: EventStore) -> None:
        streams = [new_id() for _ in range(4)]
        for round_ in range(3):  # interleaved appends
            for stream in streams:
                store.append(stream, "Widget", round_, [ev(name=f"{stream}:{round_ + 1}")], META)
        batches = list(store.scan(batch_size=5))
        assert [len(b) for b in batches] == [5, 5, 2]
        events = [e for batch in batches for e in batch]
        assert [(e.stream_id, e.version) for e in events] == sorted((s, v) for s in streams for v in (1, 2, 3))
        assert all(e.data["name"] == f"{e.stream_id}:{e.version}" for e in events)

    def test_upcasters_apply_on_every_read(self, db: Database) -> None:
        upcasters = Upcasters()

        @upcasters.register("WidgetCreated", 1)
        def to_v2(data: dict) -> dict:
            return {"title": data.pop("name")}

        old_store, new_store = EventStore(db, "widgets"), EventStore(db, "widgets", upcasters)
        stream = new_id()
        old_store.append(stream, "Widget", 0, [NewEvent("WidgetCreated", {"name": "Cog"})], META)
        for read in (new_store.load(stream), new_store.load_many([stream])[stream], next(new_store.scan())):
            assert [(e.schema_version, e.data) for e in read] == [(2, {"title": "Cog"})]
        assert db["events"].find_one({"stream_id": stream})["events"][0]["data"] == {"name": "Cog"}  # history kept
        # what goes to Kafka is the event as stored: consumers upcast on their side
        for sent in (new_store.unpublished(), next(new_store.scan(sealed=True))):
            assert [(e.schema_version, e.data) for e in sent] == [(1, {"name": "Cog"})]


class TestOutbox:
    def test_unpublished_until_marked(self, store: EventStore) -> None:
        a, b = new_id(), new_id()
        ra = store.append(a, "Widget", 0, [ev(), ev()], META)
        ra += store.append(a, "Widget", 2, [ev()], META)
        rb = store.append(b, "Widget", 0, [ev()], META)
        assert {e.id for e in store.unpublished()} == {e.id for e in ra + rb}
        store.mark_published([*ra[:2], rb[0]])  # whole commits, as the publisher passes them
        assert [e.id for e in store.unpublished()] == [ra[2].id]
        store.mark_published([])
        store.mark_published([ra[2]])
        assert store.unpublished() == []

    def test_unpublished_filters(self, store: EventStore, clock: Callable[[datetime], None]) -> None:
        a, b = new_id(), new_id()
        t0 = datetime(2024, 3, 1, 12, 0, 0, 100000, tzinfo=UTC)
        clock(t0)
        old = store.append(a, "Widget", 0, [ev(), ev(), ev()], META)
        clock(t0 + timedelta(milliseconds=400))
        young = store.append(b, "Widget", 0, [ev()], META)
        assert store.unpublished(stream_id=b) == young
        assert store.unpublished(before=t0 + timedelta(milliseconds=300)) == old
        assert store.unpublished(before=t0 - timedelta(milliseconds=1)) == []
        first = min(a, b)
        assert store.unpublished(limit=1) == (old if first == a else young)  # the limit counts commits, kept whole
        assert store.unpublished(stream_id=a, limit=10) == old

    def test_unsent_through_walks_down_to_the_newest_published_event(self, store: EventStore) -> None:
        a, b, fresh = new_id(), new_id(), new_id()
        events = [e for v in range(30) for e in store.append(a, "Widget", v, [ev()], META)]  # past the first windows
        store.mark_published(events[:2] + events[5:7])
        other = store.append(b, "Widget", 0, [ev(), ev()], META)
        store.mark_published(other)
        assert store.unsent_through({a: 30}) == events[7:]  # stops at version 7, published
        assert store.unsent_through({a: 5}) == events[2:5]
        assert store.unsent_through({a: 2, b: 2}) == []
        unsent = store.append(fresh, "Widget", 0, [ev() for _ in range(21)], META)
        assert store.unsent_through({fresh: 21, a: 9}) == [*unsent, *events[7:9]]
        assert store.unsent_through({}) == [] and store.unsent_through({fresh: 0}) == []

    def test_unpublished_is_in_stream_order(self, store: EventStore) -> None:
        stream = new_id()
        for version in range(6):
            store.append(stream, "Widget", version, [ev(name=str(version))], META)
        assert [e.version for e in store.unpublished()] == [1, 2, 3, 4, 5, 6]


class Thing(Aggregate):
    """Enough of an aggregate for the repository (test_crmkit_aggregate covers folding)."""

    aggregate_type = "Thing"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name = ""

    def apply(self, event_type: str, data: dict) -> None:
        self.name = data["name"]

    def view(self) -> dict:
        return {"id": self.id, "version": self.version, "name": self.name}


class TestRepository:
    @pytest.fixture
    def saved(self) -> list[list[RecordedEvent]]:
        return []

    @pytest.fixture
    def repo(self, store: EventStore, saved: list) -> Repository[Thing]:
        return Repository(store, Thing, saved.append)

    def create(self, repo: Repository[Thing], name: str = "a") -> Thing:
        thing = Thing(new_id())
        thing.record("ThingCreated", {"name": name})
        repo.save(thing, META)
        return thing

    def test_save_appends_pending_and_tells_the_publisher(self, repo: Repository[Thing], saved: list) -> None:
        thing = self.create(repo)
        assert thing.pending == [] and thing.version == 1
        assert thing.created_at is not None and thing.updated_at == thing.created_at
        assert [[e.version for e in batch] for batch in saved] == [[1]]
        assert repo.get(thing.id).view() == thing.view()

    def test_get_unknown_or_other_kind_is_not_found(self, repo: Repository[Thing], store: EventStore) -> None:
        with pytest.raises(NotFound):
            repo.get(new_id())
        other = new_id()
        store.append(other, "Gadget", 0, [ev()], META)
        with pytest.raises(NotFound):
            repo.get(other)
        with pytest.raises(NotFound):
            repo.history(other)

    def test_get_many_folds_each_known_aggregate_and_leaves_out_the_rest(
        self, repo: Repository[Thing], store: EventStore
    ) -> None:
        short, long = self.create(repo, "short"), self.create(repo, "long")
        store.append(long.id, "Thing", 1, [NewEvent("ThingRenamed", {"name": f"n{n}"}) for n in range(30)], META)
        gadget = new_id()
        store.append(gadget, "Gadget", 0, [ev()], META)
        found = repo.get_many([short.id, new_id(), long.id, gadget])
        assert set(found) == {short.id, long.id}
        assert all(isinstance(thing, Thing) for thing in found.values())
        assert found[short.id].view() == repo.get(short.id).view() == {"id": short.id, "version": 1, "name": "short"}
        assert found[long.id].view() == {"id": long.id, "version": 31, "name": "n29"}
        assert found[long.id].created_at == long.created_at
        assert repo.get_many([]) == {}

    def test_save_many_saves_every_aggregate_in_one_go(
        self, repo: Repository[Thing], saved: list, clock: Callable[[datetime], None]
    ) -> None:
        t0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
        clock(t0)
        existing = repo.get(self.create(repo, "old").id)
        saved.clear()
        existing.record("ThingRenamed", {"name": "renamed"})
        existing.record("ThingRenamed", {"name": "renamed again"})
        fresh = Thing(new_id())
        fresh.record("ThingCreated", {"name": "new"})
        unchanged = repo.get(self.create(repo, "same").id)
        saved.clear()
        t1 = t0 + timedelta(minutes=5)
        clock(t1)
        lost = repo.save_many([existing, fresh, unchanged], lambda thing: Metadata(actor=f"user:{thing.name}"))
        assert lost == set()
        assert existing.pending == [] and fresh.pending == [] and unchanged.pending == []
        assert (existing.created_at, existing.updated_at, existing.version) == (t0, t1, 3)
        assert (fresh.created_at, fresh.updated_at, fresh.version) == (t1, t1, 1)
        assert (unchanged.created_at, unchanged.updated_at) == (t0, t0)
        assert [[(e.stream_id, e.version, e.actor) for e in batch] for batch in saved] == [
            [(existing.id, 2, "user:renamed again"), (existing.id, 3, "user:renamed again"), (fresh.id, 1, "user:new")]
        ]
        for thing in (existing, fresh, unchanged):
            assert repo.get(thing.id).view() == thing.view()

    def test_change_many_decides_in_bulk_and_decides_again_where_another_writer_came_first(
        self, repo: Repository[Thing], store: EventStore, saved: list
    ) -> None:
        calm, raced, quiet = self.create(repo, "calm"), self.create(repo, "raced"), self.create(repo, "quiet")
        seen: list[tuple[str, str]] = []

        def shout(thing: Thing) -> str | None:
            seen.append((thing.id, thing.name))
            if thing.id == raced.id and len([s for s in seen if s[0] == raced.id]) == 1:
                store.append(raced.id, "Thing", 1, [NewEvent("ThingRenamed", {"name": "renamed"})], META)
            if thing.name == "quiet":
                return None  # decides nothing: nothing appended
            thing.record("ThingRenamed", {"name": thing.name.upper()})
            return thing.name

        saved.clear()
        decided = repo.change_many([calm.id, raced.id, quiet.id, new_id()], shout, META)
        assert decided == {calm.id: "CALM", raced.id: "RENAMED", quiet.id: None}  # unknown id left out
        assert [name for tid, name in seen if tid == raced.id] == ["raced", "renamed"]  # decided again, fresh
        assert [e.data["name"] for e in store.load(raced.id)] == ["raced", "renamed", "RENAMED"]
        assert [e.data["name"] for e in store.load(calm.id)] == ["calm", "CALM"]
        assert len(store.load(quiet.id)) == 1
        assert [[e.stream_id for e in batch] for batch in saved] == [[calm.id], [raced.id]]  # bulk, then the retry

    def test_change_many_starts_unknown_aggregates_when_asked(self, repo: Repository[Thing]) -> None:
        fresh = new_id()

        def name(thing: Thing) -> bool:
            thing.record("ThingCreated", {"name": "new"})
            return True

        assert repo.change_many([fresh], name, META, create=Thing) == {fresh: True}
        assert repo.get(fresh).name == "new"

    def test_save_many_keeps_an_aggregate_that_lost_a_race_pending(
        self, repo: Repository[Thing], store: EventStore, saved: list
    ) -> None:
        a, b = self.create(repo, "a"), self.create(repo, "b")
        mine_a, mine_b = repo.get(a.id), repo.get(b.id)
        store.append(b.id, "Thing", 1, [NewEvent("ThingRenamed", {"name": "theirs"})], META)  # another writer
        saved.clear()
        mine_a.record("ThingRenamed", {"name": "a2"})
        mine_b.record("ThingRenamed", {"name": "b2"})
        mine_b.record("ThingRenamed", {"name": "b3"})  # version 3 is still free: it must not be kept either
        fresh = Thing(new_id())
        fresh.record("ThingCreated", {"name": "c"})
        b_times = (mine_b.created_at, mine_b.updated_at)
        lost = repo.save_many([mine_a, mine_b, fresh], lambda _: META)
        assert lost == {b.id}
        assert mine_b.pending == [NewEvent("ThingRenamed", {"name": "b2"}), NewEvent("ThingRenamed", {"name": "b3"})]
        assert mine_b.stored_version == 1 and (mine_b.created_at, mine_b.updated_at) == b_times
        assert mine_a.pending == [] and fresh.pending == []
        assert [[(e.stream_id, e.version, e.data["name"]) for e in batch] for batch in saved] == [
            [(a.id, 2, "a2"), (fresh.id, 1, "c")]
        ]
        assert [e.data["name"] for e in store.load(b.id)] == ["b", "theirs"]
        assert [e.data["name"] for e in store.load(a.id)] == ["a", "a2"]
        assert repo.get(fresh.id).view() == fresh.view()
        retry = repo.get(b.id)  # the loser decides again on the fresh state
        retry.record("ThingRenamed", {"name": "theirs+mine"})
        assert repo.save_many([retry], lambda _: META) == set()
        assert [e.data["name"] for e in store.load(b.id)] == ["b", "theirs", "theirs+mine"]

    def test_get_as_of(self, repo: Repository[Thing], clock: Callable[[datetime], None]) -> None:
        t0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
        clock(t0)
        thing = self.create(repo, "first")
        clock(t0 + timedelta(milliseconds=10))
        repo.change(thing.id, lambda t: t.record("ThingRenamed", {"name": "second"}), META)
        assert repo.get(thing.id, as_of=t0).name == "first"
        assert repo.get(thing.id, as_of=t0 + timedelta(milliseconds=10)).name == "second"
        with pytest.raises(NotFound):
            repo.get(thing.id, as_of=t0 - timedelta(seconds=1))

    def test_change_with_a_stale_if_match_is_a_failed_precondition(
        self, repo: Repository[Thing], store: EventStore
    ) -> None:
        thing = self.create(repo)
        with pytest.raises(PreconditionFailed):
            repo.change(thing.id, lambda t: t.record("ThingRenamed", {"name": "b"}), META, if_match=7)
        assert len(store.load(thing.id)) == 1
        changed = repo.change(thing.id, lambda t: t.record("ThingRenamed", {"name": "b"}), META, if_match=1)
        assert changed.version == 2 and changed.name == "b"

    def test_change_decides_again_after_a_concurrent_write(self, repo: Repository[Thing], store: EventStore) -> None:
        thing = self.create(repo)
        seen: list[str] = []

        def decide(current: Thing) -> None:
            seen.append(current.name)
            if len(seen) == 1:  # someone else writes while this command decides
                store.append(current.id, "Thing", 1, [NewEvent("ThingRenamed", {"name": "theirs"})], META)
            current.record("ThingRenamed", {"name": current.name + "+mine"})

        result = repo.change(thing.id, decide, META)
        assert seen == ["a", "theirs"]
        assert [e.data["name"] for e in store.load(thing.id)] == ["a", "theirs", "theirs+mine"]
        assert result.version == 3

    def test_change_with_if_match_does_not_retry_a_race(self, repo: Repository[Thing], store: EventStore) -> None:
        thing = self.create(repo)

        def decide(current: Thing) -> None:
            store.append(current.id, "Thing", 1, [NewEvent("ThingRenamed", {"name": "theirs"})], META)
            current.record("ThingRenamed", {"name": "mine"})

        with pytest.raises(Conflict):
            repo.change(thing.id, decide, META, if_match=1)
        assert [e.data["name"] for e in store.load(thing.id)] == ["a", "theirs"]

    def test_change_gives_up_after_its_attempts(self, repo: Repository[Thing], store: EventStore) -> None:
        thing = self.create(repo)
        calls = []

        def decide(current: Thing) -> None:
            calls.append(current.version)
            store.append(current.id, "Thing", current.version, [NewEvent("ThingRenamed", {"name": "x"})], META)
            current.record("ThingRenamed", {"name": "never"})

        with pytest.raises(Conflict):
            repo.change(thing.id, decide, META, attempts=3)
        assert calls == [1, 2, 3]
        assert "never" not in [e.data["name"] for e in store.load(thing.id)]
