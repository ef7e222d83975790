"""What SERVQUAL's REST API accepts and returns (marshmallow; also drives the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from crm_servicedesk.schemas import HTML, PROBLEM, Ref, ReportPeriodFields, ReportQuery, Text
from crm_servicedesk.servqual import DIMENSIONS, ITEMS_OF, LIKERT, STANDARD_ITEMS, TRIGGERS, instrument_problems
from crmkit.web import PageQuery

PERIODS = ("day", "week", "month", "quarter", "year")
ITEM_IDS = [item.id for item in STANDARD_ITEMS]
MAX_EVERY_NTH = 100_000


def _items_of(dimension: str) -> fields.List:
    ids = ITEMS_OF[dimension]
    return fields.List(
        fields.String(validate=validate.OneOf(ids)),
        validate=validate.Length(max=len(ids)),
        metadata={"uniqueItems": True, "description": f"{dimension} items to ask ({', '.join(ids)})"},
    )


class ServqualItemsInput(Schema):
    """Which standard items to ask, per dimension (a dimension left out or empty is not asked)."""

    OPENAPI = {"anyOf": [{"required": [d], "properties": {d: {"minItems": 1}}} for d in DIMENSIONS]}

    tangibles = _items_of("tangibles")
    reliability = _items_of("reliability")
    responsiveness = _items_of("responsiveness")
    assurance = _items_of("assurance")
    empathy = _items_of("empathy")


def _weight() -> fields.Float:
    return fields.Float(validate=validate.Range(0, 100))


class ServqualWeightsInput(Schema):
    """Each dimension's weight in the overall gap (one left out weighs 0)."""

    tangibles = _weight()
    reliability = _weight()
    responsiveness = _weight()
    assurance = _weight()
    empathy = _weight()


class ServqualInstrumentInput(Schema):
    items = fields.Nested(
        ServqualItemsInput,
        load_default=None,
        metadata={"description": "the items per dimension; left out: all 22 standard items"},
    )
    weights = fields.Nested(
        ServqualWeightsInput,
        load_default=None,
        metadata={
            "description": "the dimensions' weights, summing to 1 or to 100 (stored as fractions of 1); a weighted "
            "dimension needs items; left out: equal weights over the dimensions asked"
        },
    )

    @validates_schema(skip_on_field_errors=False)  # every bad field in one answer
    def usable(self, data: dict[str, Any], **_: Any) -> None:
        items = data.get("items")
        chosen = {d: (items or {}).get(d) or [] for d in DIMENSIONS} if items is not None else dict(ITEMS_OF)
        problems = instrument_problems(chosen, data.get("weights"))
        if problems:
            raise ValidationError(problems)


class ServqualPolicyInput(Schema):
    enabled = fields.Boolean(required=True, metadata={"description": "off: the desk sends no survey by itself"})
    every_nth_solved_per_contact = fields.Integer(
        load_default=None,
        allow_none=True,
        strict=True,
        validate=validate.Range(1, MAX_EVERY_NTH),
        metadata={"description": "a contact's every Nth solved ticket sends them a survey; null: off"},
    )
    every_nth_solved_overall = fields.Integer(
        load_default=None,
        allow_none=True,
        strict=True,
        validate=validate.Range(1, MAX_EVERY_NTH),
        metadata={"description": "every Nth ticket solved at the desk sends its contact a survey; null: off"},
    )
    quarterly_tiers = fields.List(
        Text(max_length=50),
        load_default=list,
        validate=validate.Length(max=10),
        metadata={
            "description": "once a calendar quarter (UTC) to every contact of these "
            'customer tiers, e.g. ["strategic"]; empty: off'
        },
    )


class ServqualSendInput(Schema):
    contact_id = Ref(required=True)
    ticket_id = Ref(
        load_default=None,
        allow_none=True,
        metadata={"description": "the contact's ticket the survey follows (its agent group is the survey's)"},
    )


class ServqualSurveyListQuery(PageQuery):
    contact_id = Ref()
    status = fields.String(validate=validate.OneOf(("sent", "answered")))
    rule = fields.String(validate=validate.OneOf(TRIGGERS))


