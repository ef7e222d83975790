"""What the contacts REST API accepts and returns (marshmallow; also drives OpenAPI).

Input is normalised here, at the edge: emails lower-cased, phones to E.164, names
trimmed, so the domain only ever sees clean values. Every failing field is reported.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Any
from zoneinfo import available_timezones

from marshmallow import Schema, ValidationError, fields, validate, validates

from crm_contacts import normalize
from crm_contacts.domain import CHANNELS, CONSENT_STATUSES, LEGAL_BASES, LIFECYCLE_STAGES
from crmkit.events import utcnow
from crmkit.web import PageQuery

MAX_TAGS = 50
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f]")
MAX_ATTRIBUTES = 50


class Text(fields.String):
    """Trimmed text with a length cap; control characters are refused; "" means null."""

    def __init__(self, max_length: int = 200, **kwargs: Any) -> None:
        kwargs.setdefault("allow_none", True)
        super().__init__(validate=validate.Length(max=max_length), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if CONTROL_CHARACTER.search(text):  # a scan in C: a character loop was a tenth of an import's time
            raise ValidationError("control characters are not allowed")
        if not text and not self.allow_none:
            raise ValidationError("must not be empty")
        return text or None

    def _validate(self, value: Any) -> None:
        if value is not None:  # "" became null: no length to check (was a TypeError, a 500)
            super()._validate(value)


class Email(Text):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=254, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return normalize.email(text) if text else None
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


def default_phone_region() -> str | None:
    """The region of a number written without `+` (CRM_DEFAULT_PHONE_REGION, `IR` when unset, so
    0912 345 6789 is +989123456789); set it empty to require the `+<country code>` form."""
    return os.environ.get("CRM_DEFAULT_PHONE_REGION", "IR").strip().upper() or None


class Phone(Text):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=40, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return normalize.phone(text, default_phone_region()) if text else None
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class Domain(Text):
    """A host name such as example.com, lower-cased (companies are matched by it)."""

    PATTERN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=253, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        text = super()._deserialize(value, attr, data, **kwargs)
        if text and not self.PATTERN.match(text.lower()):
            raise ValidationError("not a domain name (e.g. example.com)")
        return text.lower() if text else None


def _check_attributes(values: dict[str, Any]) -> None:
    if len(values) > MAX_ATTRIBUTES:
        raise ValidationError(f"at most {MAX_ATTRIBUTES} attributes")
    for key, value in values.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValidationError(f"{key}: values must be text, numbers, booleans or null")
        if isinstance(value, str) and len(value) > 1000:
            raise ValidationError(f"{key}: at most 1000 characters")


def _attributes() -> fields.Dict:
    return fields.Dict(keys=fields.String(validate=validate.Length(1, 64)), values=fields.Raw(allow_none=True),
                       validate=_check_attributes, allow_none=True)


class Locale(Text):
    """A BCP 47 language tag (fa, fa-IR, en-US), kept in its canonical case."""

    PATTERN = re.compile(r"^([a-zA-Z]{2,3})(?:[-_]([a-zA-Z]{4}))?(?:[-_]([a-zA-Z]{2}|[0-9]{3}))?$")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=20, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        text = super()._deserialize(value, attr, data, **kwargs)
        if text is None:
            return None
        match = self.PATTERN.match(text)
        if not match:
            raise ValidationError("not a language tag (e.g. fa-IR, en)")
        language, script, region = match.groups()
        return "-".join(p for p in (language.lower(), script and script.title(), region and region.upper()) if p)


class TimeZone(Text):
    """An IANA time zone name (Asia/Tehran)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=64, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        text = super()._deserialize(value, attr, data, **kwargs)
        if text is not None and text not in available_timezones():
            raise ValidationError("not an IANA time zone (e.g. Asia/Tehran)")
        return text


class ContactInput(Schema):
    """The fields a person sets on a contact (a PATCH sends any subset; null clears)."""

    first_name = Text(100)
    last_name = Text(100)
    email = Email()
    phone = Phone()
    company_id = Text(64)
    lifecycle_stage = fields.String(validate=validate.OneOf(LIFECYCLE_STAGES))
    tags = fields.List(Text(64, allow_none=False), validate=validate.Length(max=MAX_TAGS), allow_none=True)
    attributes = _attributes()
    owner = Text(100)
    locale = Locale()
    time_zone = TimeZone()

    @validates("lifecycle_stage")
    def _stage_not_null(self, value: Any, **_: Any) -> None:
        if value is None:
            raise ValidationError("cannot be null")


