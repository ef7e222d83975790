"""Messages, templates, campaigns and triggers: aggregates that decide, plus pure rules
(back-off schedule, quiet hours). No I/O here.

A message's life: queued → suppressed (no consent, cancelled campaign) | sent → delivered
| failed. Transient provider failures record `MessageRetryScheduled` and stay queued until
the attempt cap, then `MessageFailed`. Every transition checks the current state, and
the repository appends with the expected version, so a redelivered job or a second
worker can never record a second send.

Each aggregate declares its events (crmkit.domainevents): the catalogue's schemas and the
personal fields follow from the dataclasses; what the hints cannot say (a consent proof, a
template's variants, free-form variables) is given once here as JSON Schema.
"""

from __future__ import annotations

import functools
import unicodedata
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crmkit.aggregate import Aggregate
from crmkit.domainevents import DomainEvent, json_schema, personal_fields, spec
from crmkit.errors import Conflict

CHANNELS = ("email", "sms", "fax")
CATEGORIES = ("marketing", "transactional")
MESSAGE_STATUSES = ("queued", "suppressed", "sent", "delivered", "failed", "bounced")
FINAL = ("suppressed", "delivered", "failed", "bounced")

# JSON shapes the events' type hints cannot say.
LOCALE = {"type": "string", "pattern": "^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"}
SCALAR = {"type": ["string", "number", "boolean", "null"]}
VARIABLES = {
    "type": "object",
    "additionalProperties": SCALAR,
    "description": "template variables given with the send (or taken from the triggering event)",
}
VARIANTS = {
    "type": "object",
    "minProperties": 1,
    "propertyNames": LOCALE,
    "additionalProperties": {
        "type": "object",
        "required": ["subject", "body"],
        "additionalProperties": False,
        "properties": {"subject": {"type": ["string", "null"]}, "body": {"type": "string", "minLength": 1}},
    },
    "description": "subject and body (Jinja templates) per locale",
}
CONSENT_PROOF = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "contact_id",
        "granted",
        "reason",
        "status",
        "legal_basis",
        "source",
        "decided_at",
        "event_id",
        "event_version",
        "checked_at",
    ],
    "description": "the consent decision the send or suppression relied on: what the contacts service's "
    "CheckConsent answered at `checked_at` (not personal: stays readable after erasure)",
    "properties": {
        "contact_id": {
            "type": "string",
            "minLength": 1,
            "description": "the contact that answered (the survivor when the message's was merged)",
        },
        "granted": {"type": "boolean"},
        "reason": {
            "type": ["string", "null"],
            "description": "why not: no_consent_recorded, consent_withdrawn, "
            "no_address, contact_erased, contact_not_found; null when granted",
        },
        "status": {"enum": ["granted", "withdrawn", None], "description": "the recorded decision; null when none"},
        "legal_basis": {"type": ["string", "null"], "description": "consent, contract, legitimate_interests, …"},
        "source": {
            "type": ["string", "null"],
            "description": "where the consent was collected (a label such as web_form, import or unsubscribe_link)",
        },
        "decided_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "when the person gave or withdrew it",
        },
        "event_id": {
            "type": ["string", "null"],
            "minLength": 1,
            "description": "the contact's "
            "crm.contacts.ContactConsentChanged event it rests on; null when none is recorded",
        },
        "event_version": {
            "type": ["integer", "null"],
            "minimum": 1,
            "description": "that event's version in the contact's stream (its streamversion)",
        },
        "checked_at": {
            "type": "string",
            "format": "date-time",
            "description": "when messaging asked (the send or suppression time)",
        },
    },
}


# --- pure rules ------------------------------------------------------------------------

# What a subject may not carry: control characters (Cc: CR, LF, tab, NUL, NEL…), the line
# and paragraph separators U+2028/U+2029, and lone surrogates (no encoding can write them).
NOT_IN_A_SUBJECT = frozenset({"Cc", "Zl", "Zp", "Cs"})


