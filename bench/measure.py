"""The four measurements, each beside the raw figure of the server underneath.

1. contacts created per second through REST  vs  raw insert_one/s and insert_many docs/s
2. GET /v1/contacts/{id} latency              vs  raw find_one latency
3. append + publish -> consumed latency       vs  raw produce -> consumed latency
4. projection rebuild events/s                vs  raw insert_many docs/s of the same documents
"""

from __future__ import annotations

import copy
import http.client
import json
import random
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import TopicPartition
from pymongo import ASCENDING, MongoClient

from bench.environment import DATABASE, TOPIC, Environment
from bench.stats import latency_summary, rate

RAW_DATABASE = "bench_raw"
RAW_TOPIC = "bench.raw.latency"
DELIVERY_TIMEOUT = 15.0  # seconds one message may take before the run is declared broken


class Http:
    """One keep-alive HTTP/1.1 connection (one per client thread), reconnecting once if the server closed it."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):
            try:
                self.connection.request(method, path, body=data, headers=self.headers)
                response = self.connection.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                self.connection.close()
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.connection.close()


def contact_body(n: int) -> dict[str, Any]:
    return {
        "first_name": random.choice(["Ali", "Sara", "Reza", "Maryam", "علی", "سارا", "John", "Mina"]),
        "last_name": f"Bench{n}",
        "email": f"bench{n}@example.com",
        "phone": f"+98912{n:07d}",
        "lifecycle_stage": "lead",
        "tags": ["bench", "vip"] if n % 5 == 0 else ["bench"],
        "attributes": {"source": "bench", "score": n % 100},
    }


@dataclass
class CreateRun:
    ids: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def create_contacts(env: Environment, count: int, clients: int, first: int = 0) -> CreateRun:
    """POST /v1/contacts `count` times from `clients` threads, each on its own keep-alive connection."""
    run = CreateRun()
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(numbers: range) -> None:
        http = Http(env.api_url, env.token)
        ids, latencies, errors = [], [], []
        try:
            start.wait()
            for n in numbers:
                began = time.perf_counter()
                status, payload = http.request("POST", "/v1/contacts", contact_body(n))
                latencies.append(time.perf_counter() - began)
                if status == 201:
                    ids.append(json.loads(payload)["id"])
                else:
                    errors.append(f"{status} {payload[:200]!r}")
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            http.close()
            with lock:
                run.ids += ids
                run.latencies += latencies
                run.errors += errors

    threads = [
        threading.Thread(target=client, args=(range(first + i, first + count, clients),)) for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    run.seconds = time.perf_counter() - began
    return run


def raw_inserts(
    env: Environment, template: dict[str, Any], count: int, clients: int, batch: int, with_many: bool = True
) -> dict[str, Any]:
    """insert_one from `clients` threads, then (`with_many`) insert_many in batches, of documents shaped like
    our events."""
    client: MongoClient = MongoClient(env.mongo_url, tz_aware=True)
    try:
        client.drop_database(RAW_DATABASE)
        one, many = client[RAW_DATABASE]["events_one"], client[RAW_DATABASE]["events_many"]
        for collection in (one, many):
            collection.create_index([("stream_id", ASCENDING), ("version", ASCENDING)], unique=True)

        def document() -> dict[str, Any]:
            doc = copy.deepcopy(template)
            doc["_id"] = doc["stream_id"] = str(uuid.uuid4())
            return doc

        one_docs = [document() for _ in range(count)]
        start = threading.Barrier(clients + 1)

        def writer(docs: list[dict[str, Any]]) -> None:
            start.wait()
            for doc in docs:
                one.insert_one(doc)

        threads = [threading.Thread(target=writer, args=(one_docs[i::clients],)) for i in range(clients)]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        one_seconds = time.perf_counter() - began
        figures = {"insert_one_per_s": rate(count, one_seconds), "insert_one_clients": clients, "documents": count}
        if not with_many:
            return figures

        many_docs = [document() for _ in range(count)]
        began = time.perf_counter()
        for i in range(0, count, batch):
            many.insert_many(many_docs[i : i + batch], ordered=True)
        many_seconds = time.perf_counter() - began
        assert one.count_documents({}) == count and many.count_documents({}) == count
        return {**figures, "insert_many_docs_per_s": rate(count, many_seconds), "insert_many_batch": batch}
    finally:
        client.close()


def read_latency(env: Environment, ids: list[str], samples: int, warmup: int = 20) -> dict[str, Any]:
    """Sequential GET /v1/contacts/{id} (one client, keep-alive), random ids; then raw find_one of the same."""
    rng = random.Random(7)
    picks = [rng.choice(ids) for _ in range(samples + warmup)]
    http = Http(env.api_url, env.token)
    ours: list[float] = []
    try:
        for i, contact_id in enumerate(picks):
            began = time.perf_counter()
            status, payload = http.request("GET", f"/v1/contacts/{contact_id}")
            elapsed = time.perf_counter() - began
            if status != 200:
                raise RuntimeError(f"GET /v1/contacts/{contact_id} answered {status}: {payload[:200]!r}")
            if i >= warmup:
                ours.append(elapsed)
    finally:
        http.close()

    client: MongoClient = MongoClient(env.mongo_url, tz_aware=True)
    raw: list[float] = []
    try:
        events = client[DATABASE]["events"]
        for i, contact_id in enumerate(picks):
            began = time.perf_counter()
            found = events.find_one({"stream_id": contact_id})
            elapsed = time.perf_counter() - began
            if found is None:
                raise RuntimeError(f"no stored event for contact {contact_id}")
            if i >= warmup:
                raw.append(elapsed)
    finally:
        client.close()
    return {"ours": latency_summary(ours), "raw": latency_summary(raw)}


class Arrivals:
    """A plain consumer, in its own thread, noting when each message (by a marker) arrives."""

    def __init__(self, bootstrap: str, topic: str, marker: Callable[[bytes], str]) -> None:
        self.bootstrap, self.topic, self.marker = bootstrap, topic, marker
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"arrivals-{topic}", daemon=True)

    def __enter__(self) -> Arrivals:
        self.thread.start()
        if not self.ready.wait(30) or self.error:
            raise RuntimeError(f"consumer of {self.topic} did not start: {self.error!r}")
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                client_id="bench-arrivals",
                enable_auto_commit=False,
                fetch_max_wait_ms=20,
            )
            try:
                partitions = [TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic))]
                consumer.assign(partitions)
                consumer.seek_to_end()
                for tp in partitions:
                    consumer.position(tp)  # resolve "end" now, before anything is produced
                self.ready.set()
                while not self.stop.is_set():
                    for batch in consumer.poll(timeout_ms=50).values():
                        now = time.perf_counter()
                        with self.cond:
                            for message in batch:
                                self.seen[self.marker(message.value)] = now
                            self.cond.notify_all()
            finally:
                consumer.close()
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def wait_for(self, marker: str, timeout: float = DELIVERY_TIMEOUT) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: marker in self.seen or self.error is not None, timeout):
                raise TimeoutError(f"message {marker} not consumed within {timeout}s")
            if self.error is not None:
                raise RuntimeError(f"consumer failed: {self.error!r}")
            return self.seen[marker]


def kafka_latency(env: Environment, runtime: Any, samples: int, warmup: int = 20) -> dict[str, Any]:
    """One message in flight at a time: append + publish (ours) and a plain send (raw), until consumed."""
    from crmkit.events import Metadata, NewEvent, new_id

    ours: list[float] = []
    with Arrivals(env.kafka_bootstrap, TOPIC, lambda value: json.loads(value)["id"]) as arrivals:
        for i in range(samples + warmup):
            began = time.perf_counter()
            recorded = runtime.store.append(
                new_id(), "benchprobe", 0, [NewEvent("BenchProbed", {"n": i})], Metadata(actor="bench")
            )
            runtime.publish(recorded)  # what Repository.save does right after the append
            arrived = arrivals.wait_for(recorded[0].id)
            if i >= warmup:
                ours.append(arrived - began)

    admin = KafkaAdminClient(bootstrap_servers=env.kafka_bootstrap, client_id="bench-admin")
    try:
        admin.create_topics([NewTopic(RAW_TOPIC, 3, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=env.kafka_bootstrap, client_id="bench-raw")  # kafka-python defaults
    raw: list[float] = []
    try:
        with Arrivals(env.kafka_bootstrap, RAW_TOPIC, lambda value: value.decode()) as arrivals:
            for i in range(samples + warmup):
                marker = str(uuid.uuid4())
                began = time.perf_counter()
                producer.send(RAW_TOPIC, key=marker.encode(), value=marker.encode())
                arrived = arrivals.wait_for(marker)
                if i >= warmup:
                    raw.append(arrived - began)
    finally:
        producer.close(timeout=5)
    return {
        "ours": latency_summary(ours),
        "raw": latency_summary(raw),
        "raw_producer": "kafka-python defaults (acks=1, linger_ms=0)",
        "our_producer": "crmkit.publisher.make_producer (acks=all, idempotent, linger_ms=5)",
    }


def seed_contacts(runtime: Any, events: int, batch: int = 1000) -> int:
    """Store `events` more ContactCreated events (sealed, a key each) the way an import does,
    so the rebuild is timed over a store of that size; returns how many were stored."""
    from crmkit.events import Metadata, NewEvent, new_id

    meta, stored = Metadata(actor="bench:seed"), 0
    while stored < events:
        ids = [new_id() for _ in range(min(batch, events - stored))]
        streams = [
            (
                cid,
                "contact",
                [
                    NewEvent(
                        "ContactCreated",
                        {
                            "contact_id": cid,
                            "first_name": f"Seed{stored + n}",
                            "last_name": "Bench",
                            "email": f"seed{cid}@example.org",
                            "phone": None,
                            "company_id": None,
                            "lifecycle_stage": "lead",
                            "tags": ["seed"],
                            "owner": None,
                            "attributes": {},
                        },
                    )
                ],
            )
            for n, cid in enumerate(ids)
        ]
        done, _ = runtime.store.start_streams(streams, meta)
        stored += len(done)
    return stored


def rebuild_rate(env: Environment, runtime: Any, spec: Any, batch: int) -> dict[str, Any]:
    """crmkit.projector.rebuild of the contacts projection; then insert_many of the documents it wrote."""
    from crmkit.progress import Progress
    from crmkit.projector import rebuild

    projection = next(p for p in spec.projections(runtime) if p.name == "contacts")
    with Progress("rebuild contacts", runtime.store.count()) as progress:
        began = time.perf_counter()
        applied = rebuild(projection, runtime.store, progress.update)
        seconds = time.perf_counter() - began
        progress.finish(f"rebuilt contacts from {applied:,} events in {seconds:.1f}s")
    documents = list(projection.collection.find())

    client: MongoClient = MongoClient(env.mongo_url, tz_aware=True)
    try:
        copy_of = client[RAW_DATABASE]["contacts_copy"]
        copy_of.drop()
        raw_began = time.perf_counter()
        for i in range(0, len(documents), batch):
            copy_of.insert_many(documents[i : i + batch], ordered=False)
        raw_seconds = time.perf_counter() - raw_began
    finally:
        client.close()
    return {
        "events": applied,
        "documents": len(documents),
        "seconds": round(seconds, 3),
        "minutes_per_million_events": round(seconds / max(applied, 1) * 1_000_000 / 60, 1),
        "ours_events_per_s": rate(applied, seconds),
        "raw_insert_many_docs_per_s": rate(len(documents), raw_seconds),
        "raw_batch": batch,
    }
