"""What the sales REST API accepts and returns (marshmallow; also drives OpenAPI).

Money is a decimal string (a JSON number is refused: floats cannot hold money), checked
against the currency's minor unit at the edge, so the domain sees exact Decimals only.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from crm_sales import money
from crm_sales.domain import ACTIVITY_TYPES, LOST, REASON_CODE, TIERS, WON
from crmkit.auth import TEAM_MAX
from crmkit.web import AsOfQuery, PageQuery
from crmkit.web.periods import check_period

# What a Text takes, stated in the OpenAPI document and checked on what was sent: no control
# character but tabs and line breaks; a text that may not be left empty holds something
# besides spaces, tabs and line breaks (those around it are trimmed).
TEXT = r"^[^\x00-\x08\x0b-\x1f]*$"
FILLED = r"^[\t\n ]*[^\x00-\x20][^\x00-\x08\x0b-\x1f]*$"
BLANKS = " \t\n"


class Text(fields.String):
    """Trimmed text with a length cap (counted on what was sent); control characters other than
    tabs and line breaks refused; a blank text means null where null is allowed."""

    def __init__(self, max_length: int = 200, **kwargs: Any) -> None:
        kwargs.setdefault("allow_none", True)
        pattern = TEXT if kwargs["allow_none"] else FILLED
        kwargs["metadata"] = {"pattern": pattern, **kwargs.get("metadata", {})}
        super().__init__(validate=validate.Length(max=max_length), **kwargs)

    # blank text reads as None, which marshmallow's String (typed to give str) never returns
    def _deserialize(  # type: ignore[override]
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> str | None:
        raw = super()._deserialize(value, attr, data, **kwargs)
        self.validators[0](raw)  # the cap counts what was sent, as the document's maxLength does
        if any(ord(ch) < 32 and ch not in "\n\t" for ch in raw):
            raise ValidationError("control characters are not allowed")
        text = raw.strip(BLANKS)
        if not text and not self.allow_none:
            raise ValidationError("must not be empty")
        return text or None

    def _validate(self, value: Any) -> None:
        if value is not None:
            super()._validate(value)


# Decimals as the document states them (a JSON number is refused: floats cannot hold money);
# each pattern is the whole rule, so what it calls valid is what the service takes
AMOUNT = r"^(0|[1-9][0-9]{0,17})(\.[0-9]{1,18})?$"  # 0 up to below 10^18
PERCENT_TEXT = r"^(100(\.0{1,18})?|(0|[1-9][0-9]?)(\.[0-9]{1,18})?)$"  # 0 to 100
QUANTITY = (
    r"^([1-9][0-9]{0,8}(\.[0-9]{1,4})?|1000000000(\.0{1,4})?"  # 0.0001 to 10^9, at most 4 decimals
    r"|0\.([1-9][0-9]{0,3}|0[1-9][0-9]{0,2}|00[1-9][0-9]?|000[1-9]))$"
)


class DecimalText(fields.Field):
    """A decimal given as a string of the field's `pattern` (AMOUNT, PERCENT_TEXT or QUANTITY)."""

    def __init__(self, pattern: str = AMOUNT, **kwargs: Any) -> None:
        kwargs["metadata"] = {"type": "string", "pattern": pattern, **kwargs.get("metadata", {})}
        super().__init__(**kwargs)
        self.pattern = re.compile(pattern)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if not isinstance(value, str):
            raise ValidationError('must be a decimal string such as "1250.00"')
        if not self.pattern.match(value):
            raise ValidationError(f'must be a decimal string such as "1250.00" matching {self.pattern.pattern}')
        try:
            return money.parse(value)
        except money.MoneyError as exc:
            raise ValidationError(str(exc)) from None

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else f"{value}"


CURRENCIES = sorted(money.MINOR_UNITS)


def _any_case(code: str) -> str:
    return "".join(f"[{letter}{letter.lower()}]" for letter in code)


def currency_pattern(codes: list[str]) -> str:
    """The codes of `codes` in any letter case ("usd" is USD), as a pattern."""
    return "^(" + "|".join(_any_case(code) for code in codes) + ")$"


