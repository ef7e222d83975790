"""Response shapes every service shares (for the OpenAPI document): what the chassis itself builds."""

from __future__ import annotations

from marshmallow import Schema, fields


class FieldChange(Schema):
    before = fields.Raw(allow_none=True)
    after = fields.Raw(allow_none=True)


class HistoryEntry(Schema):
    """One event of a record's history (`crmkit.aggregate.changes_by_event`)."""

    version = fields.Integer()
    event_id = fields.String()
    type = fields.String()
    time = fields.DateTime()
    actor = fields.String()
    correlation_id = fields.String()
    changes = fields.Dict(
        keys=fields.String(), values=fields.Nested(FieldChange), metadata={"description": "field → {before, after}"}
    )
