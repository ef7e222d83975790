"""Kafka features the code relies on, one test each, run against the local stand-in (Tansu).

Every test here must also pass on real Apache Kafka. Each docstring names the code
that relies on the feature. Messages are produced once per module by the producer the
outbox uses (crmkit.publisher.make_producer), sent without waiting like
Publisher._send does; consumer-group joins take seconds on Tansu, so the group
scenarios run once, concurrently, and several tests check what they saw.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError
from kafka.structs import TopicPartition

from crmkit.publisher import make_producer
from crmkit.testing import Servers

PARTITIONS = 3
KEYS = [f"agg-{i}" for i in range(8)]  # murmur2 spreads these over all 3 partitions
PER_KEY = 15
TOTAL = len(KEYS) * PER_KEY
DEADLINE = 30.0
# What ProjectorRunner uses.
CONSUMER_SETTINGS = {"session_timeout_ms": 10_000, "heartbeat_interval_ms": 1_000}


def poll_until(consumer: KafkaConsumer, count: int, deadline: float = DEADLINE) -> list[ConsumerRecord]:
    """Poll until `count` records arrived or the deadline passed; returns what arrived."""
    records: list[ConsumerRecord] = []
    until = time.monotonic() + deadline
    while len(records) < count and time.monotonic() < until:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    return records


def stream_version(record: ConsumerRecord) -> int:
    return int(record.value.split(b'"streamversion":')[1].split(b",")[0])


def value_of(key: str, seq: int) -> bytes:
    # A structured CloudEvent puts everything in the value (non-ASCII included); no headers are sent.
    return f'{{"subject":"{key}","streamversion":{seq},"data":{{"name":"علی"}}}}'.encode()


@dataclass
class Sent:
    topic: str
    partitions: list[TopicPartition]
    records: list[tuple[str, int, int, int]] = field(default_factory=list)  # key, seq, partition, offset

    def partition_of(self) -> dict[str, set[int]]:
        seen: dict[str, set[int]] = defaultdict(set)
        for key, _, partition, _ in self.records:
            seen[key].add(partition)
        return seen

    def count_by_partition(self) -> dict[int, int]:
        counts = dict.fromkeys(range(PARTITIONS), 0)
        for *_, partition, _ in self.records:
            counts[partition] += 1
        return counts


@pytest.fixture(scope="module")
def sent(servers: Servers, kafka_admin: KafkaAdminClient, new_topic: Callable[[int], str]) -> Iterator[Sent]:
    """TOTAL keyed messages sent through the outbox's producer, interleaved across keys."""
    topic = new_topic(PARTITIONS)
    producer = make_producer(servers.kafka_bootstrap, "compat-producer")
    try:
        futures = [
            (key, seq, producer.send(topic, key=key.encode(), value=value_of(key, seq)))
            for seq in range(1, PER_KEY + 1)
            for key in KEYS
        ]
        producer.flush(timeout=DEADLINE)
        result = Sent(topic, [TopicPartition(topic, p) for p in range(PARTITIONS)])
        for key, seq, future in futures:
            metadata = future.get(timeout=DEADLINE)
            result.records.append((key, seq, metadata.partition, metadata.offset))
        yield result
    finally:
        producer.close(timeout=5)


def read_all(servers: Servers, sent: Sent) -> tuple[KafkaConsumer, list[ConsumerRecord]]:
    consumer = KafkaConsumer(
        bootstrap_servers=servers.kafka_bootstrap, client_id="compat-reader", enable_auto_commit=False
    )
    consumer.assign(sent.partitions)
    consumer.seek_to_beginning()
    return consumer, poll_until(consumer, TOTAL)


# --- topics and producing ----------------------------------------------------------------


