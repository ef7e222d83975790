"""The unique (stream_id, version) index under concurrent writer processes.

EventStore.append relies on it for optimistic concurrency: gunicorn runs several api
processes and the gRPC and worker processes append too, so two processes may try to
store the same stream version at once; exactly one must win, the other must get
duplicate-key error 11000 (ConcurrencyError, 409 or a retry), and the stream must
stay contiguous with no version lost or doubled.
"""

from __future__ import annotations

import json
import subprocess
import sys

from pymongo import ASCENDING
from pymongo.database import Database

from crmkit.testing import Servers

WRITERS = 4
APPENDS_PER_WRITER = 50
STREAM = "contested-stream"

# One writer process: load the stream's last version, append the next one (as EventStore.append does,
# insert_many ordered), and on duplicate-key error 11000 load again and retry. It says "ready", waits for
# "go" on stdin so that all writers start together, and prints what it did as JSON.
WRITER = """
import json, sys, uuid
from datetime import UTC
from pymongo import DESCENDING, MongoClient
from pymongo.errors import BulkWriteError

url, database, writer, wanted, stream = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
client = MongoClient(url, tz_aware=True, tzinfo=UTC)
events = client[database]["events"]
client.admin.command("ping")
print("ready", flush=True)
sys.stdin.readline()
appended = conflicts = 0
while appended < wanted:
    last = events.find_one({"stream_id": stream}, sort=[("version", DESCENDING)])
    version = (last["version"] if last else 0) + 1
    document = {"_id": str(uuid.uuid4()), "stream_id": stream, "version": version, "writer": writer}
    try:
        events.insert_many([document], ordered=True)
        appended += 1
    except BulkWriteError as exc:
        if {error["code"] for error in exc.details["writeErrors"]} != {11000}:
            raise
        conflicts += 1
print(json.dumps({"writer": writer, "appended": appended, "conflicts": conflicts}), flush=True)
"""


def test_unique_index_holds_under_concurrent_writer_processes(servers: Servers, db: Database) -> None:
    """EventStore.append from several processes: versions contiguous, none duplicated, every append accounted for."""
    db["events"].create_index([("stream_id", ASCENDING), ("version", ASCENDING)], unique=True)
    argv = [servers.mongo_url, db.name]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, *argv, str(w), str(APPENDS_PER_WRITER), STREAM],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WRITERS)
    ]
    try:
        for writer in writers:  # each says "ready" (or exits, and then the assertion shows why)
            assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        for writer in writers:  # then all start at once
            writer.stdin.write("go\n")
            writer.stdin.flush()
        outcomes = []
        for writer in writers:
            out, err = writer.communicate(timeout=120)
            assert writer.returncode == 0, err
            outcomes.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()

    assert sorted(o["appended"] for o in outcomes) == [APPENDS_PER_WRITER] * WRITERS
    conflicts = sum(o["conflicts"] for o in outcomes)
    versions = [d["version"] for d in db["events"].find({"stream_id": STREAM}).sort("version", ASCENDING)]
    assert versions == list(range(1, WRITERS * APPENDS_PER_WRITER + 1)), f"{conflicts} conflicts seen"
    per_writer = {w: db["events"].count_documents({"writer": w}) for w in range(WRITERS)}
    assert per_writer == dict.fromkeys(range(WRITERS), APPENDS_PER_WRITER)
