"""Bulk import of contacts: the job, the two file formats, and the runner the worker runs.

The api process receives the upload (`ImportJobs.receive`): it streams the body into
≤ 4 MB chunks in `import_chunks`, checking on the way that it is UTF-8 text in the
declared format, and queues a job. The worker (`ImportRunner`) claims a queued job with
a lease, reads the chunks back as a stream of rows and, per batch of ~1000 rows:

1. validates each row with the rules of POST /v1/contacts (`schemas.ContactInput`,
   `Contact.create`, the company must exist), collecting rejected rows with reasons;
2. dedupes by normalised email and E.164 phone, within the file (the first row wins)
   and against existing contacts (two `$in` lookups on the `contacts` projection);
3. writes: new contacts in one `EventStore.start_streams` insert (real ContactCreated
   events, then published), `on_duplicate=update` as a ContactUpdated on the existing
   contacts in one `Repository.save_many`, rejections into `import_rejections`;
4. checkpoints the job: counters, rows/second and the last completed row.

Crash safety: every write of a batch is idempotent, so a batch redone after a crash
changes nothing twice. Contact ids are derived from (the job's secret id key, row number), and
`start_streams` leaves streams that already exist alone; rejections are keyed by row;
re-applying an update records nothing. A worker that dies stops renewing its lease; the
next one to claim the job re-reads the rows up to the checkpoint (to rebuild the
in-file duplicate keys, writing nothing) and continues after it.

Why a job *document* and not an event-sourced aggregate: the job is operational state
(a progress bar with counters rewritten after every batch, a lease renewed by whoever
runs it), not a business fact anybody consumes, and event-sourcing it would append a
hundred progress events per import for no reader. The business facts are the contacts'
own events, which carry the job in `causationid` and the upload's correlation id.
"""

from __future__ import annotations

import builtins
import contextlib
import csv
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from bson import Binary
from marshmallow import ValidationError
from prometheus_client import Counter
from pymongo import ASCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from crm_contacts import settings
from crm_contacts.imports import formats as import_formats
from crm_contacts.records.domain import Contact
from crm_contacts.records.schemas import ContactInput
from crmkit.errors import Conflict, DomainError, NotFound, ValidationFailed
from crmkit.events import Metadata, new_id
from crmkit.repository import Repository
from crmkit.runtime import Runtime
from crmkit.web.endpoint import MalformedBody
from crmkit.web.pagination import page
from crmkit.web.problems import HttpError, flatten

log = logging.getLogger(__name__)

CHUNK_BYTES = 4 * 1024 * 1024
MAX_UPLOAD_BYTES = settings.DEFAULT_IMPORT_MAX_BYTES  # the default (CRM_CONTACTS_IMPORT_MAX_BYTES: settings.py)
LEASE_SECONDS = 60.0
MAX_ATTEMPTS = 5
ORPHAN_UPLOAD_SECONDS = 3600

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
FORMATS = {"text/csv": "csv", "application/x-ndjson": "ndjson", "application/jsonl": "ndjson", XLSX_TYPE: "xlsx"}
ON_DUPLICATE = ("skip", "update")
STATUSES = ("queued", "running", "completed", "failed")
CSV_COLUMNS = ("first_name", "last_name", "email", "phone", "company_id", "lifecycle_stage", "tags", "owner")
ATTRIBUTE_PREFIX = "attributes."
TAG_SEPARATORS = re.compile(r"[;|]")

ROWS = Counter("crm_import_rows_total", "Imported rows by outcome.", ["service", "outcome"])


# --- errors ----------------------------------------------------------------------------


class UnsupportedMediaType(HttpError):
    status = 415


class ImportFailed(Exception):
    """The file cannot be imported any further (the job fails with this reason)."""


class LeaseLost(Exception):
    """Another worker took the job over (this one was presumed dead)."""


# --- formats ---------------------------------------------------------------------------


def media_format(mimetype: str, params: dict[str, str]) -> str:
    """`csv`, `ndjson` or `xlsx` for an upload's Content-Type; 415 for anything else, or for a
    charset other than UTF-8 (any format) or Windows-1256 (CSV)."""
    fmt = FORMATS.get(mimetype.lower())
    if fmt is None:
        raise UnsupportedMediaType(
            f"send the file as {', '.join(FORMATS)}; got {mimetype or 'no Content-Type'}",
            {"Content-Type": [f"must be one of {', '.join(FORMATS)}"]},
        )
    charset = import_formats.charset_of(params)
    allowed = ("utf-8", "windows-1256") if fmt == "csv" else ("utf-8",)
    if not import_formats.known_charset(charset) or (fmt == "ndjson" and charset == import_formats.CP1256):
        raise UnsupportedMediaType(
            f"a {fmt} upload is {' or '.join(allowed)} text, not {charset}",
            {"Content-Type": [f"charset must be {' or '.join(allowed)}"]},
        )
    return fmt


