"""CPU seconds spent by each part of a running `crm up`, read from /proc (Linux).

On a 2-core machine a create's rate is bounded by the CPU every process spends on it: the
api that takes the request, the workers that project and publish it, and the MongoDB- and
Kafka-protocol servers those talk to. A py-spy profile of the api shows where the api's own
time goes (mostly waiting on MongoDB); this shows where the machine's goes, so the ratio of
our rate to a raw `insert_one` rate can be explained: the raw figure pays the server for one
insert, a create pays every process below for all it does.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
# first match wins: (text in the command line, the part it is counted as)
PARTS = (
    ("nx-27017", "MongoDB-protocol server (nx-27017)"),
    ("tansu", "Kafka-protocol server (Tansu)"),
    ("wsgi('contacts')", "contacts api (gunicorn)"),
    ("serve contacts worker", "contacts worker (projections, outbox)"),
    ("serve contacts", "contacts gRPC"),
    ("crmkit.cli up", "crm up supervisor"),
)
OTHERS = "other services' api, gRPC and workers"


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def part_of(command: str) -> str:
    return next((part for text, part in PARTS if text in command), OTHERS)


def snapshot(root: int) -> Counter[str]:
    """CPU seconds so far of `root` and every process under it, summed per part."""
    stats = {
        int(entry.name): stat
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None
    }
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    seconds: Counter[str] = Counter()
    pending = [root]
    while pending:
        pid = pending.pop()
        if pid in stats:
            seconds[part_of(_command(pid))] += stats[pid][1]
        pending.extend(children.get(pid, ()))
    return seconds


def per_operation(before: Counter[str], after: Counter[str], operations: int) -> dict[str, float]:
    """Milliseconds of CPU per operation, per part, between two snapshots (largest first)."""
    spent = {part: (after[part] - before[part]) * 1000 / max(operations, 1) for part in after}
    return {part: round(ms, 2) for part, ms in sorted(spent.items(), key=lambda item: -item[1]) if ms > 0}
