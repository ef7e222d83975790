"""Every event the messaging service emits: meaning, JSON Schema of `data`, an example.

`make catalogue` turns this into docs/events/; with CRM_STRICT_EVENTS=1 (tests) the
event store refuses anything not described here (docs/events-versioning.md). A
message's personal data (`domain.PERSONAL_DATA`: the call's variables, explicit or
rendered subject and body, the address) is sealed with the message's own key, which
is deleted when the contact is erased. The consent proof a send or suppression carries
(`consent`) is not personal: it stays readable after an erasure, as evidence must.
"""

from __future__ import annotations

from typing import Any

from crm_messaging.domain import CATEGORIES, CHANNELS, PERSONAL_DATA
from crm_messaging.suppressions import SUPPRESSION_EVENTS
from crmkit.catalogue import Catalogue, EventType

ID = {"type": "string", "minLength": 1}
OPTIONAL_ID = {"type": ["string", "null"], "minLength": 1}
TEXT = {"type": "string", "minLength": 1}
OPTIONAL_TEXT = {"type": ["string", "null"]}
TIME = {"type": "string", "format": "date-time"}
CHANNEL = {"enum": list(CHANNELS)}
CATEGORY = {"enum": list(CATEGORIES)}
LOCALE = {"type": "string", "pattern": "^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"}
SCALAR = {"type": ["string", "number", "boolean", "null"]}
VARIABLES = {"type": "object", "additionalProperties": SCALAR,
             "description": "template variables given with the send (or taken from the triggering event)"}
VARIANTS = {
    "type": "object", "minProperties": 1, "propertyNames": LOCALE,
    "additionalProperties": {"type": "object", "required": ["subject", "body"], "additionalProperties": False,
                             "properties": {"subject": OPTIONAL_TEXT, "body": TEXT}},
    "description": "subject and body (Jinja templates) per locale",
}
REASON = {"type": "string", "minLength": 1, "maxLength": 300}
OPTIONAL_TIME = {"type": ["string", "null"], "format": "date-time"}
CONSENT_PROOF = {
    "type": "object", "additionalProperties": False,
    "required": ["contact_id", "granted", "reason", "status", "legal_basis", "source", "decided_at", "event_id",
                 "event_version", "checked_at"],
    "description": "the consent decision the send or suppression relied on: what the contacts service's "
                   "CheckConsent answered at `checked_at` (not personal: stays readable after erasure)",
    "properties": {
        "contact_id": {**ID, "description": "the contact that answered (the survivor when the message's was merged)"},
        "granted": {"type": "boolean"},
        "reason": {"type": ["string", "null"], "description": "why not: no_consent_recorded, consent_withdrawn, "
                   "no_address, contact_erased, contact_not_found; null when granted"},
        "status": {"enum": ["granted", "withdrawn", None], "description": "the recorded decision; null when none"},
        "legal_basis": {"type": ["string", "null"], "description": "consent, contract, legitimate_interests, …"},
        "source": {"type": ["string", "null"], "description": "where the consent was collected (a label such as "
                   "web_form, import or unsubscribe_link)"},
        "decided_at": {**OPTIONAL_TIME, "description": "when the person gave or withdrew it"},
        "event_id": {**OPTIONAL_ID, "description": "the contact's crm.contacts.ContactConsentChanged event it rests "
                     "on; null when none is recorded"},
        "event_version": {"type": ["integer", "null"], "minimum": 1,
                          "description": "that event's version in the contact's stream (its streamversion)"},
        "checked_at": {**TIME, "description": "when messaging asked (the send or suppression time)"},
    },
}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties}


def _campaign(name: str, description: str) -> EventType:
    return EventType(name, 1, "campaign", description, _object(["campaign_id"], {"campaign_id": ID}),
                     {"campaign_id": "01c3…"})


def _trigger(name: str, description: str) -> EventType:
    return EventType(name, 1, "trigger", description, _object(["trigger_id"], {"trigger_id": ID}),
                     {"trigger_id": "trg-deal-won-welcome"})


TEMPLATE_FIELDS: dict[str, Any] = {"name": TEXT, "category": CATEGORY, "default_locale": LOCALE, "variants": VARIANTS}

