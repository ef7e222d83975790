"""Messages, templates, campaigns and triggers: aggregates that decide, plus pure rules
(back-off schedule, quiet hours). No I/O here.

A message's life: queued → suppressed (no consent, cancelled campaign) | sent → delivered
| failed. Transient provider failures record `MessageRetryScheduled` and stay queued until
the attempt cap, then `MessageFailed`. Every transition checks the current state, and
the repository appends with the expected version, so a redelivered job or a second
worker can never record a second send.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crmkit.aggregate import Aggregate
from crmkit.errors import Conflict

CHANNELS = ("email", "sms", "fax")
CATEGORIES = ("marketing", "transactional")
MESSAGE_STATUSES = ("queued", "suppressed", "sent", "delivered", "failed", "bounced")
FINAL = ("suppressed", "delivered", "failed", "bounced")

# Personal data in message events (sealed with the message's own key; erasing the
# contact deletes the keys of all their messages): the call's variables, explicit
# subject/body, and what was rendered and the address it went to.
# The consent proof on MessageSent/MessageSuppressed (`consent`) is not personal and stays
# in clear: ids, enumerations, times and the consent's `source`, a label of where consent
# was collected (web_form, import, unsubscribe_link...) that contacts itself publishes in
# clear on ContactConsentChanged. It must outlive an erasure: it shows why a send was lawful.
PERSONAL_DATA = {
    "MessageQueued": ["variables", "subject", "body"],
    "MessageSent": ["address", "subject", "body"],
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
    """"21:00-08:00" → (21:00, 08:00); "" or "off" → None."""
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
    aggregate_type = "message"

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
        message.record("MessageQueued", {
            "message_id": message_id,
            "contact_id": fields["contact_id"],
            "channel": fields["channel"],
            "category": fields.get("category") or "marketing",
            "template_id": fields.get("template_id"),
            "campaign_id": fields.get("campaign_id"),
            "trigger_id": fields.get("trigger_id"),
            "subject": fields.get("subject"),
            "body": fields.get("body"),
            "variables": fields.get("variables") or {},
            "queued_at": at,
        })
        return message

    def _require_queued(self, what: str) -> None:
        if self.status != "queued":
            raise Conflict(f"message {self.id} is {self.status}; it cannot be {what}")

    def suppress(self, reason: str, consent: dict[str, Any] | None = None) -> None:
        """Not sent, for `reason`; `consent` is the decision that stopped it (none when no
        consent was asked, e.g. its campaign was cancelled)."""
        self._require_queued("suppressed")
        self.record("MessageSuppressed", {"message_id": self.id, "contact_id": self.contact_id, "reason": reason,
                                          **({"consent": consent} if consent is not None else {})})

    def sent(self, provider: str, provider_message_id: str, address: str, subject: str | None, body: str,
             at: str, consent: dict[str, Any] | None = None) -> None:
        """The provider took it; `consent` is the decision it went out on (the proof)."""
        self._require_queued("sent")
        self.record("MessageSent", {"message_id": self.id, "contact_id": self.contact_id, "channel": self.channel,
                                    "provider": provider, "provider_message_id": provider_message_id,
                                    "address": address, "subject": subject, "body": body,
                                    "attempt": self.attempts + 1, "sent_at": at,
                                    **({"consent": consent} if consent is not None else {})})

    def retry_later(self, error: str, retry_at: str) -> None:
        self._require_queued("retried")
        self.record("MessageRetryScheduled", {"message_id": self.id, "attempt": self.attempts + 1,
                                              "error": error[:300], "retry_at": retry_at})

    def fail(self, reason: str, at: str) -> None:
        if self.status not in ("queued", "sent"):
            raise Conflict(f"message {self.id} is {self.status}; it cannot fail now")
        self.record("MessageFailed", {"message_id": self.id, "contact_id": self.contact_id,
                                      "reason": reason[:300], "failed_at": at})

    def delivered(self, at: str) -> None:
        if self.status == "delivered":
            return  # a repeated receipt
        if self.status != "sent":
            raise Conflict(f"message {self.id} is {self.status}; a delivery receipt does not apply")
        self.record("MessageDelivered", {"message_id": self.id, "contact_id": self.contact_id,
                                         "provider": self.provider, "delivered_at": at})

    def bounced(self, reason: str, at: str) -> None:
        if self.status in ("failed", "bounced"):
            return
        if self.status not in ("sent", "delivered"):
            raise Conflict(f"message {self.id} is {self.status}; a failure receipt does not apply")
        self.record("MessageFailed", {"message_id": self.id, "contact_id": self.contact_id, "reason": reason[:300],
                                      "failed_at": at, "bounced": True})

    def change_contact(self, contact_id: str, reason: str, merge_id: str | None) -> bool:
        """Belong to another contact (its contact was merged, or that merge reversed); `merge_id`
        names the contacts' ContactMerged. The message's text and address stay as sent."""
        if contact_id == self.contact_id:
            return False
        self.record("MessageContactChanged", {"message_id": self.id, "from": self.contact_id, "to": contact_id,
                                              "reason": reason, **({"merge_id": merge_id} if merge_id else {})})
        return True

    def move_back(self, duplicate_id: str, survivor_id: str, merge_id: str | None) -> bool:
        """An unmerge: back to `duplicate_id` if the merge `merge_id` moved this message here and
        nothing moved it since."""
        move = self.merge_move
        if move is None or self.contact_id != survivor_id or move["from"] != duplicate_id \
                or move["merge_id"] not in (merge_id, None):
            return False
        return self.change_contact(duplicate_id, "contact_unmerged", merge_id)

    def apply(self, event_type: str, data: dict[str, Any]) -> None:
        if event_type == "MessageContactChanged":
            self.contact_id = data["to"]
            by_merge = data["reason"] == "contact_merged"
            self.merge_move = {"merge_id": data.get("merge_id"), "from": data["from"]} if by_merge else None
        elif event_type == "MessageQueued":
            self.contact_id = data["contact_id"]
            self.channel = data["channel"]
            self.category = data.get("category") or "marketing"
            self.template_id = data.get("template_id")
            self.campaign_id = data.get("campaign_id")
            self.trigger_id = data.get("trigger_id")
            self.subject, self.body = data.get("subject"), data.get("body")
            self.variables = data.get("variables") or {}
            self.queued_at = data.get("queued_at")
        elif event_type == "MessageSuppressed":
            self.status, self.reason = "suppressed", data["reason"]
            self.consent = data.get("consent")
        elif event_type == "MessageRetryScheduled":
            self.attempts = data["attempt"]
            self.reason, self.next_attempt_at = data["error"], data["retry_at"]
        elif event_type == "MessageSent":
            self.status, self.attempts = "sent", data["attempt"]
            self.provider, self.provider_message_id = data["provider"], data["provider_message_id"]
            self.address, self.subject, self.body = data.get("address"), data.get("subject"), data.get("body")
            self.sent_at, self.reason, self.next_attempt_at = data["sent_at"], None, None
            self.consent = data.get("consent")
        elif event_type == "MessageDelivered":
            self.status, self.delivered_at = "delivered", data["delivered_at"]
        elif event_type == "MessageFailed":
            self.status = "bounced" if data.get("bounced") else "failed"
            self.reason = data["reason"]

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id, "version": self.version, "contact_id": self.contact_id, "channel": self.channel,
            "category": self.category, "status": self.status, "reason": self.reason,
            "template_id": self.template_id, "campaign_id": self.campaign_id, "trigger_id": self.trigger_id,
            "subject": self.subject, "body": self.body, "variables": self.variables, "address": self.address,
            "attempts": self.attempts, "next_attempt_at": self.next_attempt_at, "provider": self.provider,
            "provider_message_id": self.provider_message_id, "queued_at": self.queued_at, "sent_at": self.sent_at,
            "delivered_at": self.delivered_at, "created_at": self.created_at, "updated_at": self.updated_at,
        }

    def consent_proof(self) -> dict[str, Any]:
        """The consent decision the send or suppression relied on (None while it waits, or when
        none was asked), from the message's own events: GET /v1/messages/{id}/consent and the
        person's export show this."""
        return {"message_id": self.id, "contact_id": self.contact_id, "channel": self.channel,
                "status": self.status, "consent": self.consent}