def subject_problem(subject: str) -> str | None:
    """Why `subject` cannot be a subject line, or None when it can.

    A subject is one header line: a line break in it would end the header (and could start
    another, say a Bcc), so mail composers refuse it. Checked on what is saved (messages,
    templates) and again on what a template renders, since a variable can bring one in.
    """
    found = sorted({f"U+{ord(c):04X}" for c in subject if unicodedata.category(c) in NOT_IN_A_SUBJECT})
    if not found:
        return None
    return f"must be one line without control characters (found {', '.join(found[:5])})"


def backoff(attempt: int, base: float = 30.0, cap: float = 3600.0) -> timedelta:
    """Delay before retry number `attempt` (1-based): base·2^(attempt-1), at most `cap`."""
    return timedelta(seconds=min(cap, base * 2 ** max(attempt - 1, 0)))


def parse_window(text: str) -> tuple[time, time] | None:
    """ "21:00-08:00" → (21:00, 08:00); "" or "off" → None."""
    if not text or text.strip().lower() in ("off", "none"):
        return None
    start, _, end = text.partition("-")
    return time.fromisoformat(start.strip()), time.fromisoformat(end.strip())


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def quiet_until(now: datetime, time_zone: str | None, window: tuple[time, time] | None) -> datetime | None:
    """When the quiet window the contact's local time falls in ends (UTC), or None when not quiet.

    The window is in the contact's wall-clock time and may wrap midnight (21:00-08:00).
    """
    if window is None:
        return None
    start, end = window
    local = now.astimezone(zone(time_zone))
    clock = local.time().replace(tzinfo=None)
    wraps = start > end
    quiet = (clock >= start or clock < end) if wraps else (start <= clock < end)
    if not quiet:
        return None
    day = local.date()
    if wraps and clock >= start:
        day = day + timedelta(days=1)
    ends = datetime.combine(day, end, tzinfo=local.tzinfo)
    # a wall-clock time that does not exist (DST gap) resolves forward through the round trip
    return ends.astimezone(now.tzinfo)


# --- message ---------------------------------------------------------------------------


