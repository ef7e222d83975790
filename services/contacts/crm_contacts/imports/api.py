"""REST edge of bulk imports: POST /v1/imports (the upload), GET /v1/imports[/{id}[/rejections]].

The upload is not JSON, so the view reads the body itself, as a stream, into chunks
(`ImportJobs.store_upload`); the route alone accepts bodies up to
CRM_CONTACTS_IMPORT_MAX_BYTES (50 MiB), every other route keeps the 1 MiB cap.
Idempotency-Key works as on every create (the same `IdempotencyKeys` records, key
derivation, expiry and lease), but is handled here: the body's fingerprint is only known
once it has been streamed, and a repeat is compared by hashing the body without storing
it again.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import Schema, fields, validate

from crm_contacts import settings
from crm_contacts.imports import jobs as imports
from crmkit.events import new_id
from crmkit.runtime import Runtime
from crmkit.web import PageQuery, endpoint, jsonable, listing, metadata
from crmkit.web.endpoint import IDEMPOTENCY_KEY_SCHEMA, Claim, IdempotencyKeys, fingerprint, idempotency_key, replay


class ImportQuery(Schema):
    on_duplicate = fields.String(
        load_default="skip",
        validate=validate.OneOf(imports.ON_DUPLICATE),
        metadata={
            "description": "a row whose email or phone an existing contact has: `skip` it (count it as a "
            "duplicate) or `update` that contact with the row's fields"
        },
    )


class ImportListQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(imports.STATUSES))


class ImportView(Schema):
    id = fields.String()
    status = fields.String(metadata={"enum": list(imports.STATUSES)})
    format = fields.String(metadata={"enum": ["csv", "ndjson", "xlsx"]})
    on_duplicate = fields.String(metadata={"enum": list(imports.ON_DUPLICATE)})
    bytes = fields.Integer()
    rows_total = fields.Integer(allow_none=True, metadata={"description": "data rows in the file, once counted"})
    rows_processed = fields.Integer()
    created = fields.Integer()
    updated = fields.Integer(metadata={"description": "rows applied to an existing contact (on_duplicate=update)"})
    duplicates = fields.Integer(metadata={"description": "rows skipped: repeated in the file, or already a contact"})
    rejected = fields.Integer(metadata={"description": "rows that failed validation (see /rejections)"})
    progress = fields.Float(allow_none=True, metadata={"description": "rows_processed / rows_total, 0 to 1"})
    rows_per_second = fields.Float(allow_none=True)
    error = fields.String(allow_none=True, metadata={"description": "why the import failed"})
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class RejectionView(Schema):
    row = fields.Integer(metadata={"description": "1-based data row (the CSV header is not a row)"})
    line = fields.Integer(metadata={"description": "the line of the file where the row starts"})
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "description": "CSV with a header row (first_name, last_name, email, phone, company_id, lifecycle_stage, "
        "tags separated by ';' or '|', owner, attributes.<key>) or JSON lines (one object per line, "
        "the fields of POST /v1/contacts), or an .xlsx workbook (its first sheet, laid out like the "
        "CSV; known by its Content-Type or its zip signature). CSV is UTF-8 (a byte-order mark is "
        "allowed) or Windows-1256: `charset=` in the Content-Type, or detected (not valid UTF-8 "
        "after plain ASCII); JSON lines are UTF-8.",
        "content": {
            mime: {"schema": {"type": "string", "format": "binary", "minLength": 1}} for mime in imports.FORMATS
        },
    },
    "parameters": [
        {
            "in": "header",
            "name": "Idempotency-Key",
            "required": False,
            "schema": IDEMPOTENCY_KEY_SCHEMA,
            "description": "A repeat with the same key and body returns the first response and queues nothing.",
        }
    ],
    "responses": {
        "400": {
            "description": "Bad request: no file was sent",
            "content": {"application/problem+json": {"schema": "Problem"}},
        },
        "413": {"description": "Payload too large", "content": {"application/problem+json": {"schema": "Problem"}}},
        "415": {
            "description": "Unsupported media type",
            "content": {"application/problem+json": {"schema": "Problem"}},
        },
    },
}


def blueprint(runtime: Runtime) -> Blueprint:
    bp = Blueprint("imports", __name__)
    jobs = imports.ImportJobs(runtime)

    @bp.post("/v1/imports")
    @endpoint(
        "write",
        query=ImportQuery,
        response=ImportView,
        status=202,
        max_body=settings.current().import_max_bytes,
        openapi=UPLOAD_DOC,
    )
    def create_import(query: dict[str, Any]) -> Response:
        """Upload a CSV or JSON-lines file of contacts to import in the background."""
        fmt = imports.media_format(request.mimetype, request.mimetype_params)
        key = idempotency_key()
        keys: IdempotencyKeys = current_app.extensions["crm_idempotency"]
        if key is not None and (held := keys.live(key)) is not None:
            return replay(held, fingerprint(imports.fingerprint(request.stream)))
        import_id = new_id()
        charset = imports.import_formats.charset_of(request.mimetype_params)
        upload = jobs.store_upload(import_id, request.stream, fmt, charset)
        claim = None
        if key is not None:
            outcome = keys.claim(key, fingerprint(upload.sha256))
            if not isinstance(outcome, Claim):  # the same key raced us and won
                jobs.discard(import_id)
                return replay(outcome, fingerprint(upload.sha256))
            claim = outcome
        try:
            job = jobs.create(import_id, fmt, query["on_duplicate"], upload, metadata())
        except BaseException:
            jobs.discard(import_id)
            if claim is not None:
                keys.release(claim)
            raise
        response = jsonify(jsonable(imports.job_view(job)))
        response.status_code = 202
        response.headers["Location"] = f"/v1/imports/{import_id}"
        if claim is not None:
            keys.finish(claim, response)
        return response

    @bp.get("/v1/imports")
    @endpoint("read", query=ImportListQuery, response=ImportView, many=True)
    def list_imports(query: dict[str, Any]) -> Response:
        """Imports, oldest first (filter by `status`)."""
        docs, cursor = jobs.list(query["limit"], query.get("cursor"), query.get("status"))
        return listing([imports.job_view(doc) for doc in docs], cursor)

    @bp.get("/v1/imports/<import_id>")
    @endpoint("read", response=ImportView)
    def get_import(import_id: str) -> Response:
        """An import's status and progress."""
        return jsonify(jsonable(imports.job_view(jobs.get(import_id))))

    @bp.get("/v1/imports/<import_id>/rejections")
    @endpoint("read", query=PageQuery, response=RejectionView, many=True)
    def import_rejections(import_id: str, query: dict[str, Any]) -> Response:
        """The rows an import rejected, in file order, with every failing field."""
        return listing(*jobs.rejected_rows(import_id, query["limit"], query.get("cursor")))

    return bp