class Currency(fields.String):
    """An ISO 4217 code the service has a minor unit for (money.MINOR_UNITS), in any letter case."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["metadata"] = {
            "pattern": currency_pattern(CURRENCIES),
            "description": "ISO 4217, any letter case: " + ", ".join(CURRENCIES),
            **kwargs.get("metadata", {}),
        }
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        code = super()._deserialize(value, attr, data, **kwargs).upper()
        if code not in money.MINOR_UNITS:
            raise ValidationError(f"unsupported currency; one of {', '.join(CURRENCIES)}")
        return code


def exact_for_currency(amount_field: str) -> dict[str, Any]:
    """The rule `_check_amount` applies, as JSON Schema: an amount has at most its currency's decimals."""
    places: dict[int, list[str]] = {}
    for code, digits in sorted(money.MINOR_UNITS.items()):
        places.setdefault(digits, []).append(code)
    return {
        "anyOf": [
            {
                "properties": {
                    "currency": {"type": "string", "pattern": currency_pattern(codes)},
                    amount_field: {
                        "type": "string",
                        "pattern": r"^[0-9]+" + (rf"(\.[0-9]{{1,{digits}}})?$" if digits else "$"),
                    },
                }
            }
            for digits, codes in sorted(places.items())
        ]
    }


PERCENT = {"pattern": PERCENT_TEXT}
Id = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9:._-]{1,128}$"))


def _check_amount(data: dict[str, Any], amount_field: str, currency: str | None) -> None:
    if currency and data.get(amount_field) is not None and currency in money.MINOR_UNITS:
        try:
            data[amount_field] = money.exact(data[amount_field], currency)
        except money.MoneyError as exc:
            raise ValidationError({amount_field: [str(exc)]}) from None


class ProductInput(Schema):
    OPENAPI = exact_for_currency("unit_price")  # _check_amount, below

    sku = Text(60, required=True, allow_none=False)
    name = Text(200, required=True, allow_none=False)
    description = Text(2000)
    unit_price = DecimalText(required=True)
    currency = Currency(required=True)
    tax_rate = DecimalText(load_default=Decimal(0), **PERCENT)
    active = fields.Boolean(load_default=True)

    @validates_schema(skip_on_field_errors=False)
    def exact_price(self, data: dict[str, Any], **_: Any) -> None:
        _check_amount(data, "unit_price", data.get("currency"))


class ProductPatch(Schema):
    name = Text(200, allow_none=False)
    description = Text(2000)
    unit_price = DecimalText()
    currency = Currency()
    tax_rate = DecimalText(**PERCENT)
    active = fields.Boolean()


class ProductListQuery(PageQuery):
    active = fields.Boolean(load_default=None)


class StageInput(Schema):
    key = fields.String(validate=validate.Regexp(r"^[a-z0-9_]{1,60}$"))
    name = Text(100, required=True, allow_none=False)
    probability = DecimalText(required=True, **PERCENT)


class ReasonInput(Schema):
    code = fields.String(
        required=True,
        validate=validate.Regexp(REASON_CODE),
        metadata={"description": "what a won or lost deal names (`reason`), and reports group by"},
    )
    label = Text(100, required=True, allow_none=False)


def _reason_list(kind: str) -> fields.List:
    return fields.List(
        fields.Nested(ReasonInput),
        validate=validate.Length(max=30),
        metadata={
            "description": f"the reasons a deal may be {kind} for, in the order offered; codes unique in the list "
            "(default: the default pipeline's)"
        },
    )


FREE_TEXT_REASONS = {
    "description": "whether a won or lost deal's `reason` may be words instead of one of the "
    "codes (default true); a `reason_note` may go with either"
}


class PipelineInput(Schema):
    name = Text(100, required=True, allow_none=False)
    stages = fields.List(fields.Nested(StageInput), required=True, validate=validate.Length(min=1, max=20))
    win_reasons = _reason_list("won")
    loss_reasons = _reason_list("lost")
    free_text_reasons = fields.Boolean(metadata=FREE_TEXT_REASONS)


class PipelinePatch(Schema):
    name = Text(100, allow_none=False)
    win_reasons = _reason_list("won")
    loss_reasons = _reason_list("lost")
    free_text_reasons = fields.Boolean(metadata=FREE_TEXT_REASONS)


TEAM_INPUT = (
    "the owning team; a caller with a team-scoped role (sales:write:team) gets its own team, and naming "
    "another is a 403"
)
TEAM_PATCH = "move the record to another team (null: to none); a team-scoped caller cannot (403)"
TEAM_FILTER = (
    "only records of this team; a team-scoped caller sees only its own team's, so naming another gives an empty page"
)
TEAM_VIEW = "the owning team (team-scoped roles see only their team's records)"