class Message(Aggregate):
    """A message to a contact. Its personal data, sealed with the message's own key (erasing the contact
    deletes the keys of all their messages), is the call's variables, explicit subject/body, and what was
    rendered and the address it went to. The consent proof on MessageSent/MessageSuppressed (`consent`) is
    not personal and stays in clear: ids, enumerations, times and the consent's `source`, a label of where
    consent was collected (web_form, import, unsubscribe_link...) that contacts itself publishes in clear on
    ContactConsentChanged. It must outlive an erasure: it shows why a send was lawful."""

    aggregate_type = "message"

    class MessageQueued(DomainEvent):
        """A message to a contact was accepted for sending (a template, or an explicit subject and body); the
        worker checks consent and quiet hours before it goes out."""

        message_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        channel: str = spec(enum=CHANNELS)
        category: str = spec(enum=CATEGORIES)
        template_id: str | None = spec(minLength=1)
        campaign_id: str | None = spec(minLength=1)
        trigger_id: str | None = spec(minLength=1)
        subject: str | None = spec(personal=True)
        body: str | None = spec(personal=True)
        variables: dict[str, Any] = spec(schema=VARIABLES, personal=True)
        queued_at: str = spec(format="date-time")

    class MessageSuppressed(DomainEvent):
        """The message will not be sent: no consent for the channel (the reason contacts gave), the contact is
        gone (`contact_not_found`), its campaign was cancelled (`campaign_cancelled`), or the address contacts
        gave bounced or was complained about (`address_bounced`, `address_complained`: AddressSuppressed).
        `consent` is the consent decision that stopped it (absent when none was asked: a cancelled campaign, or
        recorded before proofs were kept)."""

        message_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        reason: str = spec(minLength=1)
        consent: dict[str, Any] | None = spec(omit_none=True, schema=CONSENT_PROOF)

    class MessageRetryScheduled(DomainEvent):
        """Sending failed for a passing reason (provider or contacts unavailable); attempt `attempt` will be
        retried at `retry_at`."""

        message_id: str = spec(minLength=1)
        attempt: int = spec(minimum=1)
        error: str = spec(maxLength=300)
        retry_at: str = spec(format="date-time")

    class MessageSent(DomainEvent):
        """The provider accepted the message: what was rendered and the address it went to, and (`consent`) the
        consent decision it went out on (absent on sends recorded before proofs were kept)."""

        message_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        channel: str = spec(enum=CHANNELS)
        provider: str = spec(minLength=1)
        provider_message_id: str = spec(minLength=1)
        address: str = spec(personal=True)
        subject: str | None = spec(personal=True)
        body: str = spec(personal=True)
        attempt: int = spec(minimum=1)
        sent_at: str = spec(format="date-time")
        consent: dict[str, Any] | None = spec(omit_none=True, schema=CONSENT_PROOF)

    class MessageDelivered(DomainEvent):
        """The provider reported the message delivered."""

        message_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        provider: str = spec(minLength=1)
        delivered_at: str = spec(format="date-time")

    class MessageContactChanged(DomainEvent):
        """The message now shows on another contact: its contact was merged into `to` (`merge_id` names the
        contacts service's ContactMerged, also the envelope's causationid), or that merge was reversed
        (`contact_unmerged`: back to the duplicate `to`). What was sent, and to which address, stays as it was."""

        message_id: str = spec(minLength=1)
        from_: str = spec(wire="from", minLength=1)
        to: str = spec(minLength=1)
        reason: str = spec(enum=("contact_merged", "contact_unmerged"))
        merge_id: str | None = spec(
            omit_none=True,
            minLength=1,
            description=("the ContactMerged event that caused the move (or whose reversal did)"),
        )

    class MessageFailed(DomainEvent):
        """The message could not be sent (permanent error, template error, attempts exhausted) or, with
        `bounced`, the provider reported it undeliverable after sending."""

        message_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        reason: str = spec(minLength=1, maxLength=300)
        failed_at: str = spec(format="date-time")
        bounced: bool | None = spec(
            default=None,
            omit_none=True,
            schema={"const": True, "description": "present (true) when a receipt reported a bounce"},
        )

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.contact_id = ""
        self.channel = ""
        self.category = "marketing"
        self.template_id: str | None = None
        self.campaign_id: str | None = None
        self.trigger_id: str | None = None
        self.subject: str | None = None
        self.body: str | None = None
        self.variables: dict[str, Any] = {}
        self.status = "queued"
        self.reason: str | None = None
        self.attempts = 0
        self.provider: str | None = None
        self.provider_message_id: str | None = None
        self.address: str | None = None
        self.queued_at: str | None = None
        self.sent_at: str | None = None
        self.delivered_at: str | None = None
        self.next_attempt_at: str | None = None
        self.consent: dict[str, Any] | None = None  # the consent decision the send or suppression relied on
        # the last contact change, if a merge made it: {"merge_id", "from"} (what an unmerge moves back)
        self.merge_move: dict[str, Any] | None = None

    @classmethod
    def queue(cls, message_id: str, fields: dict[str, Any], at: str) -> Message:
        message = cls(message_id)
        message.record(
            cls.MessageQueued(
                message_id=message_id,
                contact_id=fields["contact_id"],
                channel=fields["channel"],
                category=fields.get("category") or "marketing",
                template_id=fields.get("template_id"),
                campaign_id=fields.get("campaign_id"),
                trigger_id=fields.get("trigger_id"),
                subject=fields.get("subject"),
                body=fields.get("body"),
                variables=fields.get("variables") or {},
                queued_at=at,
            )
        )
        return message

    def _require_queued(self, what: str) -> None:
        if self.status != "queued":
            raise Conflict(f"message {self.id} is {self.status}; it cannot be {what}")

    def suppress(self, reason: str, consent: dict[str, Any] | None = None) -> None:
        """Not sent, for `reason`; `consent` is the decision that stopped it (none when no
        consent was asked, e.g. its campaign was cancelled)."""
        self._require_queued("suppressed")
        self.record(
            self.MessageSuppressed(message_id=self.id, contact_id=self.contact_id, reason=reason, consent=consent)
        )

    def sent(
        self,
        provider: str,
        provider_message_id: str,
        address: str,
        subject: str | None,
        body: str,
        at: str,
        consent: dict[str, Any] | None = None,
    ) -> None:
        """The provider took it; `consent` is the decision it went out on (the proof)."""
        self._require_queued("sent")
        self.record(
            self.MessageSent(
                message_id=self.id,
                contact_id=self.contact_id,
                channel=self.channel,
                provider=provider,
                provider_message_id=provider_message_id,
                address=address,
                subject=subject,
                body=body,
                attempt=self.attempts + 1,
                sent_at=at,
                consent=consent,
            )
        )

    def retry_later(self, error: str, retry_at: str) -> None:
        self._require_queued("retried")
        self.record(
            self.MessageRetryScheduled(
                message_id=self.id, attempt=self.attempts + 1, error=error[:300], retry_at=retry_at
            )
        )

    def fail(self, reason: str, at: str) -> None:
        if self.status not in ("queued", "sent"):
            raise Conflict(f"message {self.id} is {self.status}; it cannot fail now")
        self.record(
            self.MessageFailed(message_id=self.id, contact_id=self.contact_id, reason=reason[:300], failed_at=at)
        )

    def delivered(self, at: str) -> None:
        if self.status == "delivered":
            return  # a repeated receipt
        if self.status != "sent":
            raise Conflict(f"message {self.id} is {self.status}; a delivery receipt does not apply")
        self.record(
            self.MessageDelivered(
                message_id=self.id, contact_id=self.contact_id, provider=self.provider or "", delivered_at=at
            )
        )

    def bounced(self, reason: str, at: str) -> None:
        if self.status in ("failed", "bounced"):
            return
        if self.status not in ("sent", "delivered"):
            raise Conflict(f"message {self.id} is {self.status}; a failure receipt does not apply")
        self.record(
            self.MessageFailed(
                message_id=self.id, contact_id=self.contact_id, reason=reason[:300], failed_at=at, bounced=True
            )
        )

    def change_contact(self, contact_id: str, reason: str, merge_id: str | None) -> bool:
        """Belong to another contact (its contact was merged, or that merge reversed); `merge_id`
        names the contacts' ContactMerged. The message's text and address stay as sent."""
        if contact_id == self.contact_id:
            return False
        self.record(
            self.MessageContactChanged(
                message_id=self.id, from_=self.contact_id, to=contact_id, reason=reason, merge_id=merge_id or None
            )
        )
        return True

    def move_back(self, duplicate_id: str, survivor_id: str, merge_id: str | None) -> bool:
        """An unmerge: back to `duplicate_id` if the merge `merge_id` moved this message here and
        nothing moved it since."""
        move = self.merge_move
        if (
            move is None
            or self.contact_id != survivor_id
            or move["from"] != duplicate_id
            or move["merge_id"] not in (merge_id, None)
        ):
            return False
        return self.change_contact(duplicate_id, "contact_unmerged", merge_id)

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes a message."""

    @apply.register(MessageContactChanged)
    def _on_contact_changed(self, event: MessageContactChanged) -> None:
        self.contact_id = event.to
        by_merge = event.reason == "contact_merged"
        self.merge_move = {"merge_id": event.merge_id, "from": event.from_} if by_merge else None

    @apply.register(MessageQueued)
    def _on_queued(self, event: MessageQueued) -> None:
        self.adopt(event)  # contact, channel, template, campaign, trigger, subject, body, variables, queued_at
        self.category = event.category or "marketing"
        self.variables = event.variables or {}

    @apply.register(MessageSuppressed)
    def _on_suppressed(self, event: MessageSuppressed) -> None:
        self.status, self.reason, self.consent = "suppressed", event.reason, event.consent

    @apply.register(MessageRetryScheduled)
    def _on_retry_scheduled(self, event: MessageRetryScheduled) -> None:
        self.attempts, self.reason, self.next_attempt_at = event.attempt, event.error, event.retry_at

    @apply.register(MessageSent)
    def _on_sent(self, event: MessageSent) -> None:
        self.status, self.attempts = "sent", event.attempt
        self.provider, self.provider_message_id = event.provider, event.provider_message_id
        self.address, self.subject, self.body = event.address, event.subject, event.body
        self.sent_at, self.reason, self.next_attempt_at = event.sent_at, None, None
        self.consent = event.consent

    @apply.register(MessageDelivered)
    def _on_delivered(self, event: MessageDelivered) -> None:
        self.status, self.delivered_at = "delivered", event.delivered_at

    @apply.register(MessageFailed)
    def _on_failed(self, event: MessageFailed) -> None:
        self.status = "bounced" if event.bounced else "failed"
        self.reason = event.reason

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "contact_id": self.contact_id,
            "channel": self.channel,
            "category": self.category,
            "status": self.status,
            "reason": self.reason,
            "template_id": self.template_id,
            "campaign_id": self.campaign_id,
            "trigger_id": self.trigger_id,
            "subject": self.subject,
            "body": self.body,
            "variables": self.variables,
            "address": self.address,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "provider": self.provider,
            "provider_message_id": self.provider_message_id,
            "queued_at": self.queued_at,
            "sent_at": self.sent_at,
            "delivered_at": self.delivered_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def consent_proof(self) -> dict[str, Any]:
        """The consent decision the send or suppression relied on (None while it waits, or when
        none was asked), from the message's own events: GET /v1/messages/{id}/consent and the
        person's export show this."""
        return {
            "message_id": self.id,
            "contact_id": self.contact_id,
            "channel": self.channel,
            "status": self.status,
            "consent": self.consent,
        }


