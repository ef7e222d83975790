"""What the sales REST API accepts and returns (marshmallow; also drives OpenAPI).

Money is a decimal string (a JSON number is refused: floats cannot hold money), checked
against the currency's minor unit at the edge, so the domain sees exact Decimals only.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from crm_sales import money
from crm_sales.domain import ACTIVITY_TYPES
from crmkit.events import parse_time
from crmkit.web import AsOfQuery, PageQuery
from crmkit.web.periods import check_period


class Text(fields.String):
    """Trimmed text with a length cap; control characters refused; "" means null."""

    def __init__(self, max_length: int = 200, **kwargs: Any) -> None:
        kwargs.setdefault("allow_none", True)
        super().__init__(validate=validate.Length(max=max_length), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if any(ord(ch) < 32 and ch not in "\n\t" for ch in text):
            raise ValidationError("control characters are not allowed")
        if not text and not self.allow_none:
            raise ValidationError("must not be empty")
        return text or None

    def _validate(self, value: Any) -> None:
        if value is not None:
            super()._validate(value)


class DecimalText(fields.Field):
    """A decimal given as a string (or an integer), within [minimum, maximum]."""

    def __init__(self, minimum: Decimal | None = Decimal(0), maximum: Decimal | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.minimum, self.maximum = minimum, maximum

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValidationError('must be a decimal string such as "1250.00"')
        try:
            number = money.parse(value)
        except money.MoneyError as exc:
            raise ValidationError(str(exc)) from None
        if self.minimum is not None and number < self.minimum:
            raise ValidationError(f"must be at least {self.minimum}")
        if self.maximum is not None and number > self.maximum:
            raise ValidationError(f"must be at most {self.maximum}")
        return number

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else f"{value}"


class Currency(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        code = super()._deserialize(value, attr, data, **kwargs).strip().upper()
        if code not in money.MINOR_UNITS:
            raise ValidationError(f"unsupported currency; one of {', '.join(sorted(money.MINOR_UNITS))}")
        return code


class Time(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        try:
            return parse_time(super()._deserialize(value, attr, data, **kwargs))
        except ValueError:
            raise ValidationError("must be an RFC 3339 time with a zone offset") from None


PERCENT = {"minimum": Decimal(0), "maximum": Decimal(100)}
Id = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9:._-]{1,128}$"))


def _check_amount(data: dict[str, Any], amount_field: str, currency: str | None) -> None:
    if currency and data.get(amount_field) is not None and currency in money.MINOR_UNITS:
        try:
            data[amount_field] = money.exact(data[amount_field], currency)
        except money.MoneyError as exc:
            raise ValidationError({amount_field: [str(exc)]}) from None


class ProductInput(Schema):
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


class PipelineInput(Schema):
    name = Text(100, required=True, allow_none=False)
    stages = fields.List(fields.Nested(StageInput), required=True, validate=validate.Length(min=1, max=20))


class DealInput(Schema):
    title = Text(200, required=True, allow_none=False)
    contact_id = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9:._-]{1,128}$"))
    company_id = fields.String(allow_none=True, validate=validate.Length(max=128))
    owner = Text(100)
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
    amount = DecimalText()
    currency = Currency()
    expected_close = fields.Date(allow_none=True)


class DealListQuery(PageQuery):
    pipeline_id = fields.String()
    stage = fields.String()
    status = fields.String(validate=validate.OneOf(["open", "won", "lost"]))
    owner = fields.String()
    contact_id = fields.String()


class StageMove(Schema):
    stage = fields.String(required=True, validate=validate.Length(min=1, max=60))


class LostInput(Schema):
    reason = Text(500, required=True, allow_none=False)


class BoardQuery(Schema):
    per_column = fields.Integer(load_default=50, validate=validate.Range(0, 500))
    owner = fields.String()


class ActivityInput(Schema):
    type = fields.String(required=True, validate=validate.OneOf(ACTIVITY_TYPES))
    subject = Text(200, required=True, allow_none=False)
    notes = Text(4000)
    due_at = Time(required=True)
    owner = Text(100)
    deal_id = fields.String(allow_none=True, validate=validate.Length(max=128))
    contact_id = fields.String(allow_none=True, validate=validate.Length(max=128))


class CompleteInput(Schema):
    outcome = Text(1000)


class ActivityListQuery(PageQuery):
    owner = fields.String()
    deal_id = fields.String()
    contact_id = fields.String()
    type = fields.String(validate=validate.OneOf(ACTIVITY_TYPES))
    status = fields.String(validate=validate.OneOf(["open", "completed"]))
    due_before = Time()
    overdue = fields.Boolean(load_default=False)


class QuoteLineInput(Schema):
    product_id = fields.String(allow_none=True, validate=validate.Length(max=128))
    description = Text(500)
    quantity = DecimalText(required=True, minimum=Decimal("0.0001"), maximum=Decimal(10**9))
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
    locale = fields.String(validate=[validate.Length(max=35), validate.Regexp(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")],
                           metadata={
        "description": "with format=html: the BCP 47 locale to render in (e.g. fa-IR); default the quote's "
                       "locale, else the contact's, else en"})


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