class DealInput(Schema):
    OPENAPI = exact_for_currency("amount")  # _check_amount, below

    title = Text(200, required=True, allow_none=False)
    contact_id = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9:._-]{1,128}$"))
    company_id = fields.String(allow_none=True, validate=validate.Length(max=128))
    owner = Text(100)
    team = Text(TEAM_MAX, metadata={"description": TEAM_INPUT})
    amount = DecimalText(load_default=Decimal(0))
    currency = Currency(required=True)
    pipeline_id = fields.String(load_default="default", validate=validate.Length(min=1, max=128))
    stage = fields.String(validate=validate.Length(min=1, max=60))
    expected_close = fields.Date(allow_none=True)

    @validates_schema(skip_on_field_errors=False)
    def exact_amount(self, data: dict[str, Any], **_: Any) -> None:
        _check_amount(data, "amount", data.get("currency"))


class DealPatch(Schema):
    title = Text(200, allow_none=False)
    company_id = fields.String(allow_none=True, validate=validate.Length(max=128))
    owner = Text(100)
    team = Text(TEAM_MAX, metadata={"description": TEAM_PATCH})
    amount = DecimalText()
    currency = Currency()
    expected_close = fields.Date(allow_none=True)


class DealListQuery(PageQuery):
    pipeline_id = fields.String()
    stage = fields.String()
    status = fields.String(validate=validate.OneOf(["open", "won", "lost"]))
    owner = fields.String()
    team = fields.String(validate=validate.Length(max=TEAM_MAX), metadata={"description": TEAM_FILTER})
    contact_id = fields.String()


class StageMove(Schema):
    stage = fields.String(required=True, validate=validate.Length(min=1, max=60))


REASON = (
    "a code of the deal's pipeline's {kind} reasons (`{lists}`); where the pipeline allows free text "
    "(`free_text_reasons`, or it lists none) other words are kept as the reason"
)
REASON_NOTE = {"description": "free text beside the reason (or, for a win, alone): always allowed"}


class WonInput(Schema):
    reason = Text(500, allow_none=False, metadata={"description": REASON.format(kind="win", lists="win_reasons")})
    reason_note = Text(1000, metadata=REASON_NOTE)


class LostInput(Schema):
    reason = Text(
        500, required=True, allow_none=False, metadata={"description": REASON.format(kind="loss", lists="loss_reasons")}
    )
    reason_note = Text(1000, metadata=REASON_NOTE)


class BoardQuery(Schema):
    per_column = fields.Integer(load_default=50, validate=validate.Range(0, 500))
    owner = fields.String()
    team = fields.String(validate=validate.Length(max=TEAM_MAX), metadata={"description": TEAM_FILTER})


class ActivityInput(Schema):
    type = fields.String(required=True, validate=validate.OneOf(ACTIVITY_TYPES))
    subject = Text(200, required=True, allow_none=False)
    notes = Text(4000)
    due_at = fields.AwareDateTime(required=True)
    owner = Text(100)
    team = Text(TEAM_MAX, metadata={"description": TEAM_INPUT})
    deal_id = fields.String(allow_none=True, validate=validate.Length(max=128))
    contact_id = fields.String(allow_none=True, validate=validate.Length(max=128))


class CompleteInput(Schema):
    outcome = Text(1000)


class ActivityListQuery(PageQuery):
    owner = fields.String()
    team = fields.String(validate=validate.Length(max=TEAM_MAX), metadata={"description": TEAM_FILTER})
    deal_id = fields.String()
    contact_id = fields.String()
    type = fields.String(validate=validate.OneOf(ACTIVITY_TYPES))
    status = fields.String(validate=validate.OneOf(["open", "completed"]))
    due_before = fields.AwareDateTime()
    overdue = fields.Boolean(load_default=False)


class QuoteLineInput(Schema):
    # a line names a product, or describes itself and gives its price (SalesBook._quote_line)
    OPENAPI = {
        "anyOf": [
            {"required": ["product_id"], "properties": {"product_id": {"type": "string", "minLength": 1}}},
            {
                "required": ["description", "unit_price"],
                "properties": {"description": {"type": "string", "pattern": FILLED}, "unit_price": {"type": "string"}},
            },
        ]
    }

    product_id = fields.String(allow_none=True, validate=validate.Length(max=128))
    description = Text(500)
    quantity = DecimalText(QUANTITY, required=True)
    unit_price = DecimalText(load_default=None, allow_none=True)
    discount_percent = DecimalText(load_default=Decimal(0), **PERCENT)
    tax_rate = DecimalText(load_default=None, allow_none=True, **PERCENT)