EVENTS = Catalogue("messaging", "Messaging", [
    EventType(
        "MessageQueued", 1, "message",
        "A message to a contact was accepted for sending (a template, or an explicit subject and body); the "
        "worker checks consent and quiet hours before it goes out.",
        _object(["message_id", "contact_id", "channel", "category", "template_id", "campaign_id", "trigger_id",
                 "subject", "body", "variables", "queued_at"], {
            "message_id": ID, "contact_id": ID, "channel": CHANNEL, "category": CATEGORY,
            "template_id": OPTIONAL_ID, "campaign_id": OPTIONAL_ID, "trigger_id": OPTIONAL_ID,
            "subject": OPTIONAL_TEXT, "body": OPTIONAL_TEXT, "variables": VARIABLES, "queued_at": TIME}),
        {"message_id": "01c1…", "contact_id": "01a2…", "channel": "email", "category": "transactional",
         "template_id": "tpl-welcome", "campaign_id": None, "trigger_id": "trg-deal-won-welcome", "subject": None,
         "body": None, "variables": {"deal_id": "01b2…", "amount": "13080.00"},
         "queued_at": "2026-12-20T08:00:00.120Z"},
        personal=PERSONAL_DATA["MessageQueued"],
    ),
    EventType(
        "MessageSuppressed", 1, "message",
        "The message will not be sent: no consent for the channel (the reason contacts gave), the contact is "
        "gone (`contact_not_found`), its campaign was cancelled (`campaign_cancelled`), or the address contacts "
        "gave bounced or was complained about (`address_bounced`, `address_complained`: AddressSuppressed). "
        "`consent` is the "
        "consent decision that stopped it (absent when none was asked: a cancelled campaign, or recorded before "
        "proofs were kept).",
        _object(["message_id", "contact_id", "reason"], {"message_id": ID, "contact_id": ID, "reason": TEXT,
                                                         "consent": CONSENT_PROOF}),
        {"message_id": "01c1…", "contact_id": "01a2…", "reason": "consent_withdrawn",
         "consent": {"contact_id": "01a2…", "granted": False, "reason": "consent_withdrawn", "status": "withdrawn",
                     "legal_basis": "consent", "source": "unsubscribe_link", "decided_at": "2026-12-18T21:04:00.000Z",
                     "event_id": "01a9…", "event_version": 7, "checked_at": "2026-12-20T08:00:01.000Z"}},
    ),
    EventType(
        "MessageRetryScheduled", 1, "message",
        "Sending failed for a passing reason (provider or contacts unavailable); attempt `attempt` will be "
        "retried at `retry_at`.",
        _object(["message_id", "attempt", "error", "retry_at"], {
            "message_id": ID, "attempt": {"type": "integer", "minimum": 1}, "error": {"type": "string",
                                                                                  "maxLength": 300},
            "retry_at": TIME}),
        {"message_id": "01c1…", "attempt": 1, "error": "smtp: connection refused", "retry_at":
         "2026-12-20T08:00:30.120Z"},
    ),
    EventType(
        "MessageSent", 1, "message",
        "The provider accepted the message: what was rendered and the address it went to, and (`consent`) the "
        "consent decision it went out on (absent on sends recorded before proofs were kept).",
        _object(["message_id", "contact_id", "channel", "provider", "provider_message_id", "address", "subject",
                 "body", "attempt", "sent_at"], {
            "message_id": ID, "contact_id": ID, "channel": CHANNEL, "provider": TEXT, "provider_message_id": TEXT,
            "address": {"type": "string"}, "subject": OPTIONAL_TEXT, "body": {"type": "string"},
            "attempt": {"type": "integer", "minimum": 1}, "sent_at": TIME, "consent": CONSENT_PROOF}),
        {"message_id": "01c1…", "contact_id": "01a2…", "channel": "email", "provider": "smtp",
         "provider_message_id": "<01c1…@crm.example>", "address": "ali@example.com",
         "subject": "Welcome aboard, Ali", "body": "Hello Ali Rezaei, …", "attempt": 1,
         "sent_at": "2026-12-20T08:00:01.000Z",
         "consent": {"contact_id": "01a2…", "granted": True, "reason": None, "status": "granted",
                     "legal_basis": "contract", "source": "web_form", "decided_at": "2026-11-26T08:00:00.000Z",
                     "event_id": "01a8…", "event_version": 3, "checked_at": "2026-12-20T08:00:01.000Z"}},
        personal=PERSONAL_DATA["MessageSent"],
    ),
    EventType(
        "MessageDelivered", 1, "message", "The provider reported the message delivered.",
        _object(["message_id", "contact_id", "provider", "delivered_at"], {
            "message_id": ID, "contact_id": ID, "provider": TEXT, "delivered_at": TIME}),
        {"message_id": "01c1…", "contact_id": "01a2…", "provider": "smtp", "delivered_at": "2026-12-20T08:00:03.000Z"},
    ),
    EventType(
        "MessageContactChanged", 1, "message",
        "The message now shows on another contact: its contact was merged into `to` (`merge_id` names the "
        "contacts service's ContactMerged, also the envelope's causationid), or that merge was reversed "
        "(`contact_unmerged`: back to the duplicate `to`). What was sent, and to which address, stays as it was.",
        _object(["message_id", "from", "to", "reason"], {
            "message_id": ID, "from": ID, "to": ID, "reason": {"enum": ["contact_merged", "contact_unmerged"]},
            "merge_id": {**ID, "description": "the ContactMerged event that caused the move (or whose reversal did)"}}),
        {"message_id": "01c1…", "from": "01a3…", "to": "01a2…", "reason": "contact_merged", "merge_id": "01c9…"},
    ),
    EventType(
        "MessageFailed", 1, "message",
        "The message could not be sent (permanent error, template error, attempts exhausted) or, with `bounced`, "
        "the provider reported it undeliverable after sending.",
        _object(["message_id", "contact_id", "reason", "failed_at"], {
            "message_id": ID, "contact_id": ID, "reason": REASON, "failed_at": TIME,
            "bounced": {"const": True, "description": "present (true) when a receipt reported a bounce"}}),
        {"message_id": "01c1…", "contact_id": "01a2…", "reason": "mailbox unavailable",
         "failed_at": "2026-12-20T08:05:00.000Z", "bounced": True},
    ),
    EventType(
        "TemplateDefined", 1, "template", "A message template for one channel was defined, with a variant per locale.",
        _object(["template_id", "name", "channel", "category", "default_locale", "variants"], {
            "template_id": ID, "channel": CHANNEL, **TEMPLATE_FIELDS}),
        {"template_id": "tpl-welcome", "name": "Welcome (deal won)", "channel": "email",
         "category": "transactional", "default_locale": "en",
         "variants": {"en": {"subject": "Welcome aboard, {{ first_name or 'friend' }}",
                             "body": "Hello {{ name or 'there' }}, …"}}},
    ),
    EventType(
        "TemplateUpdated", 1, "template", "Fields of a template changed; `changes` holds the new values.",
        _object(["template_id", "changes"], {"template_id": ID, "changes": {
            "type": "object", "additionalProperties": False, "properties": TEMPLATE_FIELDS, "minProperties": 1}}),
        {"template_id": "tpl-welcome", "changes": {"default_locale": "fa"}},
    ),
    EventType(
        "CampaignCreated", 1, "campaign", "A campaign (a template to a segment's members) was drafted.",
        _object(["campaign_id", "name", "segment_id", "template_id", "channel", "throttle_per_minute"], {
            "campaign_id": ID, "name": TEXT, "segment_id": ID, "template_id": ID, "channel": CHANNEL,
            "throttle_per_minute": {"type": "integer", "minimum": 1, "maximum": 100_000}}),
        {"campaign_id": "01c3…", "name": "Winter offer", "segment_id": "01a5…", "template_id": "01c2…",
         "channel": "email", "throttle_per_minute": 600},
    ),
    EventType(
        "CampaignLaunched", 1, "campaign",
        "The campaign was launched: its messages are queued at `scheduled_at` (now, or a later time).",
        _object(["campaign_id", "segment_id", "template_id", "channel", "scheduled_at", "launched_at"], {
            "campaign_id": ID, "segment_id": ID, "template_id": ID, "channel": CHANNEL, "scheduled_at": TIME,
            "launched_at": TIME}),
        {"campaign_id": "01c3…", "segment_id": "01a5…", "template_id": "01c2…", "channel": "email",
         "scheduled_at": "2026-12-01T08:00:00.000Z", "launched_at": "2026-11-30T15:00:00.000Z"},
    ),
    EventType(
        "CampaignTargeted", 1, "campaign", "The campaign's segment was expanded: one message queued per member.",
        _object(["campaign_id", "targeted"], {"campaign_id": ID, "targeted": {"type": "integer", "minimum": 0}}),
        {"campaign_id": "01c3…", "targeted": 1250},
    ),
    _campaign("CampaignPaused", "The running campaign was paused: its queued messages wait."),
    _campaign("CampaignResumed", "The paused campaign runs again."),
    _campaign("CampaignCancelled", "The campaign was cancelled: its messages not yet sent are suppressed."),
    EventType(
        "CampaignCompleted", 1, "campaign", "Every message of the running campaign was decided (sent, suppressed, "
        "failed).",
        _object(["campaign_id", "completed_at"], {"campaign_id": ID, "completed_at": TIME}),
        {"campaign_id": "01c3…", "completed_at": "2026-12-01T09:12:00.000Z"},
    ),
    EventType(
        "TriggerDefined", 1, "trigger",
        "A trigger was defined: when an event of `event_type` whose data matches `filter` happens, the template "
        "is sent to the event's contact.",
        _object(["trigger_id", "name", "event_type", "filter", "template_id", "channel", "variables", "enabled"], {
            "trigger_id": ID, "name": TEXT,
            "event_type": {"type": "string", "pattern": r"^crm\.[a-z]+\.[A-Za-z]+\.v[0-9]+$"},
            "filter": {"type": "object", "additionalProperties": SCALAR,
                       "description": "dotted paths into the event's data and the values they must equal"},
            "template_id": ID, "channel": CHANNEL,
            "variables": {**VARIABLES, "description": "template variables added to the event's own"},
            "enabled": {"type": "boolean"}}),
        {"trigger_id": "trg-deal-won-welcome", "name": "Deal won → welcome", "event_type": "crm.sales.DealWon.v1",
         "filter": {}, "template_id": "tpl-welcome", "channel": "email", "variables": {}, "enabled": True},
    ),
    _trigger("TriggerEnabled", "The trigger fires again."),
    _trigger("TriggerDisabled", "The trigger no longer fires."),
    *SUPPRESSION_EVENTS,  # bounced and complained addresses (suppressions.py)
])