def test_create_topic_with_partitions_and_list_topics(servers: Servers, kafka_admin: KafkaAdminClient) -> None:
    """crmkit.stack.ensure_topics: list_topics, create_topics with a partition count, TopicAlreadyExists on a repeat."""
    topic = f"compat.created.{uuid.uuid4().hex[:12]}"
    assert topic not in kafka_admin.list_topics()

    kafka_admin.create_topics([NewTopic(topic, PARTITIONS, 1)])

    assert topic in kafka_admin.list_topics()
    consumer = KafkaConsumer(bootstrap_servers=servers.kafka_bootstrap, client_id="compat-meta")
    try:
        assert consumer.partitions_for_topic(topic) == set(range(PARTITIONS))
    finally:
        consumer.close()
    with pytest.raises(TopicAlreadyExistsError):  # ensure_topics suppresses exactly this
        kafka_admin.create_topics([NewTopic(topic, PARTITIONS, 1)])


def test_idempotent_producer_with_acks_all(sent: Sent) -> None:
    """crmkit.publisher.make_producer (enable_idempotence, acks=all, 5 in flight): every send acknowledged once.

    Offsets per partition are 0..n-1 with no hole and no duplicate, so retries inside the
    idempotent producer never doubled a message.
    """
    by_partition: dict[int, list[int]] = defaultdict(list)
    for *_, partition, offset in sent.records:
        by_partition[partition].append(offset)

    assert len(sent.records) == TOTAL
    for offsets in by_partition.values():
        assert sorted(offsets) == list(range(len(offsets)))


def test_same_key_always_goes_to_the_same_partition(
    servers: Servers, sent: Sent, new_topic: Callable[[int], str]
) -> None:
    """Publisher sends with key = aggregate id: one stream, one partition, so consumers see it in order."""
    mapping = sent.partition_of()
    assert all(len(partitions) == 1 for partitions in mapping.values()), mapping

    topic = new_topic(PARTITIONS)  # another topic with as many partitions, another producer (another process)
    producer = KafkaProducer(bootstrap_servers=servers.kafka_bootstrap, client_id="compat-other-producer")
    try:
        again = {
            key: {producer.send(topic, key=key.encode(), value=b"{}").get(timeout=DEADLINE).partition} for key in KEYS
        }
    finally:
        producer.close(timeout=5)
    assert again == mapping


def test_per_partition_order_is_preserved(servers: Servers, sent: Sent) -> None:
    """Per-aggregate order (contract.md): messages of one key are consumed in the order they were sent."""
    consumer, records = read_all(servers, sent)
    consumer.close()

    assert len(records) == TOTAL
    sequence: dict[str, list[int]] = defaultdict(list)
    for record in records:
        sequence[record.key.decode()].append(stream_version(record))
    assert sequence == {key: list(range(1, PER_KEY + 1)) for key in KEYS}


def test_seek_to_beginning_with_manual_assign(servers: Servers, sent: Sent) -> None:
    """Readers without a group (stack.topic_is_empty, tools): assign(), seek_to_beginning(), read again."""
    consumer, first_pass = read_all(servers, sent)
    try:
        consumer.seek_to_beginning(*sent.partitions)
        second_pass = poll_until(consumer, TOTAL)
    finally:
        consumer.close()

    def positions(records: list[ConsumerRecord]) -> set[tuple[int, int]]:
        return {(r.partition, r.offset) for r in records}

    assert len(first_pass) == len(second_pass) == TOTAL
    assert positions(first_pass) == positions(second_pass)


def test_end_offsets_are_zero_only_for_an_empty_topic(
    servers: Servers, sent: Sent, new_topic: Callable[[int], str]
) -> None:
    """stack.topic_is_empty (crm up replays to a fresh broker): every end offset 0 means empty, any message > 0."""
    empty = [TopicPartition(new_topic(PARTITIONS), p) for p in range(PARTITIONS)]
    consumer = KafkaConsumer(bootstrap_servers=servers.kafka_bootstrap, client_id="compat-offsets")
    try:
        assert set(consumer.end_offsets(empty).values()) == {0}
        assert set(consumer.beginning_offsets(empty).values()) == {0}
        ends = consumer.end_offsets(sent.partitions)
        beginnings = consumer.beginning_offsets(sent.partitions)
    finally:
        consumer.close()
    counts = sent.count_by_partition()
    for tp in sent.partitions:
        assert beginnings[tp] == 0
        assert (ends[tp] > 0) == (counts[tp.partition] > 0)