class QuoteInput(Schema):
    deal_id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    lines = fields.List(fields.Nested(QuoteLineInput), required=True, validate=validate.Length(min=1, max=200))
    valid_until = fields.Date(required=True)
    tax_rate = DecimalText(load_default=None, allow_none=True, **PERCENT)
    locale = fields.String(allow_none=True, validate=validate.Regexp(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"))
    notes = Text(4000)


class QuoteListQuery(PageQuery):
    deal_id = fields.String()
    contact_id = fields.String()
    status = fields.String(validate=validate.OneOf(["draft", "sent", "accepted", "rejected", "expired"]))


class QuoteQuery(AsOfQuery):
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "html"]))
    locale = fields.String(
        validate=[validate.Length(max=35), validate.Regexp(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")],
        metadata={
            "description": "with format=html: the BCP 47 locale to render in (e.g. fa-IR); default the quote's "
            "locale, else the contact's, else en"
        },
    )


class AcceptInput(Schema):
    mark_deal_won = fields.Boolean(load_default=True)


class RejectInput(Schema):
    reason = Text(500)


class RangeQuery(Schema):
    from_ = fields.Date(required=True, data_key="from")
    to = fields.Date(required=True)

    @validates_schema
    def ordered(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("from_") and data.get("to") and data["from_"] > data["to"]:
            raise ValidationError({"to": ["must not be before `from`"]})
        check_period(data.get("from_"), data.get("to"))


# --- what the API answers (response schemas for the OpenAPI document) ------------------------

DECIMAL = {"pattern": r"^[0-9]+(\.[0-9]+)?$"}  # a decimal string ("1250.00"), as money and rates are shown
CURRENCY = {"enum": CURRENCIES}


class MoneyView(Schema):
    amount = fields.String(metadata=DECIMAL)
    currency = fields.String(metadata=CURRENCY)


class ProductView(Schema):
    id = fields.String()
    version = fields.Integer()
    sku = fields.String()
    name = fields.String()
    description = fields.String(allow_none=True)
    unit_price = fields.String(metadata=DECIMAL)
    currency = fields.String(metadata=CURRENCY)
    tax_rate = fields.String(metadata={**DECIMAL, "description": "percent"})
    active = fields.Boolean()
    created_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)


class StageView(Schema):
    key = fields.String()
    name = fields.String()
    probability = fields.String(metadata={**DECIMAL, "description": "percent: the chance a deal here is won"})
    kind = fields.String(metadata={"enum": ["open", WON, LOST]})


class ReasonView(Schema):
    code = fields.String(metadata={"pattern": REASON_CODE})
    label = fields.String()


class PipelineView(Schema):
    id = fields.String()
    version = fields.Integer()
    name = fields.String()
    stages = fields.List(
        fields.Nested(StageView), metadata={"description": "the open stages in order, then won (100) and lost (0)"}
    )
    win_reasons = fields.List(fields.Nested(ReasonView))
    loss_reasons = fields.List(fields.Nested(ReasonView))
    free_text_reasons = fields.Boolean(metadata=FREE_TEXT_REASONS)
    created_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)


class StageEntryView(Schema):
    stage = fields.String()
    entered_at = fields.DateTime()
    left_at = fields.DateTime(allow_none=True)
    seconds_in_stage = fields.Integer(
        metadata={
            "description": "one deal's view only: the time spent there (in "
            "the current stage: until now, or until as_of)"
        }
    )


class DealContactView(Schema):
    """The deal's contact from sales' local copy of contacts (no remote call)."""

    id = fields.String()
    first_name = fields.String(allow_none=True)
    last_name = fields.String(allow_none=True)
    status = fields.String(allow_none=True)
    lifecycle_stage = fields.String(allow_none=True)
    locale = fields.String(allow_none=True)


WHY = "why, in words: the label of the pipeline's reason, or the words given (null once the contact is erased)"
CODE = "the pipeline's reason code, when one was given"
NOTE = "the note given with the reason (null once the contact is erased)"


class DealView(Schema):
    id = fields.String()
    version = fields.Integer()
    title = fields.String(allow_none=True, metadata={"description": "null once the contact is erased"})
    contact_id = fields.String()
    company_id = fields.String(allow_none=True)
    owner = fields.String(allow_none=True)
    team = fields.String(allow_none=True, metadata={"description": TEAM_VIEW})
    amount = fields.String(metadata=DECIMAL)
    currency = fields.String(metadata=CURRENCY)
    expected_close = fields.Date(allow_none=True)
    pipeline_id = fields.String()
    stage = fields.String()
    status = fields.String(metadata={"enum": ["open", WON, LOST]})
    won_reason = fields.String(allow_none=True, metadata={"description": WHY})
    won_reason_code = fields.String(allow_none=True, metadata={"description": CODE})
    won_reason_note = fields.String(allow_none=True, metadata={"description": NOTE})
    lost_reason = fields.String(allow_none=True, metadata={"description": WHY})
    lost_reason_code = fields.String(allow_none=True, metadata={"description": CODE})
    lost_reason_note = fields.String(allow_none=True, metadata={"description": NOTE})
    won_at = fields.DateTime(allow_none=True)
    lost_at = fields.DateTime(allow_none=True)
    quote_id = fields.String(allow_none=True, metadata={"description": "the accepted quote that won it"})
    stage_history = fields.List(fields.Nested(StageEntryView))
    customer_data_erased_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)
    contact = fields.Nested(
        DealContactView, allow_none=True, metadata={"description": "null when sales has not heard of the contact yet"}
    )