def csv_columns(header: list[str]) -> list[str]:
    """The header row's column names, checked: every column known, none twice."""
    columns: list[str] = []
    problems: list[str] = []
    for position, raw in enumerate(header, start=1):
        name = raw.strip()
        lowered = name.lower()
        if lowered in CSV_COLUMNS:
            column = lowered
        elif lowered.startswith(ATTRIBUTE_PREFIX) and 0 < len(name) - len(ATTRIBUTE_PREFIX) <= 64:
            column = ATTRIBUTE_PREFIX + name[len(ATTRIBUTE_PREFIX) :]
        else:
            problems.append(
                f"column {position} ({name[:80]!r}) is not one of {', '.join(CSV_COLUMNS)} or {ATTRIBUTE_PREFIX}<key>"
                if name
                else f"column {position} has no name"
            )
            continue
        if column in columns:
            problems.append(f"column {name!r} appears twice")
        columns.append(column)
    if not problems and not columns:
        problems.append("the first line must be a header row naming the columns")
    if problems:
        raise ValidationFailed("the CSV header row is not usable", {"header": problems})
    return columns


def csv_fields(columns: list[str], record: list[str]) -> dict[str, Any]:
    """A CSV record as the fields POST /v1/contacts takes; empty cells are left out."""
    fields: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for column, raw in zip(columns, record, strict=False):
        value = raw.strip()
        if not value:
            continue
        if column == "tags":
            fields["tags"] = [tag.strip() for tag in TAG_SEPARATORS.split(value) if tag.strip()]
        elif column.startswith(ATTRIBUTE_PREFIX):
            attributes[column[len(ATTRIBUTE_PREFIX) :]] = value
        else:
            fields[column] = value
    if attributes:
        fields["attributes"] = attributes
    return fields


@dataclass(frozen=True)
class Row:
    number: int  # 1-based among data rows (the CSV header and blank lines are not rows)
    line: int  # the line of the file where the row starts
    fields: dict[str, Any] | None
    errors: dict[str, list[str]] | None = None  # the row could not even be read


def read_rows(text: io.TextIOBase, fmt: str) -> Iterator[Row]:
    """Rows of a CSV (with header) or JSON-lines text stream, in file order."""
    if fmt == "csv":
        yield from _csv_rows(text)
    else:
        yield from _ndjson_rows(text)


def sheet_rows(sheet: Any) -> Iterator[Row]:
    """Rows of a worksheet read like a CSV: the first non-blank row is the header, blank rows
    are skipped, `line` is the sheet's row number."""
    columns: list[str] | None = None
    number = 0
    for line, values in enumerate(sheet.iter_rows(values_only=True), start=1):
        record = [import_formats.cell_text(value) for value in values]
        if not any(cell.strip() for cell in record):
            continue
        if columns is None:
            while record and not record[-1].strip():  # a sheet's used range may run past the header
                record.pop()
            columns = csv_columns(record)
            continue
        number += 1
        if any(cell.strip() for cell in record[len(columns) :]):
            yield Row(number, line, None, {"_row": [f"has values past the {len(columns)} named columns"]})
            continue
        yield Row(number, line, csv_fields(columns, record))


def _csv_rows(text: io.TextIOBase) -> Iterator[Row]:
    reader = csv.reader(text)
    columns: list[str] | None = None
    number = line = 0
    while True:
        start = line + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over the size limit: the reader resumes after it
            line = reader.line_num
            number += 1
            yield Row(number, start, None, {"_row": [f"not readable as CSV: {exc}"]})
            continue
        line = reader.line_num
        if columns is None:
            columns = csv_columns(record)
            continue
        if not any(cell.strip() for cell in record):
            continue
        number += 1
        if len(record) > len(columns):
            yield Row(
                number, start, None, {"_row": [f"has {len(record)} values but the header names {len(columns)} columns"]}
            )
            continue
        yield Row(number, start, csv_fields(columns, record))


def _ndjson_rows(text: io.TextIOBase) -> Iterator[Row]:
    number = 0
    for line, raw in enumerate(text, start=1):
        if not raw.strip():
            continue
        number += 1
        try:
            value = json.loads(raw)
        except ValueError as exc:
            yield Row(number, line, None, {"_row": [f"not valid JSON: {exc}"]})
            continue
        if not isinstance(value, dict):
            yield Row(number, line, None, {"_row": ["must be a JSON object"]})
            continue
        yield Row(number, line, value)


