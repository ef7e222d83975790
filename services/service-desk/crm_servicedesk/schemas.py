"""What the service desk's REST API accepts and returns (marshmallow; also drives OpenAPI)."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import available_timezones

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from crm_servicedesk import holiday_sources
from crm_servicedesk.domain import (
    CHANNELS,
    ESCALATIONS,
    MAX_HOLIDAYS,
    PRIORITIES,
    STATUSES,
    TARGETS,
    TYPES,
    WEEKDAYS,
)
from crmkit.auth import TEAM_MAX
from crmkit.web import PageQuery
from crmkit.web.periods import check_period

ZONES = frozenset(available_timezones())
ZONE_NAME = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"  # what every name in ZONES looks like
MAX_TARGET_MINUTES = 60 * 24 * 365


# What Text trims: the blanks of both Python (str.isspace, e.g. U+0085) and ECMAScript (\s, e.g. U+FEFF), named
# one by one, so the document's pattern means the same to every regex engine and to the server (a text of
# only blanks, say a lone U+0085, is refused by both)
_BLANK = r" \t\n\r\x0b\x0c\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
BLANKS = "".join(chr(code) for code in range(0x10000) if re.fullmatch(f"[{_BLANK}]", chr(code)))
# What Text takes, for the OpenAPI document: something besides blanks once trimmed, and no
# control character inside (a multi-line text may hold tabs and line breaks)
ONE_LINE = rf"^[{_BLANK}]*[^\x00-\x1f{_BLANK}](?:[^\x00-\x1f]*[^\x00-\x1f{_BLANK}])?[{_BLANK}]*$"
MULTI_LINE = rf"^[{_BLANK}]*[^\x00-\x1f{_BLANK}](?:[^\x00-\x08\x0b\x0c\x0e-\x1f]*[^\x00-\x1f{_BLANK}])?[{_BLANK}]*$"


class Text(fields.String):
    """Trimmed text with a length cap; control characters other than newlines and tabs refused."""

    def __init__(self, max_length: int = 200, multiline: bool = False, **kwargs: Any) -> None:
        kwargs["metadata"] = {"pattern": MULTI_LINE if multiline else ONE_LINE, **kwargs.get("metadata", {})}
        super().__init__(validate=validate.Length(min=1, max=max_length), **kwargs)
        self.multiline = multiline

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        raw = super()._deserialize(value, attr, data, **kwargs)
        self.validators[0](raw)  # the cap counts what was sent, as the document's maxLength does
        text = raw.strip(BLANKS)
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
    team = Text(
        max_length=TEAM_MAX,
        load_default=None,
        allow_none=True,
        metadata={
            "description": (
                "the owning team (not the agent group working it); a caller with a team-scoped role "
                "(servicedesk:write:team) gets its own team, and naming another is a 403"
            )
        },
    )


class CommentInput(Schema):
    # the ticket's rule (`Ticket.comment`): a customer's comment is always public
    OPENAPI = {
        "not": {
            "required": ["author_type", "public"],
            "properties": {"author_type": {"enum": ["customer"]}, "public": {"enum": [False]}},
        }
    }

    body = Text(max_length=20_000, multiline=True, required=True)
    public = fields.Boolean(load_default=True)
    author_type = fields.String(load_default="agent", validate=validate.OneOf(("agent", "customer")))
    author = Text(max_length=100, load_default=None, allow_none=True)


class AssignInput(Schema):
    OPENAPI = {
        "anyOf": [{"required": [name], "properties": {name: {"type": "string"}}} for name in ("assignee", "group")]
    }  # one_of, below

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
    first_response = fields.Integer(
        load_default=None, allow_none=True, strict=True, validate=validate.Range(1, MAX_TARGET_MINUTES)
    )
    next_response = fields.Integer(
        load_default=None, allow_none=True, strict=True, validate=validate.Range(1, MAX_TARGET_MINUTES)
    )
    resolution = fields.Integer(
        load_default=None, allow_none=True, strict=True, validate=validate.Range(1, MAX_TARGET_MINUTES)
    )


def _some_target() -> dict[str, Any]:
    """`PolicyInput.some_target` in JSON Schema: some priority sets some target (not null)."""
    one = {"anyOf": [{"required": [target], "properties": {target: {"type": "integer"}}} for target in TARGETS]}
    return {"anyOf": [{"required": [priority], "properties": {priority: one}} for priority in PRIORITIES]}


class TargetsByPriority(Schema):
    OPENAPI = _some_target()

    low = fields.Nested(TargetsInput, load_default=dict)
    normal = fields.Nested(TargetsInput, load_default=dict)
    high = fields.Nested(TargetsInput, load_default=dict)
    urgent = fields.Nested(TargetsInput, load_default=dict)


HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class BusinessHoursInput(Schema):
    # known_zone, below: the document gives a zone name's shape, not the ~600 names (as an enum they made the
    # fuzz run four times longer: a case for each); the fuzz hooks send known zones (docs/testing.md)
    time_zone = fields.String(
        required=True,
        metadata={"description": "an IANA time zone, e.g. Asia/Tehran", "pattern": ZONE_NAME, "maxLength": 64},
    )
    working_days = fields.List(
        fields.String(validate=validate.OneOf(WEEKDAYS)), required=True, validate=validate.Length(min=1, max=7)
    )
    start = fields.String(required=True, validate=validate.Regexp(HHMM, error="HH:MM, 00:00 to 23:59"))
    end = fields.String(
        required=True,
        validate=validate.Regexp(r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$", error="HH:MM, 00:01 to 24:00"),
    )

    @validates("time_zone")
    def known_zone(self, value: str, **_: Any) -> None:
        if value not in ZONES:
            raise ValidationError("not an IANA time zone (e.g. Asia/Tehran)")

    @validates_schema
    def ends_after_start(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("start") and data.get("end") and data["end"] <= data["start"]:
            raise ValidationError("must be after start", "end")


class EscalationInput(Schema):
    # reassign_needs_target, below: not a reassignment, or one naming an assignee or a group
    OPENAPI = {
        "anyOf": [
            {"not": {"required": ["action"], "properties": {"action": {"enum": ["reassign"]}}}},
            *({"required": [name], "properties": {name: {"type": "string"}}} for name in ("assignee", "group")),
        ]
    }

    action = fields.String(load_default="none", validate=validate.OneOf(ESCALATIONS))
    assignee = Text(max_length=100, load_default=None, allow_none=True)
    group = Text(max_length=100, load_default=None, allow_none=True)

    @validates_schema
    def reassign_needs_target(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("action") == "reassign" and not (data.get("assignee") or data.get("group")):
            raise ValidationError("reassign needs an assignee or a group", "assignee")


class HolidaysFromInput(Schema):
    """A country's public holidays (the `holidays` package), expanded into dates when the policy is stored."""

    country = fields.String(
        required=True,
        validate=validate.Regexp(r"^[A-Z]{2}$", error="ISO 3166-1 alpha-2, e.g. IR"),
        metadata={"description": "e.g. IR (Iran), DE, AE", "enum": sorted(holiday_sources.countries())},
    )
    years = fields.List(
        fields.Integer(strict=True, validate=validate.Range(holiday_sources.MIN_YEAR, holiday_sources.MAX_YEAR)),
        required=True,
        validate=validate.Length(min=1, max=holiday_sources.MAX_YEARS),
        metadata={"description": f"e.g. [2026, 2027]; {holiday_sources.MIN_YEAR} to {holiday_sources.MAX_YEAR}"},
    )

    @validates_schema(skip_on_field_errors=False)
    def supported(self, data: dict[str, Any], **_: Any) -> None:
        found = holiday_sources.problems(data.get("country") or "", data.get("years") or [], None)
        if "country" not in data:
            found.pop("country", None)
        if found:
            raise ValidationError(found)


