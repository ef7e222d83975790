"""The event streams as a product for people and BI tools: `crm tail` and `crm export`.

Both read a topic directly (no consumer group, nothing committed), so they never
disturb the services' own consumers. `export` writes one flat row per event and keeps
the next offset of every partition beside the output file, so running it again appends
only what is new. Delivery is at least once: a row may repeat; dedupe by `id`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from crmkit.config import kafka_client_options
from crmkit.events import RecordedEvent
from crmkit.projector import caught_up
from crmkit.shredding import is_sealed
from crmkit.stack import stop_on_signals

ENVELOPE = (
    "id",
    "type",
    "source",
    "subject",
    "time",
    "aggregatetype",
    "streamversion",
    "correlationid",
    "causationid",
    "actor",
)
SEALED_MARK = "<encrypted>"  # personal fields stay unreadable in exports: BI gets no personal data


def flatten(envelope: dict[str, Any]) -> dict[str, Any]:
    """One row: the envelope's attributes, then `data` with nested keys joined by dots."""
    row = {key: envelope.get(key) for key in ENVELOPE}
    row.update(_flat(envelope.get("data") or {}, "data"))
    return row


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if is_sealed(value):
        return {prefix: SEALED_MARK}
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flat(item, f"{prefix}.{key}"))
        return flat or {prefix: None}
    if isinstance(value, list):
        return {prefix: json.dumps(value, ensure_ascii=False)}
    return {prefix: value}


def _reader(bootstrap: str) -> KafkaConsumer:
    """A consumer of no group (nothing committed, no rebalance): the CLI reads, it never consumes."""
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id="crm-cli",
        allow_auto_create_topics=False,
        **kafka_client_options(),
    )


def _consumer(bootstrap: str, topic: str) -> tuple[KafkaConsumer, list[TopicPartition]]:
    consumer = _reader(bootstrap)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    if not partitions:
        consumer.close()
        raise SystemExit(f"topic {topic} does not exist")
    consumer.assign(partitions)
    return consumer, partitions


def _envelopes(records: dict[Any, list[Any]]) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The polled messages that are CRM events, each with its CloudEvent."""
    for message in (m for chunk in records.values() for m in chunk):
        try:
            envelope = json.loads(message.value)
            RecordedEvent.from_cloudevent(envelope)  # only well-formed CRM events
        except ValueError:
            continue
        yield message, envelope


def _wanted(envelope: dict[str, Any], event_type: str | None) -> bool:
    """No filter, or the event's type by its full name (crm.contacts.ContactCreated.v1) or short one."""
    return not event_type or event_type in (envelope["type"], envelope["type"].split(".")[2])


def tail(bootstrap: str, topic: str, *, from_beginning: bool, event_type: str | None, out: TextIO) -> None:
    """Print events as they arrive, one readable line each, until Ctrl-C."""
    consumer, _ = _consumer(bootstrap, topic)
    if from_beginning:
        consumer.seek_to_beginning()
    else:
        consumer.seek_to_end()
    stop = stop_on_signals()
    try:
        while not stop.is_set():
            records = consumer.poll(timeout_ms=500)
            for _message, envelope in _envelopes(records):
                if not _wanted(envelope, event_type):
                    continue
                data = json.dumps(
                    {k: (SEALED_MARK if is_sealed(v) else v) for k, v in envelope["data"].items()}, ensure_ascii=False
                )
                out.write(
                    f"{envelope['time']}  {envelope['type']}  {envelope['subject']} "
                    f"v{envelope['streamversion']}  by {envelope['actor']}  {data}\n"
                )
                out.flush()
    finally:
        consumer.close()