def check_head(text: str, fmt: str) -> None:
    """Refuse an upload whose start shows it is not what its Content-Type says (422)."""
    text = text.removeprefix("\ufeff")
    if fmt == "csv":
        header = next(csv.reader(io.StringIO(text)), [])
        csv_columns(header)
        return
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        value = json.loads(first)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValidationFailed(
            "the upload is not JSON lines: its first line is not a JSON object",
            {"_body": ["each line must be one JSON object"]},
        )


def check_sheet_head(sheet: Any) -> None:
    """Refuse a workbook whose first sheet has no usable header row (422)."""
    for values in sheet.iter_rows(values_only=True):
        record = [import_formats.cell_text(value) for value in values]
        if any(cell.strip() for cell in record):
            while not record[-1].strip():
                record.pop()
            csv_columns(record)
            return
    raise ValidationFailed(
        "the workbook's first sheet is empty", {"header": ["the first row must be a header row naming the columns"]}
    )


def contact_id(id_key: str, created_ms: int, row: int) -> str:
    """The id of the contact row `row` of an import creates: the same on every attempt.

    Shaped like the platform's UUIDv7s (the import's time first), so imported contacts
    sort by creation like any other. The 74 random bits are an HMAC of the row number
    under the job's secret `id_key`, so they are as unguessable as `new_id()`'s: one
    imported contact's id reveals nothing about its neighbours'.
    """
    digest = hmac.new(id_key.encode(), row.to_bytes(8, "big"), hashlib.sha256).digest()
    tail = int.from_bytes(digest[:10], "big") >> 6  # 74 bits: UUIDv7's rand_a and rand_b
    value = (created_ms & (2**48 - 1)) << 80 | 0x7 << 76 | (tail >> 62) << 64 | 0b10 << 62 | (tail & (2**62 - 1))
    return str(uuid.UUID(int=value))


def epoch_ms() -> int:
    return time.time_ns() // 1_000_000


def chunk_id(import_id: str, seq: int) -> str:
    return f"{import_id}:{seq:06d}"


def rejection_id(import_id: str, row: int) -> str:
    return f"{import_id}:{row:010d}"


# --- the job documents (api side) ----------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    chunks: int
    size: int
    sha256: str
    format: str = "csv"  # what the bytes turned out to be (a workbook sent as text/csv is `xlsx`)
    encoding: str | None = import_formats.UTF8  # of a text upload: utf-8 or cp1256


def _read_up_to(stream: IO[bytes], size: int) -> bytes:
    parts: list[bytes] = []
    wanted = size
    while wanted > 0:
        part = stream.read(wanted)
        if not part:
            break
        parts.append(part)
        wanted -= len(part)
    return b"".join(parts)


def fingerprint(stream: IO[bytes]) -> str:
    """The SHA-256 of a body, read in chunks (an Idempotency-Key repeat is only compared)."""
    digest = hashlib.sha256()
    while chunk := _read_up_to(stream, CHUNK_BYTES):
        digest.update(chunk)
    return digest.hexdigest()


