"""Request and response shapes of the messaging REST API (marshmallow; they also feed OpenAPI)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

from crm_messaging.domain import CATEGORIES, CHANNELS, MESSAGE_STATUSES, subject_problem
from crmkit.web import PageQuery
from crmkit.web.periods import check_period

LOCALE = validate.Regexp(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", error="a BCP 47 locale such as fa-IR")
ID = validate.Regexp(r"^[A-Za-z0-9:._-]{1,128}$", error="not an id")


class Strict(Schema):
    class Meta:
        unknown = RAISE


def one_line(value: str | None) -> None:
    """A subject is one header line (`domain.subject_problem`)."""
    problem = subject_problem(value) if value else None
    if problem:
        raise ValidationError(problem)


# RFC 5322's line limit, and the default cap on a rendered subject (CRM_MESSAGING_MAX_SUBJECT_BYTES)
SUBJECT_MAX = 998
SUBJECT: list[Callable[[Any], Any]] = [validate.Length(max=SUBJECT_MAX), one_line]
# one_line for the document (no C0/C1 control character, no line or paragraph separator), and the cap
ONE_LINE = {
    "pattern": r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$",
    "description": f"one line, at most {SUBJECT_MAX} characters; rendered, at most {SUBJECT_MAX} bytes of "
    "UTF-8 (CRM_MESSAGING_MAX_SUBJECT_BYTES): a non-ASCII letter takes 2 to 4",
}


def Text(max_length: int, **kwargs: Any) -> fields.String:  # noqa: N802 - reads like a field type
    return fields.String(validate=validate.Length(min=1, max=max_length), **kwargs)


class Variant(Strict):
    # one line too, checked with the template (`commands._check_variants`), so that the
    # error names `variants.<locale>.subject` rather than marshmallow's `variants.<locale>.value.subject`
    subject = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=SUBJECT_MAX), metadata=ONE_LINE
    )
    body = Text(20_000, required=True)


# A variable's value, as the document states it: text (up to 5000 characters), a number, a boolean or null
SCALAR: dict[str, Any] = {
    "nullable": True,
    "anyOf": [{"type": "string", "maxLength": 5000}, {"type": "number"}, {"type": "boolean"}],
}


# any text
FILTER_VALUE = {**SCALAR, "anyOf": [{"type": "string"}, *SCALAR["anyOf"][1:]]}


class Variables(fields.Dict):
    def __init__(self, **kwargs: Any) -> None:
        kwargs["metadata"] = {
            "maxProperties": 100,
            "additionalProperties": SCALAR,
            "description": "name (a letter, then letters, digits or _; up to 64) → value",
            **kwargs.get("metadata", {}),
        }
        super().__init__(
            keys=fields.String(validate=validate.Regexp(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")), load_default=dict, **kwargs
        )

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        loaded = super()._deserialize(value, attr, data, **kwargs)
        if len(loaded) > 100:
            raise ValidationError("at most 100 variables")
        for key, item in loaded.items():
            if not (item is None or isinstance(item, str | int | float | bool)):
                raise ValidationError(f"{key}: values must be text, numbers, booleans or null")
            if isinstance(item, str) and len(item) > 5000:
                raise ValidationError(f"{key}: at most 5000 characters")
        return loaded


VARIANTS = {"minProperties": 1, "maxProperties": 50, "description": "locale (BCP 47, e.g. fa-IR) → subject and body"}


class TemplateInput(Strict):
    name = Text(200, required=True)
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    category = fields.String(load_default="marketing", validate=validate.OneOf(CATEGORIES))
    default_locale = fields.String(required=True, validate=LOCALE)
    variants = fields.Dict(
        keys=fields.String(validate=LOCALE),
        values=fields.Nested(Variant),
        required=True,
        validate=validate.Length(min=1, max=50),
        metadata=VARIANTS,
    )


class TemplatePatch(Strict):
    name = Text(200)
    category = fields.String(validate=validate.OneOf(CATEGORIES))
    default_locale = fields.String(validate=LOCALE)
    variants = fields.Dict(
        keys=fields.String(validate=LOCALE),
        values=fields.Nested(Variant),
        validate=validate.Length(min=1, max=50),
        metadata=VARIANTS,
    )


class VariantView(Schema):
    subject = fields.String(allow_none=True, metadata={"description": "null for channels without one (sms, fax)"})
    body = fields.String()


class TemplateView(Schema):
    id = fields.String()
    version = fields.Integer()
    name = fields.String()
    channel = fields.String(metadata={"enum": list(CHANNELS)})
    category = fields.String(metadata={"enum": list(CATEGORIES)})
    default_locale = fields.String()
    variants = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(VariantView),
        metadata={"description": "locale → subject and body (Jinja2)"},
    )
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class PreviewView(Schema):
    locale = fields.String(metadata={"description": "the variant rendered (the template's, or the one asked for)"})
    subject = fields.String(allow_none=True)
    body = fields.String(allow_none=True)


class TemplateListQuery(PageQuery):
    channel = fields.String(validate=validate.OneOf(CHANNELS))


class PreviewInput(Strict):
    OPENAPI = {"anyOf": [{"required": ["template_id"]}, {"required": ["body"]}]}  # _one_source, below

    template_id = fields.String(validate=ID)
    subject = fields.String(allow_none=True, validate=SUBJECT, metadata=ONE_LINE)
    body = Text(20_000)
    locale = fields.String(load_default=None, validate=LOCALE)
    contact_id = fields.String(load_default=None, validate=ID)
    variables = Variables()

    @validates_schema
    def _one_source(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("template_id") and not data.get("body"):
            raise ValidationError("give a template_id, or a body (and subject) to try", "body")


class MessageInput(Strict):
    # _one_source, below: a template_id and no body or (non-empty) subject, or a body and no template_id
    OPENAPI = {
        "anyOf": [
            {
                "required": ["template_id"],
                "not": {
                    "anyOf": [
                        {"required": ["body"]},
                        {"required": ["subject"], "properties": {"subject": {"type": "string", "minLength": 1}}},
                    ]
                },
            },
            {"required": ["body"], "not": {"required": ["template_id"]}},
        ]
    }

    contact_id = fields.String(required=True, validate=ID)
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    template_id = fields.String(validate=ID)
    subject = fields.String(allow_none=True, validate=SUBJECT, metadata=ONE_LINE)
    body = Text(20_000)
    category = fields.String(validate=validate.OneOf(CATEGORIES))
    variables = Variables()

    @validates_schema
    def _one_source(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("template_id") and (data.get("body") or data.get("subject")):
            raise ValidationError("give a template_id or a subject/body, not both", "template_id")
        if not data.get("template_id") and not data.get("body"):
            raise ValidationError("required without template_id", "body")


class MessageView(Schema):
    """A message; a list's items leave out what is personal (subject, body, variables, address)."""

    id = fields.String()
    version = fields.Integer()
    contact_id = fields.String()
    channel = fields.String(metadata={"enum": list(CHANNELS)})
    category = fields.String(metadata={"enum": list(CATEGORIES)})
    status = fields.String(metadata={"enum": list(MESSAGE_STATUSES)})
    reason = fields.String(
        allow_none=True,
        metadata={"description": "why it was suppressed or failed, or the last transient error while it waits"},
    )
    template_id = fields.String(allow_none=True)
    campaign_id = fields.String(allow_none=True)
    trigger_id = fields.String(allow_none=True)
    subject = fields.String(allow_none=True, metadata={"description": "null once the contact is erased"})
    body = fields.String(allow_none=True, metadata={"description": "null once the contact is erased"})
    variables = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(allow_none=True),
        metadata={"description": "the send call's variables ({} once the contact is erased)"},
    )
    address = fields.String(
        allow_none=True, metadata={"description": "where it went; null until sent, and once the contact is erased"}
    )
    attempts = fields.Integer()
    next_attempt_at = fields.DateTime(allow_none=True)
    provider = fields.String(allow_none=True)
    provider_message_id = fields.String(allow_none=True)
    queued_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)
    delivered_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class MessageListQuery(PageQuery):
    contact_id = fields.String(validate=ID)
    campaign_id = fields.String(validate=ID)
    status = fields.String(validate=validate.OneOf(MESSAGE_STATUSES))
    channel = fields.String(validate=validate.OneOf(CHANNELS))


