"""`crm export` run as a process: progress with totals and ETA on a (pseudo-)terminal,
a start and a summary line when its output goes to a pipe or a log."""

from __future__ import annotations

import errno
import os
import pty
import subprocess
import sys
from pathlib import Path

from crmkit.events import Metadata, NewEvent
from crmkit.eventstore import EventStore
from crmkit.publisher import Publisher
from crmkit.testing import Servers


def publish_widgets(store: EventStore, publisher: Publisher, count: int) -> None:
    publisher.publish(
        store.append(
            "w1", "widget", 0, [NewEvent("WidgetMade", {"n": n}) for n in range(count)], Metadata(actor="user:ana")
        )
    )
    publisher.flush()


def export_argv(topic: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "crmkit.cli", "export", topic, "--format", "jsonl", "--out", str(out)]


def env_for(servers: Servers) -> dict[str, str]:
    return {**os.environ, "CRM_KAFKA_BOOTSTRAP": servers.kafka_bootstrap}


def run_on_terminal(argv: list[str], env: dict[str, str]) -> str:
    """Run `argv` with stderr on a pseudo-terminal; everything it wrote there."""
    primary, secondary = pty.openpty()
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=secondary, env=env)
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError as exc:  # Linux: EIO once the process has closed the terminal
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=60) == 0
        return b"".join(chunks).decode()
    finally:
        os.close(primary)


def test_export_on_a_terminal_shows_records_read_of_the_total_and_the_time_left(
    store: EventStore, publisher: Publisher, topic: str, servers: Servers, tmp_path: Path
) -> None:
    publish_widgets(store, publisher, 5)
    shown = run_on_terminal(export_argv(topic, tmp_path / "w.jsonl"), env_for(servers))
    assert f"\rexport {topic}: 5/5 records (100%)" in shown
    assert "records/s" in shown and "ETA 0:00" in shown
    assert f"exported 5 new events from {topic}" in shown
    assert len((tmp_path / "w.jsonl").read_text().splitlines()) == 5


def test_export_into_a_log_writes_a_start_and_a_summary_line_only(
    store: EventStore, publisher: Publisher, topic: str, servers: Servers, tmp_path: Path
) -> None:
    publish_widgets(store, publisher, 5)
    done = subprocess.run(
        export_argv(topic, tmp_path / "w.jsonl"),
        capture_output=True,
        text=True,
        timeout=60,
        env=env_for(servers),
        check=True,
    )
    lines = done.stderr.splitlines()
    assert lines[0] == f"export {topic}: 5 records to go"
    assert lines[1].startswith(f"exported 5 new events from {topic} to ")
    assert len(lines) == 2 and "\r" not in done.stderr and "ETA" not in done.stderr