class ImportJobs:
    """The `imports` job documents, their uploaded chunks and their rejected rows."""

    def __init__(self, runtime: Runtime) -> None:
        self.jobs: Collection = runtime.db["imports"]
        self.chunks: Collection = runtime.db["import_chunks"]
        self.rejections: Collection = runtime.db["import_rejections"]

    def ensure_indexes(self) -> None:
        self.jobs.create_index([("status", ASCENDING)])
        self.chunks.create_index([("import_id", ASCENDING)])
        self.chunks.create_index([("seq", ASCENDING), ("created_ms", ASCENDING)])
        self.rejections.create_index([("import_id", ASCENDING)])

    def store_upload(self, import_id: str, stream: IO[bytes], fmt: str, charset: str | None = None) -> Upload:
        """Stream the body into chunks, checking it is text in `fmt` (UTF-8, or Windows-1256 for
        CSV: `imports.formats`) or a readable workbook; nothing is left on failure."""
        try:
            with tempfile.SpooledTemporaryFile(max_size=CHUNK_BYTES) as workbook:  # written to for xlsx only
                return self._store(import_id, stream, fmt, charset, workbook)
        except BaseException:
            self.discard(import_id)
            raise

    def _store(self, import_id: str, stream: IO[bytes], fmt: str, charset: str | None, workbook: IO[bytes]) -> Upload:
        digest = hashlib.sha256()
        seq = size = 0
        decoder: import_formats.Charset | None = None
        while chunk := _read_up_to(stream, CHUNK_BYTES):
            if seq == 0:
                import_formats.refuse_signature(chunk)
                if chunk.startswith(import_formats.ZIP_MAGIC):
                    fmt = "xlsx"
                elif fmt != "xlsx":
                    decoder = import_formats.Charset(charset, fallback=fmt == "csv")
            if decoder is None:
                workbook.write(chunk)
            else:
                self._check_text(chunk, size, seq, fmt, decoder)
            digest.update(chunk)
            size += len(chunk)
            self.chunks.insert_one(
                {
                    "_id": chunk_id(import_id, seq),
                    "import_id": import_id,
                    "seq": seq,
                    "data": Binary(chunk),
                    "created_ms": epoch_ms(),
                }
            )
            seq += 1
        if size == 0:
            raise MalformedBody("the request needs a body: the file to import")
        if decoder is not None:
            decoder.finish()
        else:
            workbook.seek(0)
            sheet = import_formats.open_workbook(workbook, settings.current().xlsx_max_unpacked)
            try:
                check_sheet_head(sheet)
            finally:
                sheet.parent.close()
        return Upload(seq, size, digest.hexdigest(), fmt, decoder.encoding if decoder else None)

    @staticmethod
    def _check_text(chunk: bytes, size: int, seq: int, fmt: str, decoder: import_formats.Charset) -> None:
        if b"\x00" in chunk:
            raise ValidationFailed(
                "the upload is binary data, not text", {"_body": [f"NUL byte at offset {size + chunk.index(0)}"]}
            )
        text = decoder.decode(chunk)
        if seq == 0:
            check_head(text, fmt)

    def discard(self, import_id: str) -> None:
        self.chunks.delete_many({"import_id": import_id})

    def create(self, import_id: str, fmt: str, on_duplicate: str, upload: Upload, meta: Metadata) -> dict[str, Any]:
        job = {
            "_id": import_id,
            "status": "queued",
            "format": upload.format,
            "encoding": upload.encoding,  # how the worker decodes a text upload
            "on_duplicate": on_duplicate,
            "bytes": upload.size,
            "chunks": upload.chunks,
            "sha256": upload.sha256,
            "actor": meta.actor,
            "correlation_id": meta.correlation_id,
            "id_key": secrets.token_hex(16),  # keys the new contacts' ids (contact_id); never shown
            "created_ms": epoch_ms(),  # times are epoch millis: nx-27017 turns a `$set` datetime into a string
            "started_ms": None,
            "finished_ms": None,
            "rows_total": None,
            "last_row": 0,
            "counts": _zero_counts(),
            "rows_per_second": None,
            "error": None,
            "attempts": 0,
            "lease_owner": None,
            "lease_until_ms": 0,
        }
        self.jobs.insert_one(job)
        return job

    def get(self, import_id: str) -> dict[str, Any]:
        job = self.jobs.find_one({"_id": import_id})
        if job is None:
            raise NotFound(f"no import with id {import_id}")
        return job

    def list(
        self, limit: int, cursor: str | None, status: str | None = None
    ) -> tuple[builtins.list[dict[str, Any]], str | None]:  # `list`, in this class, is the method
        return page(self.jobs, {"status": status} if status else {}, limit, cursor)

    def rejected_rows(
        self, import_id: str, limit: int, cursor: str | None
    ) -> tuple[builtins.list[dict[str, Any]], str | None]:
        self.get(import_id)
        docs, next_cursor = page(self.rejections, {"import_id": import_id}, limit, cursor)
        return [{"row": d["row"], "line": d["line"], "errors": d["errors"]} for d in docs], next_cursor