class ActivityView(Schema):
    id = fields.String()
    version = fields.Integer()
    type = fields.String(metadata={"enum": list(ACTIVITY_TYPES)})
    subject = fields.String(allow_none=True, metadata={"description": "null once the contact is erased"})
    notes = fields.String(allow_none=True)
    due_at = fields.DateTime()
    owner = fields.String(allow_none=True)
    team = fields.String(allow_none=True, metadata={"description": TEAM_VIEW})
    deal_id = fields.String(allow_none=True)
    contact_id = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": ["open", "completed"]})
    completed_at = fields.DateTime(allow_none=True)
    outcome = fields.String(allow_none=True)
    customer_data_erased_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)


class QuoteLineView(Schema):
    product_id = fields.String(allow_none=True)
    sku = fields.String(allow_none=True)
    description = fields.String(allow_none=True, metadata={"description": "null once the contact is erased"})
    quantity = fields.String(metadata=DECIMAL)
    unit_price = fields.String(metadata=DECIMAL)
    discount_percent = fields.String(metadata=DECIMAL)
    tax_rate = fields.String(metadata=DECIMAL)
    discount = fields.String(metadata=DECIMAL)
    net = fields.String(metadata=DECIMAL)
    tax = fields.String(metadata=DECIMAL)
    total = fields.String(metadata=DECIMAL)


QUOTE_STATUSES = ["draft", "sent", "accepted", "rejected", "expired"]


class QuoteView(Schema):
    id = fields.String()
    version = fields.Integer()
    number = fields.String(metadata={"pattern": r"^Q-[0-9]{4}-[0-9]{6,}$"})
    deal_id = fields.String()
    contact_id = fields.String()
    currency = fields.String(metadata=CURRENCY)
    valid_until = fields.Date()
    locale = fields.String(allow_none=True)
    notes = fields.String(allow_none=True)
    lines = fields.List(fields.Nested(QuoteLineView))
    subtotal = fields.String(metadata=DECIMAL)
    discount = fields.String(metadata=DECIMAL)
    tax = fields.String(metadata=DECIMAL)
    total = fields.String(metadata=DECIMAL)
    status = fields.String(metadata={"enum": QUOTE_STATUSES})
    sent_at = fields.DateTime(allow_none=True)
    accepted_at = fields.DateTime(allow_none=True)
    rejected_at = fields.DateTime(allow_none=True)
    rejection_reason = fields.String(allow_none=True)
    expired_at = fields.DateTime(allow_none=True)
    customer_data_erased_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)


class DealRefView(Schema):
    id = fields.String()
    status = fields.String(metadata={"enum": ["open", WON, LOST]})
    version = fields.Integer()


class AcceptedQuoteView(QuoteView):
    deal = fields.Nested(DealRefView, metadata={"description": "the quote's deal after the acceptance"})


