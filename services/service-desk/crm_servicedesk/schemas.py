"""What the service desk's REST API accepts and returns (marshmallow; also drives OpenAPI)."""

from __future__ import annotations

from typing import Any
from zoneinfo import available_timezones

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from crm_servicedesk.domain import (
    CHANNELS,
    ESCALATIONS,
    PRIORITIES,
    STATUSES,
    TARGETS,
    TYPES,
    WEEKDAYS,
)
from crmkit.web import PageQuery
from crmkit.web.periods import check_period

ZONES = frozenset(available_timezones())
MAX_TARGET_MINUTES = 60 * 24 * 365


class Text(fields.String):
    """Trimmed text with a length cap; control characters other than newlines and tabs refused."""

    def __init__(self, max_length: int = 200, multiline: bool = False, **kwargs: Any) -> None:
        super().__init__(validate=validate.Length(min=1, max=max_length), **kwargs)
        self.multiline = multiline

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        allowed = "\n\r\t" if self.multiline else ""
        if any(ord(ch) < 32 and ch not in allowed for ch in text):
            raise ValidationError("control characters are not allowed")
        return text


class Ref(fields.String):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate=validate.Regexp(r"^[A-Za-z0-9:._-]{1,128}$", error="not a valid id"), **kwargs)


class TicketInput(Schema):
    subject = Text(max_length=300, required=True)
    description = Text(max_length=20_000, multiline=True, load_default=None, allow_none=True)
    contact_id = Ref(required=True)
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    type = fields.String(required=True, validate=validate.OneOf(TYPES))
    priority = fields.String(load_default="normal", validate=validate.OneOf(PRIORITIES))
    company_id = Ref(load_default=None, allow_none=True)
    deal_id = Ref(load_default=None, allow_none=True)
    tags = fields.List(Text(max_length=50), load_default=list, validate=validate.Length(max=30))
    assignee = Text(max_length=100, load_default=None, allow_none=True)
    group = Text(max_length=100, load_default=None, allow_none=True)


class CommentInput(Schema):
    body = Text(max_length=20_000, multiline=True, required=True)
    public = fields.Boolean(load_default=True)
    author_type = fields.String(load_default="agent", validate=validate.OneOf(("agent", "customer")))
    author = Text(max_length=100, load_default=None, allow_none=True)


class AssignInput(Schema):
    assignee = Text(max_length=100, load_default=None, allow_none=True)
    group = Text(max_length=100, load_default=None, allow_none=True)

    @validates_schema
    def one_of(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("assignee") is None and data.get("group") is None:
            raise ValidationError("give an assignee, a group, or both", "assignee")


class StatusInput(Schema):
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))


class ServqualInput(Schema):
    tangibles = fields.Integer(validate=validate.Range(1, 7))
    reliability = fields.Integer(validate=validate.Range(1, 7))
    responsiveness = fields.Integer(validate=validate.Range(1, 7))
    assurance = fields.Integer(validate=validate.Range(1, 7))
    empathy = fields.Integer(validate=validate.Range(1, 7))


class SatisfactionInput(Schema):
    csat = fields.Integer(required=True, strict=True, validate=validate.Range(1, 5))
    comment = Text(max_length=5000, multiline=True, load_default=None, allow_none=True)
    nps = fields.Integer(load_default=None, allow_none=True, strict=True, validate=validate.Range(0, 10))
    servqual = fields.Nested(ServqualInput, load_default=None, allow_none=True)


class TargetsInput(Schema):
    first_response = fields.Integer(load_default=None, allow_none=True, strict=True,
                                    validate=validate.Range(1, MAX_TARGET_MINUTES))
    next_response = fields.Integer(load_default=None, allow_none=True, strict=True,
                                   validate=validate.Range(1, MAX_TARGET_MINUTES))
    resolution = fields.Integer(load_default=None, allow_none=True, strict=True,
                                validate=validate.Range(1, MAX_TARGET_MINUTES))


class TargetsByPriority(Schema):
    low = fields.Nested(TargetsInput, load_default=dict)
    normal = fields.Nested(TargetsInput, load_default=dict)
    high = fields.Nested(TargetsInput, load_default=dict)
    urgent = fields.Nested(TargetsInput, load_default=dict)


HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class BusinessHoursInput(Schema):
    time_zone = fields.String(required=True)
    working_days = fields.List(fields.String(validate=validate.OneOf(WEEKDAYS)), required=True,
                               validate=validate.Length(min=1, max=7))
    start = fields.String(required=True, validate=validate.Regexp(HHMM, error="HH:MM, 00:00 to 23:59"))
    end = fields.String(required=True, validate=validate.Regexp(r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$",
                                                                error="HH:MM, 00:01 to 24:00"))

    @validates("time_zone")
    def known_zone(self, value: str, **_: Any) -> None:
        if value not in ZONES:
            raise ValidationError("not an IANA time zone (e.g. Asia/Tehran)")

    @validates_schema
    def ends_after_start(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("start") and data.get("end") and data["end"] <= data["start"]:
            raise ValidationError("must be after start", "end")


class EscalationInput(Schema):
    action = fields.String(load_default="none", validate=validate.OneOf(ESCALATIONS))
    assignee = Text(max_length=100, load_default=None, allow_none=True)
    group = Text(max_length=100, load_default=None, allow_none=True)

    @validates_schema
    def reassign_needs_target(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("action") == "reassign" and not (data.get("assignee") or data.get("group")):
            raise ValidationError("reassign needs an assignee or a group", "assignee")


class PolicyInput(Schema):
    name = Text(max_length=200, required=True)
    description = Text(max_length=2000, multiline=True, load_default=None, allow_none=True)
    targets = fields.Nested(TargetsByPriority, required=True)
    business_hours = fields.Nested(BusinessHoursInput, load_default=None, allow_none=True)
    holidays = fields.List(fields.Date(), load_default=list, validate=validate.Length(max=1000))
    customer_tiers = fields.List(Text(max_length=50), load_default=list, validate=validate.Length(max=20))
    escalation = fields.Nested(EscalationInput, load_default=lambda: {"action": "none", "assignee": None,
                                                                      "group": None})
    enabled = fields.Boolean(load_default=True)

    @validates_schema
    def some_target(self, data: dict[str, Any], **_: Any) -> None:
        targets = data.get("targets") or {}
        if not any(value is not None for per in targets.values() for value in per.values()):
            raise ValidationError(f"set at least one target ({', '.join(TARGETS)}) for one priority", "targets")


def policy_fields(body: dict[str, Any]) -> dict[str, Any]:
    """A loaded policy as it is stored in events: dates as ISO strings, targets complete."""
    targets = {p: {t: (body["targets"].get(p) or {}).get(t) for t in TARGETS} for p in PRIORITIES}
    return {**body, "targets": targets, "holidays": sorted({day.isoformat() for day in body["holidays"]})}


class TicketListQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(STATUSES))
    assignee = Text(max_length=100)
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    contact_id = Ref()
    group = Text(max_length=100)
    type = fields.String(validate=validate.OneOf(TYPES))
    channel = fields.String(validate=validate.OneOf(CHANNELS))
    tag = Text(max_length=50)
    customer_tier = Text(max_length=50)
    breached = fields.Boolean(load_default=None)


class AwareDateTime(fields.DateTime):
    """RFC 3339 with a zone offset (a time without one is ambiguous)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        moment = super()._deserialize(value, attr, data, **kwargs)
        if moment.tzinfo is None:
            raise ValidationError("must carry a zone offset (e.g. Z)")
        return moment


class ReportQuery(Schema):
    from_ = AwareDateTime(data_key="from", load_default=None)
    to = AwareDateTime(load_default=None)
    team = Text(max_length=100, load_default=None)
    customer_tier = Text(max_length=50, load_default=None)

    @validates_schema
    def ordered(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("from_") and data.get("to") and data["to"] <= data["from_"]:
            raise ValidationError("must be after from", "to")
        check_period(data.get("from_"), data.get("to"))


class TicketView(Schema):
    id = fields.String()
    version = fields.Integer()
    subject = fields.String(allow_none=True)
    contact_id = fields.String()
    status = fields.String()
    priority = fields.String()
    sla = fields.List(fields.Dict())


class PolicyView(Schema):
    id = fields.String()
    version = fields.Integer()
    name = fields.String()
    targets = fields.Dict()