class ServqualReportQuery(ReportQuery):
    period = fields.String(
        load_default="month",
        validate=validate.OneOf(PERIODS),
        metadata={"description": "the buckets of `over_time` (UTC; weeks are ISO weeks, from Monday)"},
    )


# --- views ---------------------------------------------------------------------------------------


ItemsView = Schema.from_dict(
    {d: fields.List(fields.String(metadata={"enum": list(ITEMS_OF[d])})) for d in DIMENSIONS}, name="ServqualItemsView"
)
WeightsView = Schema.from_dict({d: fields.Float() for d in DIMENSIONS}, name="ServqualWeightsView")
DimensionFigures = Schema.from_dict(
    {d: fields.Float(allow_none=True) for d in DIMENSIONS}, name="ServqualDimensionFigures"
)
LIKERT_SCORE = {"minimum": LIKERT[0], "maximum": LIKERT[1]}


class ServqualInstrumentView(Schema):
    id = fields.String()
    version = fields.Integer(metadata={"description": "0: never configured (the standard instrument)"})
    items = fields.Nested(ItemsView)
    weights = fields.Nested(WeightsView, metadata={"description": "fractions of 1"})
    item_count = fields.Integer()
    standard = fields.Boolean(metadata={"description": "all 22 standard items are asked"})
    created_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)


class ServqualPolicyView(Schema):
    id = fields.String()
    version = fields.Integer(metadata={"description": "0: never configured (off)"})
    enabled = fields.Boolean()
    every_nth_solved_per_contact = fields.Integer(allow_none=True)
    every_nth_solved_overall = fields.Integer(allow_none=True)
    quarterly_tiers = fields.List(fields.String())
    counting_since = fields.DateTime(
        allow_none=True,
        metadata={"description": "solved tickets are counted from then on (when a counting rule last changed)"},
    )
    created_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)


class ServqualTriggerView(Schema):
    rule = fields.String(metadata={"enum": list(TRIGGERS)})
    scope = fields.String(metadata={"enum": ["contact", "overall"]})
    n = fields.Integer()
    period = fields.String(metadata={"description": "the calendar quarter, e.g. 2026-Q4"})
    tier = fields.String(allow_none=True)


class ServqualSurveyView(Schema):
    id = fields.String()
    version = fields.Integer()
    status = fields.String(metadata={"enum": ["sent", "answered"]})
    contact_id = fields.String()
    trigger = fields.Nested(ServqualTriggerView)
    ticket_id = fields.String(allow_none=True)
    group = fields.String(allow_none=True, metadata={"description": "the agent group that served the contact"})
    customer_tier = fields.String(allow_none=True, metadata={"description": "the contact's tier when it was sent"})
    instrument_version = fields.Integer()
    items = fields.Nested(ItemsView)
    weights = fields.Nested(WeightsView)
    sent_at = fields.DateTime()
    answered_at = fields.DateTime(allow_none=True)
    expectations = fields.Dict(
        keys=fields.String(metadata={"enum": ITEM_IDS}), values=fields.Integer(metadata=LIKERT_SCORE)
    )
    perceptions = fields.Dict(
        keys=fields.String(metadata={"enum": ITEM_IDS}), values=fields.Integer(metadata=LIKERT_SCORE)
    )
    item_gaps = fields.Dict(
        keys=fields.String(metadata={"enum": ITEM_IDS}),
        allow_none=True,
        values=fields.Integer(metadata={"minimum": -6, "maximum": 6}),
        metadata={"description": "perception − expectation per item"},
    )
    dimension_gaps = fields.Nested(
        DimensionFigures,
        allow_none=True,
        metadata={"description": "the mean of each dimension's item gaps (null: not asked)"},
    )
    overall_gap = fields.Float(allow_none=True, metadata={"description": "Σ weight × dimension gap"})
    dimension_expectations = fields.Nested(DimensionFigures, allow_none=True)
    dimension_perceptions = fields.Nested(DimensionFigures, allow_none=True)
    created_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)


class ServqualDimensionStats(Schema):
    responses = fields.Integer()
    expectation = fields.Float(allow_none=True)
    perception = fields.Float(allow_none=True)
    gap = fields.Float(allow_none=True)