# --- template --------------------------------------------------------------------------


class Template(Aggregate):
    """Subject and body per locale for one channel (template text is not personal data)."""

    aggregate_type = "template"

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
        template.record("TemplateDefined", {"template_id": template_id, **fields})
        return template

    def update(self, fields: dict[str, Any]) -> None:
        changes = {k: v for k, v in fields.items() if getattr(self, k) != v}
        if changes:
            self.record("TemplateUpdated", {"template_id": self.id, "changes": changes})

    def variant(self, locale: str | None) -> tuple[str, dict[str, Any]]:
        """The variant for a locale: exact (fa-IR), then its language (fa), then the default."""
        for candidate in (locale, (locale or "").split("-")[0], self.default_locale):
            if candidate and candidate in self.variants:
                return candidate, self.variants[candidate]
        first = next(iter(self.variants))
        return first, self.variants[first]

    def apply(self, event_type: str, data: dict[str, Any]) -> None:
        if event_type == "TemplateDefined":
            self.name, self.channel = data["name"], data["channel"]
            self.category = data.get("category") or "marketing"
            self.default_locale, self.variants = data["default_locale"], data["variants"]
        elif event_type == "TemplateUpdated":
            for key, value in data["changes"].items():
                setattr(self, key, value)

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "name": self.name, "channel": self.channel,
                "category": self.category, "default_locale": self.default_locale, "variants": self.variants,
                "created_at": self.created_at, "updated_at": self.updated_at}


