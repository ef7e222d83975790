"""`crm tail` and `crm export`: the event streams as people and BI tools read them."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from crmkit import streams
from crmkit.events import Metadata, NewEvent
from crmkit.eventstore import EventStore
from crmkit.publisher import Publisher
from crmkit.shredding import KeyVault, PersonalData
from crmkit.testing import Servers, wait_until


def publish(store: EventStore, publisher: Publisher, stream: str, *events: NewEvent, after: int = 0) -> None:
    publisher.publish(store.append(stream, "widget", after, list(events), Metadata(actor="user:ana")))
    publisher.flush()


def test_flatten_joins_nested_keys_and_hides_sealed_values() -> None:
    row = streams.flatten(
        {
            "id": "e1",
            "type": "crm.widgets.WidgetMade.v1",
            "subject": "w1",
            "streamversion": 1,
            "data": {"name": {"pii": "v1.xyz"}, "size": {"h": 2, "w": 3}, "tags": ["a"], "n": None},
        }
    )
    assert row["id"] == "e1" and row["data.name"] == streams.SEALED_MARK
    assert row["data.size.h"] == 2 and row["data.size.w"] == 3
    assert row["data.tags"] == '["a"]' and row["data.n"] is None


def test_export_writes_flat_rows_and_resumes_where_it_stopped(
    db, store: EventStore, publisher: Publisher, topic: str, servers: Servers, tmp_path: Path
) -> None:
    store.personal = PersonalData(KeyVault(db["data_keys"]), {"WidgetMade": ("owner",)})
    publish(
        store,
        publisher,
        "w1",
        NewEvent("WidgetMade", {"owner": "Shirin", "size": {"h": 1}}),
        NewEvent("WidgetPainted", {"colour": "آبی"}),
    )
    publish(store, publisher, "w2", NewEvent("WidgetMade", {"owner": "Reza", "size": {"h": 2}}))
    out = tmp_path / "widgets.jsonl"
    assert streams.export(servers.kafka_bootstrap, topic, fmt="jsonl", out=out) == 3
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["type"] for r in rows) == ["crm.widgets.WidgetMade.v1"] * 2 + ["crm.widgets.WidgetPainted.v1"]
    assert {r["data.owner"] for r in rows if "data.owner" in r} == {streams.SEALED_MARK}
    assert "Shirin" not in out.read_text(encoding="utf-8")
    assert streams.export(servers.kafka_bootstrap, topic, fmt="jsonl", out=out) == 0  # nothing new

    publish(store, publisher, "w2", NewEvent("WidgetPainted", {"colour": "red"}), after=1)
    assert streams.export(servers.kafka_bootstrap, topic, fmt="jsonl", out=out) == 1
    assert len(out.read_text().splitlines()) == 4

    table = tmp_path / "widgets.csv"
    assert streams.export(servers.kafka_bootstrap, topic, fmt="csv", out=table, event_type="WidgetMade") == 2
    with open(table, newline="", encoding="utf-8") as fh:
        records = list(csv.DictReader(fh))
    assert [r["data.size.h"] for r in sorted(records, key=lambda r: r["subject"])] == ["1", "2"]
    assert all(r["actor"] == "user:ana" for r in records)


def test_crm_tail_prints_readable_lines_and_stops_on_ctrl_c(
    store: EventStore, publisher: Publisher, topic: str, servers: Servers, tmp_path: Path
) -> None:
    publish(store, publisher, "w1", NewEvent("WidgetMade", {"colour": "سبز"}))
    output = tmp_path / "tail.out"
    with open(output, "w", encoding="utf-8") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "crmkit.cli", "tail", topic, "--from-beginning"],
            env={**os.environ, "CRM_KAFKA_BOOTSTRAP": servers.kafka_bootstrap},
            stdout=out,
        )
    try:
        line = wait_until(lambda: output.read_text(encoding="utf-8"), what="tail to print")
        assert "crm.widgets.WidgetMade.v1" in line and "w1 v1" in line and "by user:ana" in line and "سبز" in line
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0


def test_csv_cells_that_a_spreadsheet_would_run_are_written_as_text(tmp_path: Path) -> None:
    table = tmp_path / "events.csv"
    with streams._Writer(table, "csv") as writer:
        writer.write(
            {
                "id": "e1",
                "data.first_name": '=HYPERLINK("http://evil","x")',
                "data.note": "@SUM(A1)",
                "data.amount": -5,
                "data.title": "-2+3",
                "data.plain": "Ali",
            }
        )
    with open(table, newline="", encoding="utf-8") as fh:
        (row,) = csv.DictReader(fh)
    assert row["data.first_name"] == '\'=HYPERLINK("http://evil","x")'
    assert row["data.note"] == "'@SUM(A1)" and row["data.title"] == "'-2+3"
    assert row["data.amount"] == "-5" and row["data.plain"] == "Ali"  # numbers and plain text untouched


def test_csv_exports_start_with_a_byte_order_mark_once_so_excel_shows_persian(tmp_path: Path) -> None:
    table = tmp_path / "contacts.csv"
    with streams._Writer(table, "csv") as writer:
        writer.write({"id": "e1", "data.first_name": "علی"})
    with streams._Writer(table, "csv") as writer:  # a later run appends under the same header
        writer.write({"id": "e2", "data.first_name": "زهرا"})
    raw = table.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and raw.count(b"\xef\xbb\xbf") == 1
    with open(table, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["id"], r["data.first_name"]) for r in rows] == [("e1", "علی"), ("e2", "زهرا")]
    jsonl = tmp_path / "contacts.jsonl"
    with streams._Writer(jsonl, "jsonl") as writer:
        writer.write({"id": "e1"})
    assert jsonl.read_bytes().startswith(b"{")  # JSON lines stay plain UTF-8 (RFC 8259: no BOM)