# --- template --------------------------------------------------------------------------

TEMPLATE_FIELDS = ("name", "category", "default_locale", "variants")  # what an update may change


def _template_changes() -> dict[str, Any]:
    """The shape of TemplateUpdated's `changes`: any of the template's own fields (schemas as when defined)."""
    defined = json_schema(Template.TemplateDefined)["properties"]
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: defined[name] for name in TEMPLATE_FIELDS},
        "minProperties": 1,
    }


class Template(Aggregate):
    """Subject and body per locale for one channel (template text is not personal data)."""

    aggregate_type = "template"

    class TemplateDefined(DomainEvent):
        """A message template for one channel was defined, with a variant per locale."""

        template_id: str = spec(minLength=1)
        name: str = spec(minLength=1)
        channel: str = spec(enum=CHANNELS)
        category: str = spec(enum=CATEGORIES)
        default_locale: str = spec(schema=LOCALE)
        variants: dict[str, dict[str, Any]] = spec(schema=VARIANTS)

    class TemplateUpdated(DomainEvent):
        """Fields of a template changed; `changes` holds the new values."""

        template_id: str = spec(minLength=1)
        changes: dict[str, Any] = spec(schema=_template_changes)

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name = ""
        self.channel = ""
        self.category = "marketing"
        self.default_locale = "en"
        self.variants: dict[str, dict[str, Any]] = {}

    @classmethod
    def define(cls, template_id: str, fields: dict[str, Any]) -> Template:
        template = cls(template_id)
        template.record(cls.TemplateDefined(template_id=template_id, **fields))
        return template

    def update(self, fields: dict[str, Any]) -> None:
        changes = {k: v for k, v in fields.items() if getattr(self, k) != v}
        if changes:
            self.record(self.TemplateUpdated(template_id=self.id, changes=changes))

    def variant(self, locale: str | None) -> tuple[str, dict[str, Any]]:
        """The variant for a locale: exact (fa-IR), then its language (fa), then the default."""
        for candidate in (locale, (locale or "").split("-")[0], self.default_locale):
            if candidate and candidate in self.variants:
                return candidate, self.variants[candidate]
        first = next(iter(self.variants))
        return first, self.variants[first]

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes a template."""

    @apply.register(TemplateDefined)
    def _on_defined(self, event: TemplateDefined) -> None:
        self.adopt(event)  # name, channel, category, default locale, variants
        self.category = event.category or "marketing"

    @apply.register(TemplateUpdated)
    def _on_updated(self, event: TemplateUpdated) -> None:
        for key, value in event.changes.items():
            setattr(self, key, value)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "name": self.name,
            "channel": self.channel,
            "category": self.category,
            "default_locale": self.default_locale,
            "variants": self.variants,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


# --- campaign --------------------------------------------------------------------------


class Campaign(Aggregate):
    """A template sent to a segment's members: draft → running (now or when scheduled) ⇄ paused
    → completed | cancelled. Its messages are queued once, with ids derived from the
    campaign and the contact, so expanding it again creates nothing twice."""

    aggregate_type = "campaign"

    class CampaignCreated(DomainEvent):
        """A campaign (a template to a segment's members) was drafted."""

        campaign_id: str = spec(minLength=1)
        name: str = spec(minLength=1)
        segment_id: str = spec(minLength=1)
        template_id: str = spec(minLength=1)
        channel: str = spec(enum=CHANNELS)
        throttle_per_minute: int = spec(minimum=1, maximum=100_000)

    class CampaignLaunched(DomainEvent):
        """The campaign was launched: its messages are queued at `scheduled_at` (now, or a later time)."""

        campaign_id: str = spec(minLength=1)
        segment_id: str = spec(minLength=1)
        template_id: str = spec(minLength=1)
        channel: str = spec(enum=CHANNELS)
        scheduled_at: str = spec(format="date-time")
        launched_at: str = spec(format="date-time")

    class CampaignTargeted(DomainEvent):
        """The campaign's segment was expanded: one message queued per member."""

        campaign_id: str = spec(minLength=1)
        targeted: int = spec(minimum=0)

    class CampaignPaused(DomainEvent):
        """The running campaign was paused: its queued messages wait."""

        campaign_id: str = spec(minLength=1)

    class CampaignResumed(DomainEvent):
        """The paused campaign runs again."""

        campaign_id: str = spec(minLength=1)

    class CampaignCancelled(DomainEvent):
        """The campaign was cancelled: its messages not yet sent are suppressed."""

        campaign_id: str = spec(minLength=1)

    class CampaignCompleted(DomainEvent):
        """Every message of the running campaign was decided (sent, suppressed, failed)."""

        campaign_id: str = spec(minLength=1)
        completed_at: str = spec(format="date-time")

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name = ""
        self.segment_id = ""
        self.template_id = ""
        self.channel = ""
        self.throttle_per_minute = 600
        self.status = "draft"
        self.scheduled_at: str | None = None
        self.launched_at: str | None = None
        self.targeted: int | None = None
        self.completed_at: str | None = None

    @classmethod
    def create(cls, campaign_id: str, fields: dict[str, Any]) -> Campaign:
        campaign = cls(campaign_id)
        campaign.record(cls.CampaignCreated(campaign_id=campaign_id, **fields))
        return campaign

    def launch(self, scheduled_at: str | None, at: str) -> None:
        if self.status != "draft":
            raise Conflict(f"campaign {self.id} is {self.status}; only a draft can be launched")
        self.record(
            self.CampaignLaunched(
                campaign_id=self.id,
                segment_id=self.segment_id,
                template_id=self.template_id,
                channel=self.channel,
                scheduled_at=scheduled_at or at,
                launched_at=at,
            )
        )

    def targeted_members(self, count: int) -> None:
        if self.targeted is None and self.status in ("running", "paused"):
            self.record(self.CampaignTargeted(campaign_id=self.id, targeted=count))

    def pause(self) -> None:
        if self.status != "running":
            raise Conflict(f"campaign {self.id} is {self.status}; only a running campaign can be paused")
        self.record(self.CampaignPaused(campaign_id=self.id))

    def resume(self) -> None:
        if self.status != "paused":
            raise Conflict(f"campaign {self.id} is {self.status}; only a paused campaign can be resumed")
        self.record(self.CampaignResumed(campaign_id=self.id))

    def cancel(self) -> None:
        if self.status in ("completed", "cancelled"):
            raise Conflict(f"campaign {self.id} is already {self.status}")
        self.record(self.CampaignCancelled(campaign_id=self.id))

    def complete(self, at: str) -> None:
        if self.status == "running":
            self.record(self.CampaignCompleted(campaign_id=self.id, completed_at=at))

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes a campaign."""

    @apply.register(CampaignCreated)
    def _on_created(self, event: CampaignCreated) -> None:
        self.adopt(event)  # name, segment, template, channel, throttle

    @apply.register(CampaignLaunched)
    def _on_launched(self, event: CampaignLaunched) -> None:
        self.status, self.scheduled_at, self.launched_at = "running", event.scheduled_at, event.launched_at

    @apply.register(CampaignTargeted)
    def _on_targeted(self, event: CampaignTargeted) -> None:
        self.targeted = event.targeted

    @apply.register(CampaignPaused)
    def _on_paused(self, event: CampaignPaused) -> None:
        self.status = "paused"

    @apply.register(CampaignResumed)
    def _on_resumed(self, event: CampaignResumed) -> None:
        self.status = "running"

    @apply.register(CampaignCancelled)
    def _on_cancelled(self, event: CampaignCancelled) -> None:
        self.status = "cancelled"

    @apply.register(CampaignCompleted)
    def _on_completed(self, event: CampaignCompleted) -> None:
        self.status, self.completed_at = "completed", event.completed_at

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "name": self.name,
            "segment_id": self.segment_id,
            "template_id": self.template_id,
            "channel": self.channel,
            "throttle_per_minute": self.throttle_per_minute,
            "status": self.status,
            "scheduled_at": self.scheduled_at,
            "launched_at": self.launched_at,
            "targeted": self.targeted,
            "completed_at": self.completed_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


# --- trigger ---------------------------------------------------------------------------


class Trigger(Aggregate):
    """ "When an event of this type (whose data matches `filter`) happens, send this template
    to the event's contact."""

    aggregate_type = "trigger"

    class TriggerDefined(DomainEvent):
        """A trigger was defined: when an event of `event_type` whose data matches `filter` happens, the template
        is sent to the event's contact."""

        trigger_id: str = spec(minLength=1)
        name: str = spec(minLength=1)
        event_type: str = spec(pattern=r"^crm\.[a-z]+\.[A-Za-z]+\.v[0-9]+$")
        filter: dict[str, Any] = spec(
            schema={
                "type": "object",
                "additionalProperties": SCALAR,
                "description": "dotted paths into the event's data and the values they must equal",
            }
        )
        template_id: str = spec(minLength=1)
        channel: str = spec(enum=CHANNELS)
        variables: dict[str, Any] = spec(
            schema={**VARIABLES, "description": "template variables added to the event's own"}
        )
        enabled: bool

    class TriggerEnabled(DomainEvent):
        """The trigger fires again."""

        trigger_id: str = spec(minLength=1)

    class TriggerDisabled(DomainEvent):
        """The trigger no longer fires."""

        trigger_id: str = spec(minLength=1)

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name = ""
        self.event_type = ""
        self.filter: dict[str, Any] = {}
        self.template_id = ""
        self.channel = ""
        self.variables: dict[str, Any] = {}
        self.enabled = True

    @classmethod
    def define(cls, trigger_id: str, fields: dict[str, Any]) -> Trigger:
        trigger = cls(trigger_id)
        trigger.record(cls.TriggerDefined(trigger_id=trigger_id, **fields))
        return trigger

    def set_enabled(self, enabled: bool) -> None:
        if enabled != self.enabled:
            kind = self.TriggerEnabled if enabled else self.TriggerDisabled
            self.record(kind(trigger_id=self.id))

    def matches(self, full_type: str, data: dict[str, Any]) -> bool:
        if not self.enabled or full_type != self.event_type:
            return False
        return all(_lookup(data, path) == value for path, value in self.filter.items())

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes a trigger."""

    @apply.register(TriggerDefined)
    def _on_defined(self, event: TriggerDefined) -> None:
        self.adopt(event)  # name, event type, filter, template, channel, variables, enabled
        self.filter, self.variables = event.filter or {}, event.variables or {}
        self.enabled = event.enabled is not False  # absent from an early definition: enabled

    @apply.register(TriggerEnabled)
    def _on_enabled(self, event: TriggerEnabled) -> None:
        self.enabled = True

    @apply.register(TriggerDisabled)
    def _on_disabled(self, event: TriggerDisabled) -> None:
        self.enabled = False

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "name": self.name,
            "event_type": self.event_type,
            "filter": self.filter,
            "template_id": self.template_id,
            "channel": self.channel,
            "variables": self.variables,
            "enabled": self.enabled,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def _lookup(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


# Personal data in message events, sealed with the message's own key: the fields declared personal=True.
PERSONAL_DATA = personal_fields(Message)
