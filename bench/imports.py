"""Bulk import rows/second (POST /v1/imports + the worker's ImportRunner) beside raw insert_many.

`run(env, runtime, rows=100_000)` generates a CSV of `rows` contacts (Persian and Latin
names, emails, phones, tags, an attribute; 1% invalid rows, 1% repeats of an earlier
row), uploads it through the running api process, then runs the import with a real
`crm_contacts.imports.jobs.ImportRunner` in this process (what the worker runs) and checks
the job's counts exactly. Ours: data rows per second from claim to completed. Raw:
`insert_many` (batches of `batch`) of documents shaped like the ContactCreated events the
import stored, into a fresh collection with the event store's unique index.

An imported row costs more than one raw insert: it is validated and normalised like a
POST /v1/contacts, looked up for duplicates, stored as an event *and* a per-person key
(crypto-shredding), published to Kafka and marked published.

Standalone: `python -m bench.imports [--rows N]` starts its own servers and api process.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import sys
import time
import urllib.parse
import uuid
from typing import Any

from pymongo import ASCENDING, MongoClient

from bench.environment import Environment
from bench.stats import rate

RAW_DATABASE = "bench_raw"
PERSIAN_NAMES = ("علی", "زهرا", "رضا", "مریم", "حسین", "فاطمه")
PERSIAN_FAMILIES = ("رضایی", "احمدی", "کریمی", "حسینی")


def generate(rows: int) -> tuple[bytes, dict[str, int]]:
    """A CSV of `rows` data rows and the counts its import must report."""
    lines = ["first_name,last_name,email,phone,lifecycle_stage,tags,attributes.source"]
    expected = {"created": 0, "duplicates": 0, "rejected": 0, "updated": 0}
    for i in range(1, rows + 1):
        if i % 100 == 50:
            email, outcome = f"broken-address-{i}", "rejected"
        elif i % 100 == 0:
            email, outcome = f"import{i - 1}@example.org", "duplicates"  # repeats the row before
        else:
            email, outcome = f"import{i}@example.org", "created"
        expected[outcome] += 1
        phone = "" if outcome == "duplicates" else f"+98935{i:07d}"
        first, last = (PERSIAN_NAMES[i % 6], PERSIAN_FAMILIES[i % 4]) if i % 3 == 0 else (f"First{i}", "Last")
        stage = "customer" if i % 7 == 0 else ""
        lines.append(f"{first},{last},{email},{phone},{stage},bench;import|bulk,generated")
    return ("\n".join(lines) + "\n").encode("utf-8"), expected


def upload(env: Environment, body: bytes) -> tuple[dict[str, Any], float]:
    parts = urllib.parse.urlsplit(env.api_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=300)
    began = time.perf_counter()
    try:
        connection.request(
            "POST",
            "/v1/imports",
            body=body,
            headers={"Authorization": f"Bearer {env.token}", "Content-Type": "text/csv"},
        )
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    seconds = time.perf_counter() - began
    if response.status != 202:
        raise RuntimeError(f"POST /v1/imports answered {response.status}: {payload[:300]!r}")
    return json.loads(payload), seconds


def raw_insert_many(env: Environment, template: dict[str, Any], count: int, batch: int) -> float:
    """insert_many docs/s of `count` copies of `template` (each its own stream) in batches of `batch`."""
    client: MongoClient = MongoClient(env.mongo_url, tz_aware=True)
    try:
        events = client[RAW_DATABASE]["import_events"]
        events.drop()
        events.create_index([("stream_id", ASCENDING), ("version", ASCENDING)], unique=True)
        docs = []
        for _ in range(count):
            doc = copy.deepcopy(template)
            doc["_id"] = doc["stream_id"] = str(uuid.uuid4())
            docs.append(doc)
        began = time.perf_counter()
        for i in range(0, count, batch):
            events.insert_many(docs[i : i + batch], ordered=True)
        seconds = time.perf_counter() - began
        events.drop()
        return rate(count, seconds)
    finally:
        client.close()


def run(
    env: Environment, runtime: Any, rows: int = 100_000, batch: int = 1000, raw_rows: int = 20_000
) -> dict[str, Any]:
    """Import `rows` generated rows; figures and the raw comparison as a dict (see the module docstring)."""
    from crm_contacts.imports.jobs import ImportRunner

    body, expected = generate(rows)
    accepted, upload_seconds = upload(env, body)
    runner = ImportRunner(runtime, batch_rows=batch)
    cpu_began, began = time.process_time(), time.perf_counter()
    if not runner.run_once():
        raise RuntimeError("the import runner found no queued import")
    seconds = time.perf_counter() - began
    cpu_seconds = time.process_time() - cpu_began
    job = runtime.db["imports"].find_one({"_id": accepted["id"]})
    counts = {name: job["counts"][name] for name in expected}
    if job["status"] != "completed" or counts != expected or job["counts"]["rows_processed"] != rows:
        raise RuntimeError(
            f"import ended {job['status']} ({job.get('error')}) with {job['counts']}, expected {expected}"
        )
    template = runtime.db["events"].find_one({"causation_id": accepted["id"]})
    template.pop("_id", None)
    raw = raw_insert_many(env, template, min(raw_rows, rows), batch)
    return {
        "rows": rows,
        "bytes": len(body),
        "batch": batch,
        "counts": counts,
        "upload_seconds": round(upload_seconds, 3),
        "upload_mb_per_s": round(len(body) / 1e6 / upload_seconds, 1) if upload_seconds else 0.0,
        "import_seconds": round(seconds, 3),
        "ours_rows_per_s": rate(rows, seconds),
        "job_rows_per_s": job.get("rows_per_second"),
        "end_to_end_rows_per_s": rate(rows, seconds + upload_seconds),
        "runner_cpu_ms_per_row": round(cpu_seconds * 1000 / rows, 3),
        "raw": {"insert_many_docs_per_s": raw, "docs": min(raw_rows, rows), "batch": batch},
    }


def main(argv: list[str] | None = None) -> int:
    import os

    from bench import environment
    from crmkit.service import spec_for

    parser = argparse.ArgumentParser(prog="python -m bench.imports", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the generated CSV (default 100000)")
    parser.add_argument("--batch", type=int, default=1000, help="rows per import batch and raw insert_many")
    args = parser.parse_args(argv)
    print("bench: starting Kafka, MongoDB and the contacts api on free ports", file=sys.stderr, flush=True)
    with environment.started() as env:
        os.environ.update(env.env)
        spec = spec_for(environment.SERVICE)
        runtime = spec.runtime()
        try:
            print(f"bench: importing {args.rows} rows", file=sys.stderr, flush=True)
            figures = run(env, runtime, rows=args.rows, batch=args.batch)
        finally:
            runtime.close()
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