def test_highwater_and_position_after_reading(servers: Servers, sent: Sent) -> None:
    """ProjectorRunner._record_lag: lag = highwater(tp) - position(tp), from the fetch responses."""
    consumer, records = read_all(servers, sent)
    try:
        counts = sent.count_by_partition()
        assert len(records) == TOTAL
        for tp in sent.partitions:
            assert consumer.highwater(tp) == consumer.position(tp) == counts[tp.partition]
    finally:
        consumer.close()


def test_messages_need_no_headers(servers: Servers, sent: Sent) -> None:
    """The outbox sends structured CloudEvents (all in the value) and no headers; key and value arrive intact."""
    consumer, records = read_all(servers, sent)
    consumer.close()

    assert {(r.key.decode(), r.value) for r in records} == {
        (key, value_of(key, seq)) for key in KEYS for seq in range(1, PER_KEY + 1)
    }
    assert all(not r.headers for r in records)


# --- consumer groups (ProjectorRunner) -------------------------------------------------------


@dataclass
class GroupRun:
    first: list[ConsumerRecord] = field(default_factory=list)  # group A, first consumer, before its commit
    committed: dict[TopicPartition, int | None] = field(default_factory=dict)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    resumed: list[ConsumerRecord] = field(default_factory=list)  # group A, a new consumer after the commit
    committed_after_resume: dict[TopicPartition, int | None] = field(default_factory=dict)
    other_group: list[ConsumerRecord] = field(default_factory=list)  # group B, everything


def group_consumer(servers: Servers, topic: str, group: str, max_records: int = 500) -> KafkaConsumer:
    """Configured like ProjectorRunner: subscribe, no auto-commit, start at the earliest offset."""
    return KafkaConsumer(
        topic,
        bootstrap_servers=servers.kafka_bootstrap,
        group_id=group,
        client_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_records,
        **CONSUMER_SETTINGS,
    )


@pytest.fixture(scope="module")
def groups(servers: Servers, sent: Sent) -> GroupRun:
    """Group A reads part, commits, closes; a new member of A resumes. Group B reads it all, meanwhile."""
    run = GroupRun()
    stem = f"compat.{uuid.uuid4().hex[:12]}"

    def group_a() -> None:
        first = group_consumer(servers, sent.topic, f"{stem}.a", max_records=10)
        try:
            run.first = poll_until(first, 1)  # the first batch only (at most 10 records)
            run.positions = {tp: first.position(tp) for tp in first.assignment()}
            first.commit()  # what ProjectorRunner does after its writes
            run.committed = {tp: first.committed(tp) for tp in sent.partitions}
        finally:
            first.close()
        second = group_consumer(servers, sent.topic, f"{stem}.a")
        try:
            run.resumed = poll_until(second, TOTAL - len(run.first))
            second.commit()
            run.committed_after_resume = {tp: second.committed(tp) for tp in sent.partitions}
        finally:
            second.close()

    def group_b() -> None:
        consumer = group_consumer(servers, sent.topic, f"{stem}.b")
        try:
            run.other_group = poll_until(consumer, TOTAL)
        finally:
            consumer.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(group_a), pool.submit(group_b)]:
            future.result()
    return run


def test_consumer_group_commit_then_new_member_resumes_after_committed_offset(groups: GroupRun) -> None:
    """ProjectorRunner commits only after its writes; a restarted projector continues where the commit left off."""
    assert 0 < len(groups.first) <= 10
    first = {(r.partition, r.offset) for r in groups.first}
    resumed = {(r.partition, r.offset) for r in groups.resumed}

    assert not first & resumed  # nothing committed is delivered again
    assert len(first) + len(resumed) == TOTAL  # and nothing is skipped
    for tp, offset in groups.committed.items():
        later = [r.offset for r in groups.resumed if r.partition == tp.partition]
        if later:
            assert min(later) == (offset or 0)  # resumed exactly at the committed offset