def country_holidays(request: dict[str, Any] | None) -> list[str]:
    """The dates a loaded `holidays_from` expands to (none without one)."""
    if not request:
        return []
    return holiday_sources.expand(request["country"], request["years"])


class PolicyInput(Schema):
    name = Text(max_length=200, required=True)
    description = Text(max_length=2000, multiline=True, load_default=None, allow_none=True)
    targets = fields.Nested(TargetsByPriority, required=True)
    business_hours = fields.Nested(BusinessHoursInput, load_default=None, allow_none=True)
    holidays = fields.List(fields.Date(), load_default=list, validate=validate.Length(max=MAX_HOLIDAYS))
    holidays_from = fields.Nested(
        HolidaysFromInput,
        load_default=None,
        allow_none=True,
        metadata={
            "description": "start from a country's public holidays: expanded into dates (added to `holidays`) when "
            "stored, so a later update of the holidays package never changes them"
        },
    )
    customer_tiers = fields.List(Text(max_length=50), load_default=list, validate=validate.Length(max=20))
    escalation = fields.Nested(
        EscalationInput, load_default=lambda: {"action": "none", "assignee": None, "group": None}
    )
    enabled = fields.Boolean(load_default=True)

    @validates_schema
    def holidays_fit(self, data: dict[str, Any], **_: Any) -> None:
        days = {day.isoformat() for day in data.get("holidays") or ()}
        days |= set(country_holidays(data.get("holidays_from")))
        if len(days) > MAX_HOLIDAYS:
            raise ValidationError(f"more than {MAX_HOLIDAYS} holidays with the country's", "holidays_from")

    @validates_schema
    def some_target(self, data: dict[str, Any], **_: Any) -> None:
        targets = data.get("targets") or {}
        if not any(value is not None for per in targets.values() for value in per.values()):
            raise ValidationError(f"set at least one target ({', '.join(TARGETS)}) for one priority", "targets")