def _zero_counts() -> dict[str, int]:
    return {"rows_processed": 0, "created": 0, "updated": 0, "duplicates": 0, "rejected": 0}


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it."""
    counts = job.get("counts") or _zero_counts()
    total = job.get("rows_total")
    if job["status"] == "completed":
        progress: float | None = 1.0
    elif total:
        progress = round(min(counts["rows_processed"] / total, 1.0), 4)
    else:
        progress = 0.0 if job["status"] == "queued" else None
    return {
        "id": job["_id"],
        "status": job["status"],
        "format": job["format"],
        "on_duplicate": job["on_duplicate"],
        "bytes": job["bytes"],
        "rows_total": total,
        **counts,
        "progress": progress,
        "rows_per_second": job.get("rows_per_second"),
        "error": job.get("error"),
        "created_at": _time(job["created_ms"]),
        "started_at": _time(job.get("started_ms")),
        "finished_at": _time(job.get("finished_ms")),
    }


def _time(millis: int | None) -> datetime | None:
    return None if millis is None else datetime.fromtimestamp(millis / 1000, UTC)


# --- the runner (worker side) ----------------------------------------------------------------


class _ChunkStream(io.RawIOBase):
    """The uploaded bytes, chunk after chunk, as a file (one query per 4 MB chunk)."""

    def __init__(self, chunks: Collection, import_id: str, count: int) -> None:
        super().__init__()
        self._chunks, self._import_id, self._count = chunks, import_id, count
        self._next = 0
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            if self._next >= self._count:
                return 0
            doc = self._chunks.find_one({"_id": chunk_id(self._import_id, self._next)})
            if doc is None:
                raise ImportFailed(f"the uploaded file is incomplete: part {self._next + 1} is missing")
            self._buffer = memoryview(bytes(doc["data"]))
            self._next += 1
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


@dataclass
class Candidate:
    row: Row
    fields: dict[str, Any]
    contact: Contact  # the new contact, if the row turns out to be new


@dataclass
class Plan:
    """What one batch will write, decided before anything is written."""

    last_row: int
    rows: int
    rejections: list[dict[str, Any]] = field(default_factory=list)
    creates: list[Contact] = field(default_factory=list)
    updates: list[tuple[str, Candidate]] = field(default_factory=list)
    duplicates: int = 0


@dataclass
class Progress:
    counts: dict[str, int]
    last_row: int
    seen: set[str] = field(default_factory=set)  # "e:<email>" / "p:<phone>" of rows taken so far
    companies: dict[str, bool] = field(default_factory=dict)  # company id → exists
    attempt_started: float = field(default_factory=time.monotonic)
    rows_at_attempt_start: int = 0


class ImportRunner:
    """Claims queued imports and runs them batch by batch (the worker runs `run`)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        worker: str | None = None,
        batch_rows: int | None = None,
        lease_seconds: float = LEASE_SECONDS,
        poll_seconds: float = 1.0,
    ) -> None:
        self.runtime = runtime
        self.service = runtime.settings.service
        self.jobs = ImportJobs(runtime)
        self.contacts_view: Collection = runtime.db["contacts"]
        self.store = runtime.store
        self.repository: Repository[Contact] = Repository(runtime.store, Contact, runtime.publish)
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"
        self.batch_rows = batch_rows or settings.current().import_batch
        self.lease_ms = int(lease_seconds * 1000)
        self.poll_seconds = poll_seconds
        self.schema = ContactInput()
        self._last_renewal = 0.0
        self._last_janitor = 0.0

    # --- the loop ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Claim and run imports until `stop` (a running job hands its lease back)."""
        while not stop.is_set():
            try:
                worked = self.run_once(stop)
                self._clean_orphans()
            except Exception:
                log.exception("import runner failed; retrying")
                worked = False
            if not worked:
                stop.wait(self.poll_seconds)

    def run_once(self, stop: threading.Event | None = None, max_batches: int | None = None) -> bool:
        """Claim one job and work on it; False when there was nothing to claim.

        `max_batches` stops after that many batches *without* handing the lease back,
        exactly like a worker that died there (the tests' crash).
        """
        job = self.claim()
        if job is None:
            return False
        if job["attempts"] > MAX_ATTEMPTS:
            self._finish(job, "failed", f"gave up after {MAX_ATTEMPTS} attempts: {job.get('last_error') or 'crashed'}")
            return True
        try:
            self.process(job, stop=stop, max_batches=max_batches)
        except LeaseLost:
            log.warning("import lease lost to another worker", extra={"subject": job["_id"]})
        except ImportFailed as exc:
            self._finish(job, "failed", str(exc))
        except Exception as exc:
            log.exception("import attempt failed; it will be retried", extra={"subject": job["_id"]})
            self.jobs.jobs.update_one(
                {"_id": job["_id"], "lease_owner": self.worker},
                {
                    "$set": {
                        "last_error": f"{exc.__class__.__name__}: {str(exc)[:300]}",
                        "lease_until_ms": epoch_ms() + 5000,
                    }
                },
            )
        return True

    def claim(self) -> dict[str, Any] | None:
        """Atomically take the oldest queued job, or a running one whose lease ran out."""
        now = epoch_ms()
        job = self.jobs.jobs.find_one_and_update(
            {"status": {"$in": ["queued", "running"]}, "lease_until_ms": {"$lt": now}},
            {
                "$set": {"status": "running", "lease_owner": self.worker, "lease_until_ms": now + self.lease_ms},
                "$inc": {"attempts": 1},
            },
            sort=[("_id", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )
        if job is not None:
            self._last_renewal = time.monotonic()
            if not job.get("started_ms"):
                self._update(job, {"started_ms": epoch_ms()})
            log.info("import claimed", extra={"subject": job["_id"], "count": job["last_row"]})
        return job

    # --- one job -----------------------------------------------------------------------

    def process(self, job: dict[str, Any], stop: threading.Event | None = None, max_batches: int | None = None) -> None:
        """Run a claimed job from its checkpoint to the end (or until `stop`).

        Three stages overlap: this thread reads and checks batch N+1 while the writer
        thread stores batch N, while the publisher thread hands batch N-1 to Kafka.
        """
        progress = Progress(counts=dict(job.get("counts") or _zero_counts()), last_row=job["last_row"])
        progress.rows_at_attempt_start = progress.counts["rows_processed"]
        if job.get("rows_total") is None:
            self._update(job, {"rows_total": sum(1 for _ in self._rows(job, renew=True))})
        batches, finished = 0, True
        with ThreadPoolExecutor(1, "import-writer") as writer, ThreadPoolExecutor(1, "import-publisher") as kafka:
            pending: Future | None = None  # the previous batch's writes
            for rows in _batched(self._rows(job, renew=True), self.batch_rows):
                done = [row for row in rows if row.number <= progress.last_row]
                if done:  # written by an earlier attempt: only rebuild the in-file duplicate keys
                    self._plan(job, done, progress, lookup=False)
                rows = rows[len(done) :]
                if not rows:
                    continue
                plan = self._plan(job, rows, progress, lookup=True)
                if pending is not None:
                    pending.result()
                    pending = None
                if (stop is not None and stop.is_set()) or (max_batches is not None and batches >= max_batches):
                    finished = False
                    break
                pending = writer.submit(self._write, job, plan, progress, kafka)
                batches += 1
            if pending is not None:
                pending.result()
        if finished:
            self._finish(job, "completed", None, progress)
        elif max_batches is None:  # asked to stop: hand the job to whoever runs next, no attempt spent
            self.jobs.jobs.update_one(
                {"_id": job["_id"], "lease_owner": self.worker},
                {"$set": {"lease_until_ms": 0}, "$inc": {"attempts": -1}},
            )

    def _rows(self, job: dict[str, Any], renew: bool) -> Iterator[Row]:
        raw = _ChunkStream(self.jobs.chunks, job["_id"], job["chunks"])
        try:
            if job["format"] == "xlsx":
                yield from self._renewing(job, renew, self._sheet_rows(raw))
                return
            encoding = "utf-8-sig" if (job.get("encoding") or "utf-8") == "utf-8" else job["encoding"]
            text = io.TextIOWrapper(io.BufferedReader(raw, 1 << 20), encoding=encoding, newline="")
            yield from self._renewing(job, renew, read_rows(text, job["format"]))
        except (UnicodeDecodeError, ValidationFailed) as exc:
            raise ImportFailed(f"the file cannot be read: {getattr(exc, 'detail', exc)}") from None

    def _renewing(self, job: dict[str, Any], renew: bool, rows: Iterator[Row]) -> Iterator[Row]:
        for row in rows:
            if renew and row.number % 1000 == 0:
                self._renew(job)
            yield row

    @staticmethod
    def _sheet_rows(raw: io.RawIOBase) -> Iterator[Row]:
        """A workbook's rows: its bytes are copied to a spooled file first (a zip is read from its end)."""
        with tempfile.SpooledTemporaryFile(max_size=CHUNK_BYTES) as copy:
            shutil.copyfileobj(io.BufferedReader(raw, 1 << 20), copy)
            copy.seek(0)
            sheet = import_formats.open_workbook(copy, settings.current().xlsx_max_unpacked)
            try:
                yield from sheet_rows(sheet)
            except ValidationFailed:
                raise
            except Exception as exc:  # a hostile workbook can make the parser raise anything
                raise ImportFailed(f"the workbook cannot be read: {type(exc).__name__}") from None
            finally:
                sheet.parent.close()

    def _plan(self, job: dict[str, Any], rows: list[Row], progress: Progress, lookup: bool) -> Plan:
        """Validate and dedupe one batch; with `lookup`, also match existing contacts."""
        plan = Plan(last_row=rows[-1].number, rows=len(rows))
        candidates: list[Candidate] = []
        for row in rows:
            if row.errors is not None:
                plan.rejections.append(self._rejection(job, row, row.errors))
                continue
            assert row.fields is not None  # a row was read (fields) or not (errors)
            try:
                fields = self.schema.load(row.fields)
                id_key = job.get("id_key") or job["_id"]  # jobs queued before id keys existed
                contact = Contact.create(contact_id(id_key, job["created_ms"], row.number), fields)
            except ValidationError as exc:
                plan.rejections.append(self._rejection(job, row, flatten(exc.messages)))
                continue
            except ValidationFailed as exc:
                plan.rejections.append(self._rejection(job, row, exc.errors))
                continue
            candidates.append(Candidate(row, fields, contact))
        candidates = self._require_companies(job, candidates, plan, progress)
        fresh = [c for c in candidates if not any(key in progress.seen for key in _keys(c.fields))]
        existing = self._existing(fresh, {c.contact.id for c in candidates}) if lookup else {}
        for candidate in candidates:
            keys = _keys(candidate.fields)
            if any(key in progress.seen for key in keys):
                plan.duplicates += 1
                continue
            progress.seen.update(keys)
            match = next((existing[key] for key in keys if key in existing), None)
            if match is None:
                plan.creates.append(candidate.contact)
            elif job["on_duplicate"] == "update":
                plan.updates.append((match, candidate))
            else:
                plan.duplicates += 1
        return plan

    def _require_companies(
        self, job: dict[str, Any], candidates: list[Candidate], plan: Plan, progress: Progress
    ) -> list[Candidate]:
        """Rows naming a company that does not exist are rejected, as POST /v1/contacts does."""
        unknown = {c.fields["company_id"] for c in candidates if c.fields.get("company_id")} - set(progress.companies)
        if unknown:
            found = self.store.load_many(sorted(unknown))
            for company_id in unknown:
                events = found.get(company_id, [])
                progress.companies[company_id] = bool(events) and events[0].aggregate_type == "company"
        kept = []
        for candidate in candidates:
            company_id = candidate.fields.get("company_id")
            if company_id and not progress.companies[company_id]:
                plan.rejections.append(
                    self._rejection(job, candidate.row, {"company_id": [f"no company with id {company_id}"]})
                )
            else:
                kept.append(candidate)
        return kept

    def _existing(self, candidates: list[Candidate], own_ids: set[str]) -> dict[str, str]:
        """Active contacts already holding the batch's emails or phones: key → contact id.

        Two `$in` queries on the projection per batch. Contacts this batch itself created
        on an earlier attempt (a redo after a crash) are not duplicates of themselves.
        """
        emails = sorted({c.fields["email"] for c in candidates if c.fields.get("email")})
        phones = sorted({c.fields["phone"] for c in candidates if c.fields.get("phone")})
        matches: dict[str, str] = {}
        for name, values in (("email", emails), ("phone", phones)):
            if not values:
                continue
            for doc in self.contacts_view.find({name: {"$in": values}}, {name: 1, "status": 1}):
                if doc.get("status") == "active" and doc["_id"] not in own_ids:
                    key = f"{name[0]}:{doc[name]}"
                    matches[key] = min(matches.get(key, doc["_id"]), doc["_id"])  # the oldest one
        return matches

    def _write(self, job: dict[str, Any], plan: Plan, progress: Progress, kafka: ThreadPoolExecutor) -> None:
        """Apply a batch's plan (every step idempotent), then checkpoint the job."""
        meta = Metadata(actor=job["actor"], correlation_id=job["correlation_id"], causation_id=job["_id"])
        updated = self._apply_updates(job, plan, meta)
        created = 0
        if plan.creates:
            stored, taken = self.store.start_streams(
                [(c.id, Contact.aggregate_type, c.pending) for c in plan.creates], meta
            )
            kafka.submit(self._publish, stored)  # the sweeper re-sends whatever this does not
            created = len(plan.creates)  # `taken` ones were stored by an earlier attempt of this batch
            if taken:
                log.info(
                    "import batch redone; contacts already stored", extra={"subject": job["_id"], "count": len(taken)}
                )
        if plan.rejections:
            with contextlib.suppress(BulkWriteError):  # already stored by an earlier attempt
                self.jobs.rejections.insert_many(plan.rejections, ordered=False)
        counts = progress.counts
        outcome = {
            "created": created,
            "updated": updated,
            "duplicates": plan.duplicates,
            "rejected": len(plan.rejections),
        }
        for name, value in outcome.items():
            counts[name] += value
            ROWS.labels(self.service, name).inc(value)
        counts["rows_processed"] += plan.rows
        progress.last_row = plan.last_row
        self._update(
            job,
            {"counts": dict(counts), "last_row": plan.last_row, "rows_per_second": self._rate(progress)},
            renew=True,
        )

    def _publish(self, events: list[Any]) -> None:
        try:
            self.runtime.publish(events)
        except Exception:
            log.exception("publishing imported contacts failed; the sweeper will send them")

    def _apply_updates(self, job: dict[str, Any], plan: Plan, meta: Metadata) -> int:
        """on_duplicate=update: the row is applied to the existing contact like a PATCH.

        One load and one bulk append for the batch. A contact a second row of the batch
        also matches, or one a concurrent writer moved first, is changed row by row.
        """
        if not plan.updates:
            return 0
        contacts = self.repository.get_many(sorted({contact for contact, _ in plan.updates}))
        cause = {"kind": "automation", "by": f"import:{job['_id']}"}
        decided: dict[str, tuple[Contact, Candidate]] = {}
        one_by_one: list[tuple[str, Candidate]] = []
        seen: set[str] = set()
        for existing_id, candidate in plan.updates:
            if existing_id in seen:
                one_by_one.append((existing_id, candidate))
                continue
            seen.add(existing_id)
            try:
                contact = contacts.get(existing_id)
                if contact is None:
                    raise NotFound(f"contact {existing_id} is gone")
                contact.update(candidate.fields, stage_cause=cause)
                decided[existing_id] = (contact, candidate)
            except (Conflict, ValidationFailed, NotFound) as exc:
                plan.rejections.append(self._update_rejection(job, candidate, existing_id, exc))
        taken = self.repository.save_many([contact for contact, _ in decided.values()], lambda _: meta)
        applied = len(decided) - len(taken)
        one_by_one = [(cid, candidate) for cid, (_, candidate) in decided.items() if cid in taken] + one_by_one
        for existing_id, candidate in one_by_one:
            fields = candidate.fields

            def decide(contact: Contact, fields: dict[str, Any] = fields) -> None:
                contact.update(fields, stage_cause=cause)

            try:
                self.repository.change(existing_id, decide, meta)
                applied += 1
            except (Conflict, ValidationFailed, NotFound) as exc:
                plan.rejections.append(self._update_rejection(job, candidate, existing_id, exc))
        return applied

    def _update_rejection(
        self, job: dict[str, Any], candidate: Candidate, existing_id: str, exc: DomainError
    ) -> dict[str, Any]:
        errors = exc.errors or {"_row": [f"could not update contact {existing_id}: {exc.detail}"]}
        return self._rejection(job, candidate.row, errors)

    def _rejection(self, job: dict[str, Any], row: Row, errors: dict[str, list[str]]) -> dict[str, Any]:
        """A rejected row: where it is and what is wrong, not its content (no personal data kept)."""
        return {
            "_id": rejection_id(job["_id"], row.number),
            "import_id": job["_id"],
            "row": row.number,
            "line": row.line,
            "errors": errors,
        }

    def _rate(self, progress: Progress) -> float:
        elapsed = max(time.monotonic() - progress.attempt_started, 1e-6)
        return round((progress.counts["rows_processed"] - progress.rows_at_attempt_start) / elapsed, 1)

    def _finish(self, job: dict[str, Any], status: str, error: str | None, progress: Progress | None = None) -> None:
        changes: dict[str, Any] = {"status": status, "error": error, "finished_ms": epoch_ms(), "lease_until_ms": 0}
        if progress is not None:
            changes["rows_per_second"] = self._rate(progress)
        self._update(job, changes)
        self.jobs.discard(job["_id"])  # the upload is not needed any more (nor its personal data)
        log.info(f"import {status}", extra={"subject": job["_id"], "reason": error})

    def _update(self, job: dict[str, Any], changes: dict[str, Any], renew: bool = False) -> None:
        """Change the job, as long as this worker still holds it (else LeaseLost)."""
        if renew:
            changes = {**changes, "lease_until_ms": epoch_ms() + self.lease_ms}
            self._last_renewal = time.monotonic()
        result = self.jobs.jobs.update_one({"_id": job["_id"], "lease_owner": self.worker}, {"$set": changes})
        if result.matched_count == 0:
            raise LeaseLost(job["_id"])
        job.update(changes)

    def _renew(self, job: dict[str, Any]) -> None:
        if time.monotonic() - self._last_renewal > self.lease_ms / 4000:
            self._update(job, {}, renew=True)

    def _clean_orphans(self) -> None:
        """Drop chunks of uploads whose api process died before queueing the job (hourly)."""
        if time.monotonic() - self._last_janitor < 600:
            return
        self._last_janitor = time.monotonic()
        cutoff = epoch_ms() - ORPHAN_UPLOAD_SECONDS * 1000
        firsts = self.jobs.chunks.find({"seq": 0, "created_ms": {"$lt": cutoff}}, {"import_id": 1}).limit(100)
        stale = [doc["import_id"] for doc in firsts]
        live = {doc["_id"] for doc in self.jobs.jobs.find({"_id": {"$in": stale}}, {"_id": 1})}
        for import_id in stale:
            if import_id not in live:
                self.jobs.discard(import_id)


def _keys(fields: dict[str, Any]) -> list[str]:
    keys = []
    if fields.get("email"):
        keys.append(f"e:{fields['email']}")
    if fields.get("phone"):
        keys.append(f"p:{fields['phone']}")
    return keys


def _batched(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
