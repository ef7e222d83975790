"""What the contacts REST API accepts and returns (marshmallow; also drives OpenAPI).

Input is normalised here, at the edge: emails lower-cased, phones to E.164, names
trimmed, so the domain only ever sees clean values. Every failing field is reported.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from zoneinfo import available_timezones

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates

from crm_contacts import settings
from crm_contacts.records import normalize
from crm_contacts.records.domain import CHANNELS, CONSENT_STATUSES, LEGAL_BASES, LIFECYCLE_STAGES
from crmkit import clock
from crmkit.auth import TEAM_MAX
from crmkit.web import PageQuery

MAX_TAGS = 50
MAX_ATTRIBUTES = 50


# What each text field takes, as the OpenAPI document states it and as the field checks it (one
# expression for both, so they cannot drift). Text is trimmed (Python's whitespace: `\s` in these
# patterns, the same set str.strip() removes); what is left may hold no control character; blank
# means null where the field may be null and is refused where it may not. Length caps count what was
# sent, as the document's maxLength does.
_TEXT = r"[^\x00-\x1f\s](?:[^\x00-\x1f]*[^\x00-\x1f\s])?"
_EMAIL = r"[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+"
# the characters a phone number is written with (digits of any script: Persian ۰۹۱۲ too); whether it
# is a number at all is its country's numbering plan (libphonenumber), which no pattern can state
_PHONE = r"\+?[\d ().-]*\d[\d ().-]*"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
_LOCALE = r"([a-zA-Z]{2,3})(?:[-_]([a-zA-Z]{4}))?(?:[-_]([a-zA-Z]{2}|[0-9]{3}))?"
_URL = rf"[Hh][Tt][Tt][Pp][Ss]?://{_DOMAIN}(?::[0-9]{{1,5}})?(?:[/?#][^\x00-\x1f\s]*)?"
ZONES = sorted(available_timezones())


def trimmed(core: str, nullable: bool) -> str:
    """The pattern of a text field whose value, once trimmed, is `core` (or blank, for null)."""
    return rf"^\s*(?:{core})?\s*$" if nullable else rf"^\s*(?:{core})\s*$"


class Text(fields.String):
    """Trimmed text with a length cap; control characters are refused; "" means null."""

    CORE = _TEXT
    MESSAGE = "control characters are not allowed"

    def __init__(self, max_length: int = 200, **kwargs: Any) -> None:
        kwargs.setdefault("allow_none", True)
        super().__init__(validate=validate.Length(max=max_length), **kwargs)
        self.max_length = max_length
        self.shape = re.compile(trimmed(self.CORE, self.allow_none))
        self.metadata = {"pattern": self.shape.pattern, **self.metadata}

    # blank text reads as None, which marshmallow's String (typed to give str) never returns
    def _deserialize(  # type: ignore[override]
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> str | None:
        raw = super()._deserialize(value, attr, data, **kwargs)
        if len(raw) > self.max_length:
            raise ValidationError(f"Longer than maximum length {self.max_length}.")
        text = raw.strip()
        if not text and not self.allow_none:
            raise ValidationError("must not be empty")
        if not self.shape.match(raw):
            raise ValidationError(self.MESSAGE)
        return self.normal(text) if text else None

    def normal(self, text: str) -> str:
        """The stored form of a value of the right shape."""
        return text

    def _validate(self, value: Any) -> None:
        """Nothing left to check: the cap counted what was sent (a stored form may be longer or shorter)."""


class Email(Text):
    CORE = _EMAIL
    MESSAGE = "not a valid email address"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=254, **kwargs)

    def normal(self, text: str) -> str:
        # NFKC can turn a character into a space or an @ (¨, ＠): the address was judged as sent
        try:
            return normalize.email(text)
        except ValueError:
            return text.lower()


def default_phone_region() -> str | None:
    """The region of a number written without `+` (CRM_DEFAULT_PHONE_REGION, `IR` when unset, so
    0912 345 6789 is +989123456789); set it empty to require the `+<country code>` form."""
    return settings.current().phone_region


class Phone(Text):
    CORE = _PHONE
    MESSAGE = "not a phone number (digits, spaces, ( ) . - and a leading +)"

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"description": "a valid number in its country's numbering plan, stored as E.164 (+989121234567)"}
        super().__init__(max_length=40, metadata={**metadata, **kwargs.pop("metadata", {})}, **kwargs)

    def normal(self, text: str) -> str:
        try:
            return normalize.phone(text, default_phone_region())
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class Domain(Text):
    """A host name such as example.com, lower-cased (companies are matched by it)."""

    CORE = _DOMAIN
    MESSAGE = "not a domain name (e.g. example.com)"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=253, **kwargs)

    def normal(self, text: str) -> str:
        return text.lower()


class Website(Text):
    """An http(s) address of a host by name."""

    CORE = _URL
    MESSAGE = "not a web address (http:// or https://, a host name, then any path)"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=500, **kwargs)


def _check_attributes(values: dict[str, Any]) -> None:
    if len(values) > MAX_ATTRIBUTES:
        raise ValidationError(f"at most {MAX_ATTRIBUTES} attributes")
    if "" in values:
        raise ValidationError("an attribute needs a name")
    for key, value in values.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValidationError(f"{key}: values must be text, numbers, booleans or null")
        if isinstance(value, str) and len(value) > 1000:
            raise ValidationError(f"{key}: at most 1000 characters")


ATTRIBUTES_DOC = {
    "type": "object",
    "maxProperties": MAX_ATTRIBUTES,
    "nullable": True,
    "description": "your own fields: a name (any text but empty; OpenAPI 3.0 cannot limit a key's length) to "
    "text (at most 1000 characters), a number, true/false or null",
    "properties": {"": {"not": {}}},
    "additionalProperties": {
        "anyOf": [{"type": "string", "maxLength": 1000}, {"type": "number"}, {"type": "boolean", "nullable": True}]
    },
}


def _attributes() -> fields.Dict:
    # no keys=/values= fields: apispec would write additionalProperties from them, over ATTRIBUTES_DOC's
    return fields.Dict(validate=_check_attributes, allow_none=True, metadata=ATTRIBUTES_DOC)


class Locale(Text):
    """A BCP 47 language tag (fa, fa-IR, en-US), kept in its canonical case."""

    CORE = _LOCALE
    MESSAGE = "not a language tag (e.g. fa-IR, en)"
    PATTERN = re.compile(rf"^{_LOCALE}$")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=20, **kwargs)

    def normal(self, text: str) -> str:
        match = self.PATTERN.match(text)
        assert match is not None  # the shape was checked
        language, script, region = match.groups()
        return "-".join(p for p in (language.lower(), script and script.title(), region and region.upper()) if p)


class TimeZone(fields.String):
    """An IANA time zone name (Asia/Tehran), exactly; "" means null."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_none", True)
        super().__init__(metadata={"enum": ["", *ZONES]}, **kwargs)

    # blank text reads as None, which marshmallow's String (typed to give str) never returns
    def _deserialize(  # type: ignore[override]
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> str | None:
        text = super()._deserialize(value, attr, data, **kwargs)
        if text and text not in ZONE_SET:
            raise ValidationError("not an IANA time zone (e.g. Asia/Tehran)")
        return text or None


ZONE_SET = frozenset(ZONES)


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
    team = Text(
        TEAM_MAX,
        metadata={
            "description": (
                "the owning team; a caller with a team-scoped role (contacts:write:team) creates contacts of its team "
                "(naming another is a 403) and cannot move one out of it"
            )
        },
    )
    locale = Locale()
    time_zone = TimeZone()

    @validates("lifecycle_stage")
    def _stage_not_null(self, value: Any, **_: Any) -> None:
        if value is None:
            raise ValidationError("cannot be null")


IDENTIFYING = ("first_name", "last_name", "email", "phone")


class ContactCreate(ContactInput):
    """A new contact: at least a name, an email or a phone, not blank (the domain's rule, documented)."""

    verified_at = fields.AwareDateTime(
        metadata={
            "description": "when the details were last confirmed, if before now (e.g. records migrated from another "
            "system); not in the future. Default: now (the creation counts as a confirmation)"
        }
    )

    @validates("verified_at")
    def _verified_not_in_the_future(self, value: Any, **_: Any) -> None:
        if value is not None and value > clock.now() + timedelta(minutes=5):
            raise ValidationError("cannot be in the future")

    OPENAPI = {
        "anyOf": [
            {
                "required": [name],
                "properties": {name: {"type": "string", "pattern": trimmed(field.CORE, nullable=False)}},
            }
            for name, field in ContactInput._declared_fields.items()
            if name in IDENTIFYING and isinstance(field, Text)
        ]
    }


class ConsentInput(Schema):
    """A person's choice for one channel, and the evidence for it."""

    status = fields.String(required=True, validate=validate.OneOf(CONSENT_STATUSES))
    # the proof of consent names its source: blank is not one (null reached the event store, a 500)
    source = Text(
        100,
        allow_none=False,
        load_default="api",
        metadata={"description": "where it was given: web_form, call, import, …"},
    )
    legal_basis = fields.String(load_default="consent", validate=validate.OneOf(LEGAL_BASES))
    at = fields.AwareDateTime(
        load_default=None, metadata={"description": "when it was given (default: now); not in the future"}
    )

    @validates("at")
    def _not_in_the_future(self, value: Any, **_: Any) -> None:
        if value is not None and value > clock.now() + timedelta(minutes=5):
            raise ValidationError("cannot be in the future")


class ConsentView(Schema):
    status = fields.String()
    source = fields.String(
        allow_none=True, metadata={"description": "null on decisions recorded before a blank source was refused"}
    )
    legal_basis = fields.String()
    at = fields.String()


class ConsentsView(Schema):
    contact_id = fields.String()
    consents = fields.Dict(
        keys=fields.String(metadata={"enum": list(CHANNELS)}),
        values=fields.Nested(ConsentView),
        metadata={"description": "the latest decision per channel (a channel never decided on is absent)"},
    )


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
    last_purchase_at = fields.String(
        dump_only=True, allow_none=True, metadata={"description": "the newest won deal (lifecycle automation)"}
    )
    at_risk = fields.Boolean(
        dump_only=True, metadata={"description": "a customer without a won deal for CRM_AT_RISK_AFTER_DAYS"}
    )
    at_risk_since = fields.String(dump_only=True, allow_none=True)
    win_backs = fields.Integer(dump_only=True, metadata={"description": "times won back from churned"})
    verified_at = fields.String(
        dump_only=True,
        allow_none=True,
        metadata={
            "description": "when the details were last confirmed: by staff (POST /v1/contacts/{id}/verify), by the "
            "person (the confirmation link), or given with the create; null: not since the creation, "
            "which counts as a confirmation (created_at)"
        },
    )
    verified_by = fields.String(
        dump_only=True,
        allow_none=True,
        metadata={
            "description": "who confirmed them last: user:<name> or contact:<id>; null: nobody since the creation"
        },
    )
    stale = fields.Boolean(
        dump_only=True,
        metadata={
            "description": "not confirmed within CRM_CONTACTS_STALE_AFTER_DAYS (per stage: _BY_STAGE); cleared by a "
            "confirmation"
        },
    )
    stale_since = fields.String(
        dump_only=True,
        allow_none=True,
        metadata={"description": "when it crossed the line (last confirmation + the threshold)"},
    )
    derived = fields.Dict(
        dump_only=True,
        metadata={"description": "values other services derive (tier, clv, …): lists only, eventually consistent"},
    )
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class ContactListQuery(PageQuery):
    q = fields.String(
        validate=validate.Length(max=200), metadata={"description": "words that start a name, email or phone"}
    )
    lifecycle_stage = fields.String(validate=validate.OneOf(LIFECYCLE_STAGES))
    company_id = fields.String(validate=validate.Length(max=64))
    tag = fields.String(validate=validate.Length(max=64))
    owner = fields.String(validate=validate.Length(max=100))
    team = fields.String(
        validate=validate.Length(max=TEAM_MAX),
        metadata={
            "description": (
                "only this team's contacts; a team-scoped caller sees only its own team's, "
                "so another gives an empty page"
            )
        },
    )
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
    name = Text(200, allow_none=False)  # a company keeps a name: a PATCH may change it, never clear it
    domain = Domain()
    industry = Text(100)
    size = fields.String(allow_none=True, validate=validate.OneOf(["1-10", "11-50", "51-200", "201-1000", "1001+"]))
    phone = Phone()
    website = Website()
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


class Section(Schema):
    """What another service said about the contact, or why it could not say (its fields as its gRPC reply's)."""

    class Meta:
        unknown = INCLUDE  # the reply's own fields (apispec: additionalProperties)

    status = fields.String(required=True, metadata={"enum": ["available", "unavailable"]})
    reason = fields.String(metadata={"description": "why it is unavailable: timed out, unavailable, ..."})


class StageChange(Schema):
    time = fields.DateTime()
    from_ = fields.String(data_key="from", allow_none=True)
    to = fields.String()
    actor = fields.String()


class Customer360View(Schema):
    contact = fields.Nested(ContactView)
    value = fields.Nested(Section, metadata={"description": "sales: lifetime value, open deals"})
    support = fields.Nested(Section, metadata={"description": "service desk: open tickets, satisfaction"})
    messages = fields.Nested(Section, metadata={"description": "messaging: the latest messages"})
    lifecycle_timeline = fields.List(fields.Nested(StageChange))