def policy_fields(body: dict[str, Any]) -> dict[str, Any]:
    """A loaded policy as it is stored in events: dates as ISO strings, targets complete."""
    targets = {p: {t: (body["targets"].get(p) or {}).get(t) for t in TARGETS} for p in PRIORITIES}
    holidays = {day.isoformat() for day in body["holidays"]} | set(country_holidays(body.get("holidays_from")))
    rest = {name: value for name, value in body.items() if name != "holidays_from"}
    return {**rest, "targets": targets, "holidays": sorted(holidays)}


class TicketListQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(STATUSES))
    assignee = Text(max_length=100)
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    contact_id = Ref()
    group = Text(max_length=100)
    team = Text(
        max_length=TEAM_MAX,
        metadata={
            "description": (
                "only this team's tickets; a team-scoped caller sees only its own team's, "
                "so another gives an empty page"
            )
        },
    )
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


class SlaTargetView(Schema):
    target = fields.String(metadata={"enum": list(TARGETS)})
    key = fields.String(metadata={"description": "the target's cycle (next_response counts each reply awaited)"})
    minutes = fields.Integer(allow_none=True, metadata={"description": "business minutes promised"})
    due_at = fields.DateTime(allow_none=True)
    completed_at = fields.DateTime(allow_none=True)
    status = fields.String(metadata={"enum": ["active", "paused", "met", "breached"]})
    breached = fields.Boolean()
    elapsed_minutes = fields.Float()
    remaining_minutes = fields.Float()


class CommentView(Schema):
    id = fields.String()
    author_type = fields.String(metadata={"enum": ["agent", "customer"]})
    author = fields.String(allow_none=True)
    public = fields.Boolean()
    body = fields.String(allow_none=True, metadata={"description": "null once the customer is erased"})
    at = fields.DateTime()


class BreachView(Schema):
    key = fields.String()
    target = fields.String(metadata={"enum": list(TARGETS)})
    priority = fields.String(allow_none=True, metadata={"enum": list(PRIORITIES)})
    due_at = fields.DateTime(allow_none=True)
    breached_at = fields.DateTime(
        allow_none=True, metadata={"description": "when the promise broke: the due time, however late it was found"}
    )
    detected_at = fields.DateTime(
        allow_none=True,
        metadata={"description": "when the breach was recorded (a sweep, the command that met it late, a recompute)"},
    )


class EscalationView(Schema):
    target = fields.String(metadata={"enum": list(TARGETS)})
    action = fields.String(metadata={"enum": list(ESCALATIONS)})
    from_priority = fields.String(allow_none=True)
    to_priority = fields.String(allow_none=True)
    at = fields.DateTime()


class ServqualView(Schema):
    tangibles = fields.Integer(allow_none=True)
    reliability = fields.Integer(allow_none=True)
    responsiveness = fields.Integer(allow_none=True)
    assurance = fields.Integer(allow_none=True)
    empathy = fields.Integer(allow_none=True)


class SatisfactionView(Schema):
    csat = fields.Integer()
    comment = fields.String(allow_none=True)
    nps = fields.Integer(allow_none=True)
    servqual = fields.Nested(ServqualView, allow_none=True)
    at = fields.DateTime()