class ServqualItemStats(ServqualDimensionStats):
    id = fields.String(metadata={"enum": ITEM_IDS})
    dimension = fields.String(metadata={"enum": list(DIMENSIONS)})


class ServqualBreakdown(Schema):
    responses = fields.Integer()
    weighted_gap = fields.Float(allow_none=True)
    dimensions = fields.Nested(DimensionFigures, metadata={"description": "each dimension's mean gap"})


class ServqualOverallStats(ServqualBreakdown):
    unweighted_gap = fields.Float(
        allow_none=True,
        metadata={
            "description": "the mean over responses of their dimensions' mean gap (every dimension asked counts alike)"
        },
    )


class ServqualPeriodBreakdown(ServqualBreakdown):
    period = fields.String(metadata={"description": "2026-11-26, 2026-W48, 2026-11, 2026-Q4 or 2026"})
    start = fields.DateTime()
    end = fields.DateTime()


class ServqualTierBreakdown(ServqualBreakdown):
    customer_tier = fields.String(allow_none=True)


class ServqualGroupBreakdown(ServqualBreakdown):
    group = fields.String(allow_none=True)


DimensionStatsView = Schema.from_dict(
    {d: fields.Nested(ServqualDimensionStats) for d in DIMENSIONS}, name="ServqualDimensionTable"
)  # a name of its own: one component each


class ServqualReport(ReportPeriodFields):
    period = fields.String(metadata={"enum": list(PERIODS)})
    surveys_sent = fields.Integer(metadata={"description": "surveys sent in [from, to)"})
    responses = fields.Integer(metadata={"description": "surveys answered in [from, to)"})
    response_rate_percent = fields.Float(
        allow_none=True, metadata={"description": "of the surveys sent in [from, to), the share answered by now"}
    )
    overall = fields.Nested(ServqualOverallStats)
    dimensions = fields.Nested(DimensionStatsView)
    items = fields.List(fields.Nested(ServqualItemStats))
    over_time = fields.List(fields.Nested(ServqualPeriodBreakdown))
    by_customer_tier = fields.List(fields.Nested(ServqualTierBreakdown))
    by_agent_group = fields.List(fields.Nested(ServqualGroupBreakdown))


class ServqualAnswerInput(Schema):
    """The answers as JSON: every statement of the survey, expectation and perception, 1 to 7."""

    expectations = fields.Dict(
        keys=fields.String(validate=validate.OneOf(ITEM_IDS)),
        values=fields.Integer(strict=True, validate=validate.Range(*LIKERT)),
        required=True,
    )
    perceptions = fields.Dict(
        keys=fields.String(validate=validate.OneOf(ITEM_IDS)),
        values=fields.Integer(strict=True, validate=validate.Range(*LIKERT)),
        required=True,
    )


class ServqualAnswerView(Schema):
    survey_id = fields.String()
    status = fields.String(metadata={"enum": ["answered"]})
    dimension_gaps = fields.Nested(DimensionFigures)
    overall_gap = fields.Float(allow_none=True)


def _form_schema() -> dict[str, Any]:
    """The survey page's form: `expectations.q1` … `perceptions.q22`, each a digit 1–7."""
    answer = {"type": "string", "pattern": "^[1-7]$"}
    return {
        "type": "object",
        "properties": {f"{side}.{item}": answer for side in ("expectations", "perceptions") for item in ITEM_IDS},
    }


_TITLES = {404: "Link not valid", 409: "Already answered", 410: "Link expired", 422: "Please check your answers"}


def _pages(*statuses: int, problems: bool = False) -> dict[str, Any]:
    return {
        str(status): {"description": _TITLES[status], "content": {**HTML, **(PROBLEM if problems else {})}}
        for status in statuses
    }


PAGE_FORM = {
    "responses": {"200": {"description": "The SERVQUAL questionnaire", "content": HTML}, **_pages(404, 409, 410)}
}

PAGE_ANSWER = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": _form_schema()},
            "application/json": {"schema": ServqualAnswerInput},
        },
    },
    "responses": {
        "201": {
            "description": "Recorded: a thank-you page, or (JSON) the gaps",
            "content": {**HTML, "application/json": {"schema": ServqualAnswerView}},
        },
        **_pages(404, 409, 410, 422, problems=True),
    },
}