# --- campaign --------------------------------------------------------------------------


class Campaign(Aggregate):
    """A template sent to a segment's members: draft → running (now or when scheduled) ⇄ paused
    → completed | cancelled. Its messages are queued once, with ids derived from the
    campaign and the contact, so expanding it again creates nothing twice."""

    aggregate_type = "campaign"

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
        campaign.record("CampaignCreated", {"campaign_id": campaign_id, **fields})
        return campaign

    def launch(self, scheduled_at: str | None, at: str) -> None:
        if self.status != "draft":
            raise Conflict(f"campaign {self.id} is {self.status}; only a draft can be launched")
        self.record("CampaignLaunched", {"campaign_id": self.id, "segment_id": self.segment_id,
                                         "template_id": self.template_id, "channel": self.channel,
                                         "scheduled_at": scheduled_at or at, "launched_at": at})

    def targeted_members(self, count: int) -> None:
        if self.targeted is None and self.status in ("running", "paused"):
            self.record("CampaignTargeted", {"campaign_id": self.id, "targeted": count})

    def pause(self) -> None:
        if self.status != "running":
            raise Conflict(f"campaign {self.id} is {self.status}; only a running campaign can be paused")
        self.record("CampaignPaused", {"campaign_id": self.id})

    def resume(self) -> None:
        if self.status != "paused":
            raise Conflict(f"campaign {self.id} is {self.status}; only a paused campaign can be resumed")
        self.record("CampaignResumed", {"campaign_id": self.id})

    def cancel(self) -> None:
        if self.status in ("completed", "cancelled"):
            raise Conflict(f"campaign {self.id} is already {self.status}")
        self.record("CampaignCancelled", {"campaign_id": self.id})

    def complete(self, at: str) -> None:
        if self.status == "running":
            self.record("CampaignCompleted", {"campaign_id": self.id, "completed_at": at})

    def apply(self, event_type: str, data: dict[str, Any]) -> None:
        if event_type == "CampaignCreated":
            self.name, self.segment_id = data["name"], data["segment_id"]
            self.template_id, self.channel = data["template_id"], data["channel"]
            self.throttle_per_minute = data["throttle_per_minute"]
        elif event_type == "CampaignLaunched":
            self.status, self.scheduled_at, self.launched_at = "running", data["scheduled_at"], data["launched_at"]
        elif event_type == "CampaignTargeted":
            self.targeted = data["targeted"]
        elif event_type == "CampaignPaused":
            self.status = "paused"
        elif event_type == "CampaignResumed":
            self.status = "running"
        elif event_type == "CampaignCancelled":
            self.status = "cancelled"
        elif event_type == "CampaignCompleted":
            self.status, self.completed_at = "completed", data["completed_at"]

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "name": self.name, "segment_id": self.segment_id,
                "template_id": self.template_id, "channel": self.channel,
                "throttle_per_minute": self.throttle_per_minute, "status": self.status,
                "scheduled_at": self.scheduled_at, "launched_at": self.launched_at, "targeted": self.targeted,
                "completed_at": self.completed_at, "created_at": self.created_at, "updated_at": self.updated_at}


# --- trigger ---------------------------------------------------------------------------


class Trigger(Aggregate):
    """"When an event of this type (whose data matches `filter`) happens, send this template
    to the event's contact."""

    aggregate_type = "trigger"

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
        trigger.record("TriggerDefined", {"trigger_id": trigger_id, **fields})
        return trigger

    def set_enabled(self, enabled: bool) -> None:
        if enabled != self.enabled:
            self.record("TriggerEnabled" if enabled else "TriggerDisabled", {"trigger_id": self.id})

    def matches(self, full_type: str, data: dict[str, Any]) -> bool:
        if not self.enabled or full_type != self.event_type:
            return False
        return all(_lookup(data, path) == value for path, value in self.filter.items())

    def apply(self, event_type: str, data: dict[str, Any]) -> None:
        if event_type == "TriggerDefined":
            self.name, self.event_type, self.filter = data["name"], data["event_type"], data.get("filter") or {}
            self.template_id, self.channel = data["template_id"], data["channel"]
            self.variables = data.get("variables") or {}
            self.enabled = data.get("enabled", True)
        elif event_type == "TriggerEnabled":
            self.enabled = True
        elif event_type == "TriggerDisabled":
            self.enabled = False

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "name": self.name, "event_type": self.event_type,
                "filter": self.filter, "template_id": self.template_id, "channel": self.channel,
                "variables": self.variables, "enabled": self.enabled, "created_at": self.created_at,
                "updated_at": self.updated_at}


def _lookup(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