class TicketContactView(Schema):
    """The ticket's contact from the local projections (no remote call)."""

    id = fields.String()
    name = fields.String(allow_none=True)
    status = fields.String(allow_none=True)
    tier = fields.String(allow_none=True)


class PolicyRefView(Schema):
    id = fields.String()
    name = fields.String(allow_none=True)
    version = fields.Integer(allow_none=True, metadata={"description": "the policy version in force now"})
    versions = fields.List(
        fields.Integer(), metadata={"description": "the policy versions the ticket's clocks follow, in order of effect"}
    )


class TicketView(Schema):
    id = fields.String()
    version = fields.Integer()
    subject = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    contact_id = fields.String()
    company_id = fields.String(allow_none=True)
    deal_id = fields.String(allow_none=True)
    channel = fields.String(metadata={"enum": list(CHANNELS)})
    type = fields.String(metadata={"enum": list(TYPES)})
    priority = fields.String(metadata={"enum": list(PRIORITIES)})
    status = fields.String(metadata={"enum": list(STATUSES)})
    tags = fields.List(fields.String())
    assignee = fields.String(allow_none=True)
    group = fields.String(allow_none=True)
    team = fields.String(
        allow_none=True, metadata={"description": "the owning team (team-scoped roles see only their team's tickets)"}
    )
    customer_tier = fields.String(allow_none=True)
    opened_at = fields.DateTime()
    first_response_at = fields.DateTime(allow_none=True)
    solved_at = fields.DateTime(allow_none=True)
    closed_at = fields.DateTime(allow_none=True)
    sla_policy = fields.Nested(PolicyRefView, allow_none=True)
    sla = fields.List(fields.Nested(SlaTargetView))
    breached = fields.Boolean()
    breaches = fields.List(fields.Nested(BreachView))
    escalations = fields.List(fields.Nested(EscalationView))
    comments = fields.List(fields.Nested(CommentView))
    satisfaction = fields.Nested(SatisfactionView, allow_none=True)
    created_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)
    contact = fields.Nested(TicketContactView)


class TargetsView(Schema):
    first_response = fields.Integer(allow_none=True)
    next_response = fields.Integer(allow_none=True)
    resolution = fields.Integer(allow_none=True)


class TargetsByPriorityView(Schema):
    low = fields.Nested(TargetsView)
    normal = fields.Nested(TargetsView)
    high = fields.Nested(TargetsView)
    urgent = fields.Nested(TargetsView)


class BusinessHoursView(Schema):
    time_zone = fields.String()
    working_days = fields.List(fields.String(metadata={"enum": list(WEEKDAYS)}))
    start = fields.String()
    end = fields.String()


class EscalationPolicyView(Schema):
    action = fields.String(metadata={"enum": list(ESCALATIONS)})
    assignee = fields.String(allow_none=True)
    group = fields.String(allow_none=True)


class PolicyVersionView(Schema):
    """One version of a policy (its calendar included), in force from `effective_at` on."""

    version = fields.Integer()
    effective_at = fields.DateTime(allow_none=True, metadata={"description": "null: since always (the first)"})
    changed = fields.List(
        fields.String(), metadata={"description": "the fields that differ from the version recorded before"}
    )
    name = fields.String()
    description = fields.String(allow_none=True)
    targets = fields.Nested(TargetsByPriorityView)
    business_hours = fields.Nested(BusinessHoursView, allow_none=True)
    holidays = fields.List(fields.Date())
    customer_tiers = fields.List(fields.String())
    escalation = fields.Nested(EscalationPolicyView)
    enabled = fields.Boolean()


class PolicyView(Schema):
    id = fields.String()
    version = fields.Integer()
    name = fields.String()
    description = fields.String(allow_none=True)
    targets = fields.Nested(TargetsByPriorityView)
    business_hours = fields.Nested(BusinessHoursView, allow_none=True)
    holidays = fields.List(fields.Date())
    customer_tiers = fields.List(fields.String())
    escalation = fields.Nested(EscalationPolicyView)
    enabled = fields.Boolean()
    versions = fields.List(
        fields.Nested(PolicyVersionView),
        metadata={"description": "what applies when: each version in force from its effective_at until the next one's"},
    )
    created_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)