class ReceiptInput(Strict):
    OPENAPI = {"anyOf": [{"required": ["message_id"]}, {"required": ["provider_message_id"]}]}  # _which, below

    message_id = fields.String(validate=ID)
    provider_message_id = fields.String(validate=validate.Length(min=1, max=300))
    status = fields.String(
        required=True,
        validate=validate.OneOf(("delivered", "failed", "bounced", "complained")),
        metadata={
            "description": "bounced (a hard bounce: the message fails, bounced) and "
            "complained (the recipient reported it as spam) also suppress "
            "later sends to the address it went to"
        },
    )
    reason = fields.String(validate=validate.Length(max=300))
    at = fields.AwareDateTime()

    @validates_schema
    def _which(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("message_id") and not data.get("provider_message_id"):
            raise ValidationError("give message_id (our reference) or provider_message_id", "message_id")


class CampaignInput(Strict):
    name = Text(200, required=True)
    segment_id = fields.String(required=True, validate=ID)
    template_id = fields.String(required=True, validate=ID)
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    throttle_per_minute = fields.Integer(load_default=600, validate=validate.Range(1, 100_000))


class LaunchInput(Strict):
    scheduled_at = fields.AwareDateTime(load_default=None)


CAMPAIGN_STATUSES = ("draft", "running", "paused", "completed", "cancelled")


class CampaignStats(Schema):
    targeted = fields.Integer(metadata={"description": "segment members when it was expanded (0 before)"})
    queued = fields.Integer()
    suppressed = fields.Integer()
    sent = fields.Integer(metadata={"description": "delivered ones included"})
    delivered = fields.Integer()
    failed = fields.Integer(metadata={"description": "bounced ones included"})
    progress = fields.Float(metadata={"description": "decided (suppressed, sent, failed) / targeted, 0 to 1"})


class CampaignView(Schema):
    """A campaign; one read alone (not a list's items) carries `stats`."""

    id = fields.String()
    version = fields.Integer()
    name = fields.String()
    segment_id = fields.String()
    template_id = fields.String()
    channel = fields.String(metadata={"enum": list(CHANNELS)})
    throttle_per_minute = fields.Integer()
    status = fields.String(metadata={"enum": list(CAMPAIGN_STATUSES)})
    scheduled_at = fields.DateTime(allow_none=True)
    launched_at = fields.DateTime(allow_none=True)
    targeted = fields.Integer(allow_none=True)
    completed_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    stats = fields.Nested(
        CampaignStats,
        allow_none=True,
        metadata={
            "description": "its messages now, from the messages read model; null with `as_of` (counts are not kept by "
            "time)"
        },
    )


class CampaignListQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(CAMPAIGN_STATUSES))


