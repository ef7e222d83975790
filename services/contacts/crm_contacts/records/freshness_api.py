"""REST edge of data freshness for staff: `POST /v1/contacts/{id}/verify` (the details were
confirmed with the person) and `GET /v1/insights/stale-records` (stale contacts per owner).

The rule and what counts as a confirmation: crm_contacts.records.freshness. The report is the
use case `ContactUseCases.stale_records`; its reads are `ContactViews.stale_by_owner` and
`stale_page` (crm_contacts.records.views: the `contacts` read model through its `(stale, owner)`
and `(stale, lifecycle_stage)` indexes, one `$group` by owner and one page in id order).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from marshmallow import RAISE, Schema, fields, validate

from crm_contacts.records.commands import MAX_OWNERS, ContactBook, ContactUseCases
from crm_contacts.records.domain import LIFECYCLE_STAGES, Contact
from crm_contacts.records.schemas import ContactView, Text
from crmkit import clock
from crmkit.events import Metadata, rfc3339
from crmkit.web import PageQuery, endpoint, if_match, jsonable, metadata, resource

METHODS = ("phone", "email", "sms", "in_person", "video_call", "letter", "other")


class VerifyInput(Schema):
    """How staff confirmed the details (optional)."""

    class Meta:
        unknown = RAISE

    method = fields.String(
        load_default="other",
        validate=validate.OneOf(METHODS),
        metadata={"description": "how the details were confirmed with the person"},
    )


class StaleRecordsQuery(PageQuery):
    owner = Text(100, allow_none=False, metadata={"description": "only this owner's contacts"})
    lifecycle_stage = fields.String(validate=validate.OneOf(LIFECYCLE_STAGES))


class OwnerCount(Schema):
    owner = fields.String(allow_none=True, metadata={"description": "null: contacts without an owner"})
    count = fields.Integer()


class StaleContact(Schema):
    id = fields.String()
    first_name = fields.String(allow_none=True)
    last_name = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    owner = fields.String(allow_none=True)
    lifecycle_stage = fields.String(metadata={"enum": list(LIFECYCLE_STAGES)})
    created_at = fields.DateTime()
    verified_at = fields.String(allow_none=True, metadata={"description": "null: not since the creation"})
    stale_since = fields.String(allow_none=True)


class StaleRecordsReport(Schema):
    report = fields.String(metadata={"enum": ["stale-records"]})
    as_of = fields.String(
        metadata={
            "description": "when the report was read (the stale flags are set by the contacts worker's periodic pass)"
        }
    )
    owner = fields.String(allow_none=True)
    lifecycle_stage = fields.String(allow_none=True)
    total = fields.Integer(metadata={"description": "stale contacts matching the filters"})
    by_owner = fields.List(
        fields.Nested(OwnerCount),
        metadata={"description": f"stale contacts per owner, most first (at most {MAX_OWNERS} owners)"},
    )
    items = fields.List(fields.Nested(StaleContact))
    next_cursor = fields.String(allow_none=True)


def verify(book: ContactUseCases, contact_id: str, method: str, meta: Metadata, expected: int | None) -> Contact:
    """Staff confirmed the details with the person: verified now, the stale flag cleared."""
    return book.contacts.change(
        contact_id, lambda c: c.verify(clock.now(), meta.actor, "staff", method), meta, expected
    )


def stale_records(book: ContactUseCases, query: dict[str, Any]) -> dict[str, Any]:
    """Stale active contacts: counts per owner and one page of them, filtered by owner and stage."""
    found = book.stale_records(query.get("owner"), query.get("lifecycle_stage"), query["limit"], query.get("cursor"))
    return {
        "report": "stale-records",
        "as_of": rfc3339(clock.now()),
        "owner": query.get("owner"),
        "lifecycle_stage": query.get("lifecycle_stage"),
        **found,
    }


def blueprint(book: ContactBook) -> Blueprint:
    bp = Blueprint("freshness", __name__)

    @bp.post("/v1/contacts/<contact_id>/verify")
    @endpoint("write", body=VerifyInput, body_optional=True, response=ContactView)
    def verify_contact(contact_id: str, body: dict[str, Any]) -> Response:
        """Record that the contact's details were confirmed with them now (optional body: `method`); clears stale."""
        return resource(verify(book, contact_id, body.get("method") or "other", metadata(), if_match()).view())

    @bp.get("/v1/insights/stale-records")
    @endpoint("read", query=StaleRecordsQuery, response=StaleRecordsReport)
    def stale_records_report(query: dict[str, Any]) -> Response:
        """Contacts whose details are stale: counts per owner and a page of them (filters: owner, lifecycle_stage)."""
        return jsonify(jsonable(stale_records(book, query)))  # times from the read model as RFC 3339

    return bp