def export(
    bootstrap: str,
    topic: str,
    *,
    fmt: str,
    out: Path,
    event_type: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Append every event not exported before to `out` (jsonl or csv); returns rows written.

    `progress` hears (records read, records there were to read when it began) after each poll.
    """
    offsets_file = out.with_name(out.name + ".offsets.json")
    done: dict[str, int] = json.loads(offsets_file.read_text()) if offsets_file.exists() else {}
    consumer, partitions = _consumer(bootstrap, topic)
    written = read = 0
    try:
        for tp in partitions:
            consumer.seek(tp, done.get(str(tp.partition), 0))
        start = {tp: done.get(str(tp.partition), 0) for tp in partitions}
        ends = consumer.end_offsets(partitions)
        backlog = _backlog(consumer, start, ends)
        with _Writer(out, fmt) as writer:
            while not caught_up(consumer, partitions):
                records = consumer.poll(timeout_ms=1000)
                read += sum(len(chunk) for chunk in records.values())
                backlog = _backlog(consumer, start, ends)
                for message, envelope in _envelopes(records):
                    if _wanted(envelope, event_type):
                        writer.write(flatten(envelope))
                        written += 1
                    done[str(message.partition)] = message.offset + 1
                if records:
                    writer.flush()
                    offsets_file.write_text(json.dumps(done))  # only after the rows are on disk
                    if progress is not None:
                        progress(read, backlog)
        if progress is not None:
            progress(read, backlog)
    finally:
        consumer.close()
    return written


def _backlog(consumer: KafkaConsumer, start: dict[TopicPartition, int], ends: dict[TopicPartition, int]) -> int:
    """Records from `start` to each partition's end: the high watermark of the last fetch,
    else the listed end offset (which the local Tansu gives as its last batch's first
    offset + 1, too low until a fetch has told the truth)."""
    total = 0
    for tp, first in start.items():
        high = consumer.highwater(tp)
        total += max(0, (ends[tp] if high is None else high) - first)
    return total


def records_on(bootstrap: str, topics: Sequence[str]) -> int:
    """How many records `topics` hold now (end less first offset of every partition): the
    size of a read from the beginning, for progress. A topic that does not exist holds none.
    An estimate: the local Tansu lists a partition's end as its last batch's first offset + 1."""
    consumer = _reader(bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for topic in topics for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return 0
        first, ends = consumer.beginning_offsets(partitions), consumer.end_offsets(partitions)
        return sum(ends[tp] - first[tp] for tp in partitions)
    finally:
        consumer.close()


class _Writer:
    """Appends rows as JSON lines, or as CSV under a header fixed by the file's first run."""

    def __init__(self, path: Path, fmt: str) -> None:
        if fmt not in ("jsonl", "csv"):
            raise SystemExit("--format must be jsonl or csv")
        self.path, self.fmt = path, fmt
        self.header: list[str] | None = None
        if fmt == "csv" and path.exists() and path.stat().st_size:
            with open(path, newline="", encoding="utf-8-sig") as existing:
                self.header = next(csv.reader(existing))
        self.pending: list[dict[str, Any]] = []

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *_: object) -> None:
        self.flush()

    def write(self, row: dict[str, Any]) -> None:
        self.pending.append(row)

    def flush(self) -> None:
        if not self.pending:
            return
        # CSV as utf-8-sig: the byte-order mark is how Excel knows the file is UTF-8 (without it,
        # Persian and Arabic show as mojibake). Python writes it only at the start of the file,
        # so appending to an existing export adds none.
        encoding = "utf-8-sig" if self.fmt == "csv" else "utf-8"
        with open(self.path, "a", newline="", encoding=encoding) as out:
            if self.fmt == "jsonl":
                out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in self.pending)
            else:
                self._csv(out)
        self.pending = []

    def _csv(self, out: TextIO) -> None:
        if self.header is None:
            data_columns = sorted({key for row in self.pending for key in row} - set(ENVELOPE))
            self.header = [*ENVELOPE, *data_columns, "extra"]
            csv.writer(out).writerow(self.header)
        writer = csv.DictWriter(out, fieldnames=self.header, extrasaction="ignore")
        for row in self.pending:
            extra = {key: value for key, value in row.items() if key not in self.header}
            cells = {**row, "extra": json.dumps(extra, ensure_ascii=False) if extra else ""}
            writer.writerow({key: inert_cell(value) for key, value in cells.items()})


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def inert_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text, never runs as a formula (OWASP "CSV injection").

    Event data is written by customers (names, notes, subjects), and Excel or LibreOffice
    evaluate a cell that starts with = + - @ (or a tab or CR before one). A leading
    apostrophe makes such a cell literal text; numbers are left alone, so a negative
    amount stays a number.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