class TriggerInput(Strict):
    name = Text(200, required=True)
    event_type = fields.String(
        required=True,
        validate=validate.Regexp(r"^crm\.[a-z]+\.[A-Za-z]+\.v[0-9]+$", error="crm.<service>.<EventName>.v<N>"),
    )
    filter = fields.Dict(
        keys=fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_.]{1,100}$")),
        load_default=dict,
        validate=validate.Length(max=20),
        metadata={
            "maxProperties": 20,
            "additionalProperties": FILTER_VALUE,
            "description": "dotted path in the event's data (letters, digits, _ and .; up to 100) → "
            "the value it must equal",
        },
    )
    template_id = fields.String(required=True, validate=ID)
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    variables = Variables()
    enabled = fields.Boolean(load_default=True)

    @validates("filter")
    def _scalars(self, value: dict[str, Any], **_: Any) -> None:
        if any(not (v is None or isinstance(v, str | int | float | bool)) for v in value.values()):
            raise ValidationError("filter values are compared for equality: text, numbers, booleans or null")


class TriggerPatch(Strict):
    enabled = fields.Boolean(required=True)


class TriggerView(Schema):
    id = fields.String()
    version = fields.Integer()
    name = fields.String()
    event_type = fields.String()
    filter = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(allow_none=True),
        metadata={"description": "dotted path in the event's data → the value it must equal"},
    )
    template_id = fields.String()
    channel = fields.String(metadata={"enum": list(CHANNELS)})
    variables = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True))
    enabled = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