class ReportPeriodFields(Schema):
    from_ = fields.DateTime(data_key="from", allow_none=True)
    to = fields.DateTime(allow_none=True)
    team = fields.String(allow_none=True)
    customer_tier = fields.String(allow_none=True)


class ComplianceView(Schema):
    met = fields.Integer()
    breached = fields.Integer()
    compliance_percent = fields.Float(allow_none=True)


class MinutesStats(Schema):
    count = fields.Integer()
    average_minutes = fields.Float(allow_none=True)
    p90_minutes = fields.Float(allow_none=True)


class ReportedBreach(BreachView):
    ticket_id = fields.String()


class BreachesReport(Schema):
    """Breaches by their breach time (the due time), in [from, to), whenever their tickets were opened."""

    count = fields.Integer()
    by_target = fields.Dict(keys=fields.String(metadata={"enum": list(TARGETS)}), values=fields.Integer())
    by_day = fields.Dict(
        keys=fields.String(metadata={"format": "date"}),
        values=fields.Integer(),
        metadata={"description": "UTC date → breaches that day"},
    )
    items = fields.List(fields.Nested(ReportedBreach), metadata={"description": "the first 100, in order of time"})


class SlaReport(ReportPeriodFields):
    tickets = fields.Integer()
    compliance = fields.Dict(
        keys=fields.String(metadata={"enum": list(TARGETS)}),
        values=fields.Dict(
            keys=fields.String(metadata={"enum": [*PRIORITIES, "all"]}), values=fields.Nested(ComplianceView)
        ),
        metadata={"description": "target → priority (or all) → met, breached, compliance_percent"},
    )
    first_response = fields.Nested(MinutesStats)
    resolution = fields.Nested(MinutesStats)
    breaches = fields.Nested(BreachesReport)
    unit = fields.String(metadata={"enum": ["business minutes"]})


class CsatStats(Schema):
    responses = fields.Integer()
    average = fields.Float(allow_none=True)
    distribution = fields.Dict(
        keys=fields.String(metadata={"enum": ["1", "2", "3", "4", "5"]}), values=fields.Integer()
    )
    satisfied_percent = fields.Float(allow_none=True)


class NpsStats(Schema):
    responses = fields.Integer()
    promoters = fields.Integer()
    passives = fields.Integer()
    detractors = fields.Integer()
    score = fields.Float(allow_none=True)


class ServqualMean(Schema):
    count = fields.Integer()
    mean = fields.Float(allow_none=True)


class SatisfactionReport(ReportPeriodFields):
    csat = fields.Nested(CsatStats)
    nps = fields.Nested(NpsStats)
    servqual = fields.Dict(keys=fields.String(), values=fields.Nested(ServqualMean))
    complaints = fields.Integer()
    customers = fields.Integer()
    complaint_rate_per_100_customers = fields.Float(allow_none=True)


class SurveyAnswerView(Schema):
    ticket_id = fields.String()
    satisfaction = fields.Nested(SatisfactionView)


HTML = {"text/html": {"schema": {"type": "string"}}}
PROBLEM = {"application/problem+json": {"schema": "Problem"}}


def _pages(*statuses: int, problems: bool = False) -> dict[str, Any]:
    """The survey's error pages; with `problems`, a JSON request gets a problem instead."""
    titles = {404: "Link not valid", 409: "Already rated", 410: "Link expired", 422: "Please check your answers"}
    return {
        str(status): {"description": titles[status], "content": {**HTML, **(PROBLEM if problems else {})}}
        for status in statuses
    }


SURVEY_FORM = {"responses": {"200": {"description": "The survey form", "content": HTML}, **_pages(404, 409, 410)}}

SURVEY_ANSWER = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "csat": {"type": "string", "pattern": "^[1-5]$"},
                        "nps": {"type": "string", "pattern": "^([0-9]|10)?$"},
                        "comment": {"type": "string", "maxLength": 5000},
                    },
                    "required": ["csat"],
                }
            },
            "application/json": {"schema": SatisfactionInput},
        },
    },
    "responses": {
        "201": {
            "description": "Recorded: a thank-you page, or (JSON) the rating",
            "content": {**HTML, "application/json": {"schema": SurveyAnswerView}},
        },
        **_pages(404, 409, 410, 422, problems=True),
    },
}
