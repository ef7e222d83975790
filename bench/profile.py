"""Where a create's time goes: py-spy samples the contacts api's gunicorn workers while creates run.

`creates(stack, seconds, clients)` finds the gunicorn master of `crm serve contacts api`,
runs `py-spy record --subprocesses --idle --format raw` on it for `seconds` while `clients`
threads POST /v1/contacts, and sorts every sample taken inside a request into one part of
the request path (`classify`). `--idle` keeps the samples of threads blocked on a socket, so
a wait for MongoDB counts where it is spent; samples outside a request (idle threads, the
producer's own thread) are counted apart. The raw collapsed stacks are kept in bench/results/.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bench import measure

# (part of the request path, substrings of a py-spy frame "function (file:line)"): our own modules first,
# so a pymongo call inside the event store counts as the event store, one inside the key vault as sealing
OURS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idempotency", ("_idempotent", "IdempotencyKeys")),
    ("sealing / key lookups (KeyVault, crypto)", ("shredding.py", "cryptography/", "signing.py")),
    ("publish hand-off (producer)", ("publisher.py",)),
    ("event store append (insert, unique index)", ("eventstore.py", "streams.py")),
    ("metrics", ("metrics.py", "prometheus_client/")),
    ("auth (bearer token check)", ("auth.py", "keys.py", "jwt/")),
    ("logging", ("logs.py",)),
    (
        "JSON / validation (marshmallow, schemas, responses)",
        ("marshmallow/", "schemas.py", "responses.py", "problems.py"),
    ),
    ("contacts domain (normalise, dedupe, fold; its own Mongo reads)", ("crm_contacts/", "aggregate.py")),
)
# what is left: the libraries the request path runs through
LIBRARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("JSON / validation (marshmallow, schemas, responses)", ("json/", "endpoint.py")),
    ("Mongo driver outside our modules (pymongo)", ("pymongo/", "bson/")),
    ("logging", ("logging/",)),
    ("Flask / Werkzeug", ("flask/", "werkzeug/")),
    ("gunicorn (parse, respond, thread hand-off)", ("gunicorn/",)),
)
REQUEST = ("handle (", "handle_request (")  # gunicorn gthread's frames under which a request is served
PY_SPY = Path(sys.executable).parent / "py-spy"


def api_master() -> int:
    """The pid of the contacts api's gunicorn master (its workers are its children)."""
    candidates = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if any(b"gunicorn" in a for a in argv) and any(b"wsgi('contacts')" in a for a in argv):
            candidates.append((int(proc.name), parent))
    pids = {pid for pid, _ in candidates}
    masters = [pid for pid, parent in candidates if parent not in pids]
    if len(masters) != 1:
        raise RuntimeError(f"expected one gunicorn master of the contacts api, found {masters}")
    return masters[0]


def classify(frames: list[str]) -> str:
    """The part of the request path a sample belongs to: the innermost frame of our own modules, else of a
    library; samples outside a request (idle workers, the producer's and driver's own threads) are background."""
    if not any(frame.startswith(REQUEST) and "gunicorn/" in frame for frame in frames):
        return "background"
    for table in (OURS, LIBRARIES):
        for frame in reversed(frames):  # innermost last in py-spy's collapsed format
            for part, markers in table:
                if any(marker in frame for marker in markers):
                    return part
    return "other"


def summarise(collapsed: str, top: int = 15) -> dict[str, Any]:
    """Shares of the request-path samples by part, and the functions most often innermost in them."""
    parts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        part = classify(frames)
        parts[part] += int(count)
        if part != "background":
            leaves[frames[-1]] += int(count)
    background = parts.pop("background", 0)
    total = sum(parts.values()) or 1
    return {
        "request_samples": total,
        "background_samples": background,
        "parts": [{"part": p, "share": round(n / total, 3)} for p, n in parts.most_common()],
        "top_frames": [{"frame": f, "share": round(n / total, 3)} for f, n in leaves.most_common(top)],
    }


def creates(subject: Any, seconds: float, clients: int) -> dict[str, Any]:
    """py-spy on the contacts api while `clients` threads keep creating contacts for `seconds`."""
    if not PY_SPY.exists() and shutil.which("py-spy") is None:
        raise RuntimeError("py-spy is not installed (pip install -r requirements-dev.txt)")
    output = subject.home / "create-profile.txt"
    spy = subprocess.Popen(
        [
            str(PY_SPY if PY_SPY.exists() else "py-spy"),
            "record",
            "--pid",
            str(api_master()),
            "--subprocesses",
            "--idle",
            "--rate",
            "200",
            "--duration",
            str(int(seconds)),
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stop = threading.Event()
    created = [0]

    def load() -> None:
        while not stop.is_set():
            run = measure.create_contacts(subject.environment(), clients * 10, clients, first=100_000 + created[0])
            created[0] += len(run.ids)

    driver = threading.Thread(target=load, daemon=True)
    driver.start()
    try:  # py-spy may take minutes to unwind --subprocesses --idle samples on a busy machine
        _, errors = spy.communicate(timeout=seconds * 6 + 60)
    except subprocess.TimeoutExpired:
        spy.kill()
        _, errors = spy.communicate()
    finally:
        stop.set()
        driver.join(timeout=60)
    if spy.returncode != 0 or not output.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {errors.decode(errors='replace')[-500:]}")
    kept = Path(__file__).resolve().parent / "results" / "create-profile.txt"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(output, kept)
    return {
        "seconds": seconds,
        "creates": created[0],
        "collapsed_stacks": str(kept),
        **summarise(output.read_text(errors="replace")),
    }  # --nonblocking may tear a name


def render(profile: dict[str, Any]) -> str:
    lines = [
        f"where a create's time goes (py-spy, {profile['request_samples']} samples inside requests, "
        f"{profile['creates']} creates in {profile['seconds']:.0f}s):"
    ]
    lines += [f"  {row['share'] * 100:5.1f}%  {row['part']}" for row in profile["parts"]]
    lines.append("functions on top of the stack:")
    lines += [f"  {row['share'] * 100:5.1f}%  {row['frame']}" for row in profile["top_frames"]]
    return "\n".join(lines)
