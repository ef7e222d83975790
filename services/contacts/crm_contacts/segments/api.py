"""REST edge for segments: /v1/segments and /v1/segments/{id}/members (and their schemas)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response
from marshmallow import Schema, ValidationError, fields, validates_schema

from crm_contacts.records import schemas
from crm_contacts.segments.commands import SegmentBook
from crm_contacts.segments.domain import MAX_CONDITIONS, MAX_DEPTH, rule_errors
from crmkit.web import AsOfQuery, HistoryQuery, PageQuery, endpoint, if_match, listing, metadata, resource
from crmkit.web.pagination import by_version

RULES_HELP = (
    'A group {"all": [...]} or {"any": [...]} of conditions {"field", "op", "value"} and nested groups '
    f"(at most {MAX_DEPTH} deep, {MAX_CONDITIONS} conditions). See docs/contacts.md, Segments."
)

# What OpenAPI 3.0 can say of the rules: a group holds exactly one of "all" or "any", a non-empty list of
# objects (conditions and nested groups). Which fields, operators and values go together, the depth and
# the cap across the nesting are the description's (and each bad part is a 422 naming its path).
GROUP = {"type": "array", "minItems": 1, "items": {"type": "object"}}
RULES_DOC = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": False,
    "properties": {"all": GROUP, "any": GROUP},
    "description": RULES_HELP,
}


class SegmentInput(Schema):
    """A segment's fields; a PATCH sends any subset."""

    name = schemas.Text(200, allow_none=False)
    description = schemas.Text(2000)
    rules = fields.Raw(metadata=RULES_DOC)

    @validates_schema(skip_on_field_errors=False)
    def _check_rules(self, data: dict[str, Any], **_: Any) -> None:
        # every bad condition, by its path ("rules.all.2.op"), beside any other bad field
        if "rules" in data:
            errors = rule_errors(data["rules"])
            if errors:
                raise ValidationError(errors)


class SegmentCreate(SegmentInput):
    name = schemas.Text(200, required=True, allow_none=False)
    rules = fields.Raw(required=True, metadata=RULES_DOC)


class SegmentView(Schema):
    id = fields.String()
    version = fields.Integer()
    name = fields.String()
    description = fields.String(allow_none=True)
    rules = fields.Raw(metadata=RULES_DOC)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


def blueprint(book: SegmentBook) -> Blueprint:
    bp = Blueprint("segments", __name__)

    @bp.post("/v1/segments")
    @endpoint("write", body=SegmentCreate, response=SegmentView, status=201, idempotent=True)
    def create_segment(body: dict[str, Any]) -> Response:
        """Define a segment: a name and the rules that select its contacts."""
        segment = book.define(body, metadata())
        return resource(segment.view(), 201, location=f"/v1/segments/{segment.id}")

    @bp.get("/v1/segments")
    @endpoint("read", query=PageQuery, response=SegmentView, many=True)
    def list_segments(query: dict[str, Any]) -> Response:
        """List segments, oldest first."""
        return listing(*book.list_segments(query))

    @bp.get("/v1/segments/<segment_id>")
    @endpoint("read", query=AsOfQuery, response=SegmentView)
    def get_segment(segment_id: str, query: dict[str, Any]) -> Response:
        """One segment, now or as it was at `as_of` (its name and rules then)."""
        return resource(book.segment(segment_id, as_of=query.get("as_of")).view())

    @bp.patch("/v1/segments/<segment_id>")
    @endpoint("write", body=SegmentInput, response=SegmentView)
    def update_segment(segment_id: str, body: dict[str, Any]) -> Response:
        """Rename a segment or change its rules (If-Match: the version last seen)."""
        return resource(book.update(segment_id, body, metadata(), if_match()).view())

    @bp.get("/v1/segments/<segment_id>/history")
    @endpoint("read", query=HistoryQuery, response=schemas.HistoryEntry, many=True)
    def segment_history(segment_id: str, query: dict[str, Any]) -> Response:
        """Every change to a segment: who, what, when, before and after (paged by version)."""
        return listing(*by_version(book.history(segment_id), query["limit"], query.get("cursor")))

    @bp.get("/v1/segments/<segment_id>/members")
    @endpoint("read", query=PageQuery, response=schemas.ContactView, many=True)
    def segment_members(segment_id: str, query: dict[str, Any]) -> Response:
        """The active contacts the segment's rules select now (evaluated at read time)."""
        return listing(*book.members(segment_id, query["limit"], query.get("cursor")))

    return bp