class BoardColumnView(Schema):
    stage = fields.String()
    name = fields.String()
    probability = fields.String(metadata=DECIMAL)
    count = fields.Integer()
    sums = fields.List(fields.Nested(MoneyView), metadata={"description": "the deals' amounts, per currency"})
    deals = fields.List(
        fields.Nested(DealView), metadata={"description": "the first per_column deals, without their stage history"}
    )


class BoardView(Schema):
    pipeline_id = fields.String()
    name = fields.String()
    columns = fields.List(fields.Nested(BoardColumnView))


class MonthWeighted(Schema):
    month = fields.String(metadata={"pattern": r"^[0-9]{4}-[0-9]{2}$"})
    weighted = fields.List(fields.Nested(MoneyView))


class OwnerWeighted(Schema):
    owner = fields.String()
    weighted = fields.List(fields.Nested(MoneyView))


class LifecycleSales(Schema):
    lifecycle_stage = fields.String()
    won_deals = fields.Integer()
    won = fields.List(fields.Nested(MoneyView))


class OwnerReasonRow(Schema):
    owner = fields.String()
    deals = fields.Integer()
    amounts = fields.List(fields.Nested(MoneyView), metadata={"description": "the deals' amounts, per currency"})


class ReasonRow(Schema):
    pipeline_id = fields.String()
    reason = fields.String(
        allow_none=True,
        metadata={"description": "the reason code; null: deals closed without one (no reason, or words only)"},
    )
    label = fields.String(
        allow_none=True,
        metadata={"description": "the code's label in the pipeline now (null when it no longer lists it)"},
    )
    deals = fields.Integer()
    amounts = fields.List(fields.Nested(MoneyView), metadata={"description": "the deals' amounts, per currency"})
    by_owner = fields.List(fields.Nested(OwnerReasonRow))


class ForecastView(Schema):
    from_ = fields.Date(data_key="from")
    to = fields.Date()
    open_deals = fields.Integer()
    pipeline = fields.List(
        fields.Nested(MoneyView), metadata={"description": "open deals expected to close in the period, per currency"}
    )
    weighted = fields.List(
        fields.Nested(MoneyView), metadata={"description": "the same, weighted by stage probability"}
    )
    by_month = fields.List(fields.Nested(MonthWeighted))
    by_owner = fields.List(fields.Nested(OwnerWeighted))
    won_deals = fields.Integer()
    lost_deals = fields.Integer()
    win_rate = fields.Float(allow_none=True)
    average_sales_cycle_days = fields.Float(allow_none=True)
    won = fields.List(fields.Nested(MoneyView))
    sales_by_lifecycle_stage = fields.List(fields.Nested(LifecycleSales))
    win_reasons = fields.List(
        fields.Nested(ReasonRow),
        metadata={"description": "deals won in the period, by pipeline and win reason, each by owner"},
    )
    loss_reasons = fields.List(
        fields.Nested(ReasonRow),
        metadata={"description": "deals lost in the period, by pipeline and loss reason, each by owner"},
    )


class RfmView(Schema):
    recency = fields.Integer(metadata={"minimum": 0, "maximum": 5})
    frequency = fields.Integer(metadata={"minimum": 0, "maximum": 5})
    monetary = fields.Integer(metadata={"minimum": 0, "maximum": 5})


class CustomerValueView(Schema):
    contact_id = fields.String()
    reporting_currency = fields.String(metadata=CURRENCY)
    lifetime_value = fields.Nested(MoneyView)
    predicted_value = fields.Nested(MoneyView)
    rfm = fields.Nested(RfmView)
    tier = fields.String(metadata={"enum": list(TIERS)})
    strategic = fields.Boolean()
    won_deals = fields.Integer()
    lifetime_value_by_currency = fields.List(fields.Nested(MoneyView))
    last_purchase_at = fields.DateTime(allow_none=True)
    open_deals = fields.Integer()
    open_pipeline = fields.Nested(MoneyView)
    open_pipeline_by_currency = fields.List(fields.Nested(MoneyView))
    computed_at = fields.DateTime(allow_none=True)


QUOTE_OR_HTML = {
    "responses": {
        "200": {
            "description": "The quote; with format=html its printable pro-forma invoice",
            "content": {"application/json": {"schema": QuoteView}, "text/html": {"schema": {"type": "string"}}},
        }
    }
}