class ConsentInput(Schema):
    """A person's choice for one channel, and the evidence for it."""

    status = fields.String(required=True, validate=validate.OneOf(CONSENT_STATUSES))
    source = Text(100, load_default="api", metadata={"description": "where it was given: web_form, call, import, …"})
    legal_basis = fields.String(load_default="consent", validate=validate.OneOf(LEGAL_BASES))
    at = fields.AwareDateTime(load_default=None, metadata={"description": "when it was given (default: now)"})

    @validates("at")
    def _not_in_the_future(self, value: Any, **_: Any) -> None:
        if value is not None and value > utcnow() + timedelta(minutes=5):
            raise ValidationError("cannot be in the future")


class ConsentView(Schema):
    status = fields.String()
    source = fields.String()
    legal_basis = fields.String()
    at = fields.String()


class ConsentPath(Schema):
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))


class MergeInput(Schema):
    duplicate_id = Text(64, required=True, allow_none=False)


class ErasureInput(Schema):
    reason = Text(200, load_default="data subject request")


class DuplicatePair(Schema):
    survivor_id = fields.String()
    duplicate_id = fields.String()
    reason = fields.String(metadata={"enum": ["same_email", "same_phone", "same_name_and_company"]})
    matched = fields.String()


class ContactView(ContactInput):
    id = fields.String(dump_only=True)
    version = fields.Integer(dump_only=True)
    status = fields.String(dump_only=True, metadata={"enum": ["active", "merged", "erased"]})
    consents = fields.Dict(keys=fields.String(), values=fields.Nested(ConsentView), dump_only=True)
    merged_into = fields.String(dump_only=True, allow_none=True)
    merged_from = fields.List(fields.String(), dump_only=True)
    last_purchase_at = fields.String(dump_only=True, allow_none=True,
                                     metadata={"description": "the newest won deal (lifecycle automation)"})
    at_risk = fields.Boolean(dump_only=True, metadata={"description": "a customer without a won deal for "
                                                                      "CRM_AT_RISK_AFTER_DAYS"})
    at_risk_since = fields.String(dump_only=True, allow_none=True)
    win_backs = fields.Integer(dump_only=True, metadata={"description": "times won back from churned"})
    derived = fields.Dict(dump_only=True, metadata={
        "description": "values other services derive (tier, clv, …): lists only, eventually consistent"})
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class ContactListQuery(PageQuery):
    q = fields.String(validate=validate.Length(max=200),
                      metadata={"description": "words that start a name, email or phone"})
    lifecycle_stage = fields.String(validate=validate.OneOf(LIFECYCLE_STAGES))
    company_id = fields.String(validate=validate.Length(max=64))
    tag = fields.String(validate=validate.Length(max=64))
    owner = fields.String(validate=validate.Length(max=100))
    email = Email(allow_none=False)
    phone = Phone(allow_none=False)
    status = fields.String(load_default="active", validate=validate.OneOf(["active", "merged", "erased", "all"]))


class HistoryEntry(Schema):
    version = fields.Integer()
    event_id = fields.String()
    type = fields.String()
    time = fields.DateTime()
    actor = fields.String()
    correlation_id = fields.String()
    changes = fields.Dict(metadata={"description": "field → {before, after}"})


class CompanyInput(Schema):
    name = Text(200)
    domain = Domain()
    industry = Text(100)
    size = fields.String(allow_none=True, validate=validate.OneOf(["1-10", "11-50", "51-200", "201-1000", "1001+"]))
    phone = Phone()
    website = fields.Url(allow_none=True, validate=validate.Length(max=500))
    address = Text(500)
    tags = fields.List(Text(64, allow_none=False), validate=validate.Length(max=MAX_TAGS), allow_none=True)
    attributes = _attributes()
    owner = Text(100)


class CompanyCreate(CompanyInput):
    name = Text(200, required=True, allow_none=False)


class CompanyView(CompanyInput):
    id = fields.String(dump_only=True)
    version = fields.Integer(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class CompanyListQuery(PageQuery):
    q = fields.String(validate=validate.Length(max=200))
    domain = Domain(allow_none=False)