# --- proof of consent per send (docs/messaging.md, "Proof of consent") ------------------------

CONSENT_REASONS = ["no_consent_recorded", "consent_withdrawn", "no_address", "contact_erased", "contact_not_found"]


class ConsentProofView(Schema):
    """The consent decision a send or suppression relied on: contacts' CheckConsent answer."""

    contact_id = fields.String(metadata={"description": "the contact that answered (the survivor of a merge)"})
    granted = fields.Boolean()
    reason = fields.String(
        allow_none=True, metadata={"enum": [*CONSENT_REASONS, None], "description": "null when granted"}
    )
    status = fields.String(
        allow_none=True,
        metadata={
            "enum": ["granted", "withdrawn", None],
            "description": "the recorded decision; null when none is recorded",
        },
    )
    legal_basis = fields.String(allow_none=True, metadata={"description": "consent, contract, legitimate_interests, …"})
    source = fields.String(allow_none=True, metadata={"description": "where the consent was collected (web_form, …)"})
    decided_at = fields.DateTime(allow_none=True, metadata={"description": "when the person gave or withdrew it"})
    event_id = fields.String(
        allow_none=True, metadata={"description": "the contact's ContactConsentChanged event the decision rests on"}
    )
    event_version = fields.Integer(
        allow_none=True, metadata={"description": "that event's version in the contact's stream"}
    )
    checked_at = fields.DateTime(metadata={"description": "when messaging asked: the send or suppression time"})


class MessageConsentView(Schema):
    message_id = fields.String()
    contact_id = fields.String()
    channel = fields.String(metadata={"enum": list(CHANNELS)})
    status = fields.String(metadata={"enum": list(MESSAGE_STATUSES)})
    consent = fields.Nested(
        ConsentProofView,
        allow_none=True,
        metadata={
            "description": "null while the message waits, or when no consent was asked (its campaign was cancelled, "
            "or it was decided before proofs were kept)"
        },
    )


class ConsentReportQuery(Schema):
    from_ = fields.Date(required=True, data_key="from", metadata={"description": "first UTC day (included)"})
    to = fields.Date(required=True, metadata={"description": "last UTC day (included)"})

    @validates_schema
    def _ordered(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("from_") and data.get("to") and data["from_"] > data["to"]:
            raise ValidationError({"to": ["must not be before `from`"]})
        check_period(data.get("from_"), data.get("to"))


class LegalBasisCount(Schema):
    legal_basis = fields.String(allow_none=True, metadata={"description": "null: no consent was recorded"})
    sent = fields.Integer()
    suppressed = fields.Integer()


class SourceCount(Schema):
    source = fields.String(allow_none=True, metadata={"description": "null: no consent was recorded"})
    sent = fields.Integer()
    suppressed = fields.Integer()


class ReasonCount(Schema):
    reason = fields.String(metadata={"enum": CONSENT_REASONS})
    suppressed = fields.Integer()


class ConsentProofReport(Schema):
    from_ = fields.Date(data_key="from")
    to = fields.Date()
    sent = fields.Integer(metadata={"description": "messages sent on a granted consent checked in the period"})
    suppressed = fields.Integer(metadata={"description": "messages a consent answer stopped in the period"})
    by_legal_basis = fields.List(fields.Nested(LegalBasisCount))
    by_source = fields.List(fields.Nested(SourceCount))
    by_reason = fields.List(fields.Nested(ReasonCount))