def test_committed_returns_the_committed_offset(groups: GroupRun) -> None:
    """KafkaConsumer.committed(): after commit() it is the consumer's position, partition by partition."""
    read: dict[int, int] = defaultdict(int)
    for record in groups.first:
        read[record.partition] = max(read[record.partition], record.offset + 1)

    assert set(groups.positions) == set(groups.committed)
    for tp, position in groups.positions.items():
        assert position == read.get(tp.partition, 0)
        assert groups.committed[tp] == position or (position == 0 and groups.committed[tp] is None)
    assert sum(offset or 0 for offset in groups.committed_after_resume.values()) == TOTAL


def test_two_groups_each_see_every_message(groups: GroupRun) -> None:
    """Each projector has its own group (and BI its own): every group gets every message, from the earliest."""
    expected = {(key, seq) for key in KEYS for seq in range(1, PER_KEY + 1)}

    def seen(records: list[ConsumerRecord]) -> set[tuple[str, int]]:
        return {(r.key.decode(), stream_version(r)) for r in records}

    assert len(groups.other_group) == TOTAL
    assert seen(groups.other_group) == expected
    assert seen(groups.first + groups.resumed) == expected


# --- known gaps, documented and avoided -------------------------------------------------------


def test_gap_producer_metadata_for_a_missing_topic_is_not_relied_on(
    servers: Servers, kafka_admin: KafkaAdminClient
) -> None:
    """Tansu creates a topic (with its own default partition count) when a producer asks for metadata.

    Real Kafka does so only with auto.create.topics.enable (off on Strimzi setups); else
    the producer blocks max_block_ms and raises KafkaTimeoutError. So topics are always
    created explicitly with their partition count (crm up: stack.ensure_topics), and no
    code may count on a missing topic being reported, or being created with 3 partitions.
    """
    topic = f"compat.missing.{uuid.uuid4().hex[:12]}"
    producer = KafkaProducer(bootstrap_servers=servers.kafka_bootstrap, client_id="compat-missing", max_block_ms=3000)
    try:
        partitions = producer.partitions_for(topic)
    except KafkaTimeoutError:
        partitions = None
    finally:
        producer.close(timeout=5)

    if partitions:
        pytest.skip(
            f"server auto-creates topics: producer.partitions_for({topic!r}) created it with "
            f"{len(partitions)} partitions; avoided: topics are created by ensure_topics"
        )
    assert topic not in kafka_admin.list_topics()


def test_gap_end_offsets_after_a_batched_send_are_not_relied_on(servers: Servers, sent: Sent) -> None:
    """Real Kafka's end offset (ListOffsets latest) is the next offset to be written. Tansu answers the last
    batch's base offset + 1, so after a batch of n records it is n - 1 too low (10 records in one batch: 1).

    Only "end offset is 0" is relied on (stack.topic_is_empty, pinned above); consumer lag
    uses the fetch response's highwater (pinned above), which is right on both.
    """
    consumer = KafkaConsumer(bootstrap_servers=servers.kafka_bootstrap, client_id="compat-offsets")
    try:
        ends = consumer.end_offsets(sent.partitions)
    finally:
        consumer.close()
    counts = sent.count_by_partition()

    wrong = {
        tp.partition: (ends[tp], counts[tp.partition]) for tp in sent.partitions if ends[tp] != counts[tp.partition]
    }
    if wrong:
        pytest.skip(
            f"server gap: end_offsets after batched sends (partition: (end offset, records)) {wrong}; "
            "avoided: only end offset == 0 is used, lag uses highwater"
        )
    assert not wrong
