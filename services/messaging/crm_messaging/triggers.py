"""Triggers: other services' events that send a template to the event's contact.

`TriggerReactor` is a projection over other services' topics (service desk's, sales' and
contacts', wherever CRM_<SERVICE>_TOPIC puts them; CRM_MESSAGING_TRIGGER_TOPICS
overrides). For each event whose type and data match an enabled trigger, it queues a
message whose id is derived from the trigger and the event id, so a redelivered event
queues nothing twice. Each event is reacted to on its own (no stream version is
remembered), so a late one (v1 after v2) fires as it would have in order. The defaults
shipped (`install_defaults`): ticket solved → satisfaction survey, deal won → welcome, and
(disabled until an installation enables it) contact became stale → "please confirm your
details", a marketing message whose `confirm_url` is the contacts service's signed
confirmation page (crm_contacts.records.confirm_api).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from crm_messaging.commands import MessageDesk, derived_id
from crm_messaging.domain import Message, Trigger
from crmkit import signing
from crmkit.errors import Conflict
from crmkit.events import Metadata, RecordedEvent, rfc3339
from crmkit.store import ConcurrencyError

TICKET_SOLVED = "crm.servicedesk.TicketSolved.v1"
SURVEY_LINK_TTL = timedelta(days=30)
SERVQUAL_SURVEY_SENT = "crm.servicedesk.ServqualSurveySent.v1"  # the desk sent a SERVQUAL survey: email its link
CONTACT_STALE = "crm.contacts.ContactBecameStale.v1"
CONFIRM_PURPOSE = "confirm-details"  # the contacts service checks these links (crm_contacts.records.confirm_api)
CONFIRM_LINK_TTL = timedelta(days=30)


class TriggerReactor:
    name = "trigger_reactor"

    def __init__(self, desk: MessageDesk, topics: Sequence[str] | None = None, cache_seconds: float = 2.0) -> None:
        self.desk = desk
        self.topics = list(topics or desk.config.trigger_topics)
        self.cache_seconds = cache_seconds
        self._triggers: list[Trigger] = []
        self._loaded = -1e9

    def triggers(self) -> list[Trigger]:
        """The enabled triggers, folded from the event store (never the `triggers` read model:
        a fresh worker's view may still be empty, and an event matched against nothing is
        committed and never looked at again). Their ids come from `trigger_ids`, which
        `define_trigger` writes before the trigger's first event."""
        if time.monotonic() - self._loaded > self.cache_seconds:
            found = self.desk.triggers.get_many(self.desk.trigger_ids())
            self._triggers = [found[i] for i in sorted(found) if found[i].enabled]
            self._loaded = time.monotonic()
        return self._triggers

    def handle(self, events: Sequence[RecordedEvent]) -> None:
        foreign = [e for e in events if e.service != self.desk.runtime.settings.slug]
        if not foreign:
            return
        triggers = self.triggers()
        fired = [
            (trigger, event)
            for event in foreign
            for trigger in triggers
            if trigger.matches(event.full_type, event.data)
        ]
        if fired:
            self.fire(fired)

    def fire(self, fired: Sequence[tuple[Trigger, RecordedEvent]]) -> int:
        """Queue the fired triggers' messages together (one contacts lookup, one append); the
        message id comes from trigger and event, so a redelivered event queues nothing more.
        An event without a contact, or whose contact or template is gone, sends nothing.
        Returns how many messages were newly queued."""
        named = [(trigger, event, event.data.get("contact_id")) for trigger, event in fired]
        wanted = [(trigger, event, cid) for trigger, event, cid in named if isinstance(cid, str) and cid]
        if not wanted:
            return 0
        known = self.desk.known_contacts([cid for _, _, cid in wanted])
        templates = self.desk.templates.get_many(list({trigger.template_id for trigger, _, _ in wanted}))
        queued_at = rfc3339(self.desk.now())
        messages: dict[str, Message] = {}  # by id: the same event twice in one batch is one message
        metas: dict[str, Metadata] = {}
        for trigger, event, contact_id in wanted:
            template = templates.get(trigger.template_id)
            if contact_id not in known or template is None or template.channel != trigger.channel:
                continue
            message = Message.queue(
                derived_id("trigger", trigger.id, event.id),
                {
                    "contact_id": contact_id,
                    "channel": trigger.channel,
                    "template_id": trigger.template_id,
                    "trigger_id": trigger.id,
                    "category": template.category,
                    "variables": {**self._event_variables(event, contact_id), **trigger.variables},
                },
                queued_at,
            )
            messages[message.id] = message
            metas[message.id] = Metadata(
                actor=f"trigger:{trigger.id}", causation_id=event.id, correlation_id=event.correlation_id or event.id
            )
        repeats = self.desk.queue_many(list(messages.values()), lambda m: metas[m.id])
        return len(messages) - len(repeats)

    def _event_variables(self, event: RecordedEvent, contact_id: str) -> dict[str, Any]:
        """The event's scalar data for the template; for a solved ticket its survey link, for a stale
        contact the link to confirm their details."""
        scalars: dict[str, Any] = {k: v for k, v in event.data.items() if isinstance(v, str | int | float | bool)}
        if event.full_type == TICKET_SOLVED:
            scalars["survey_url"] = self.survey_link(event.data.get("ticket_id") or event.stream_id, contact_id)
        if event.full_type == SERVQUAL_SURVEY_SENT:
            scalars["survey_url"] = self.servqual_link(event.data.get("survey_id") or event.stream_id, contact_id)
        if event.full_type == CONTACT_STALE and isinstance(event.data.get("since"), str):
            scalars["confirm_url"] = self.confirm_link(contact_id, event.data["since"])
        return scalars

    def survey_link(self, ticket_id: str, contact_id: str) -> str:
        """The service desk's survey page for this ticket: a signed link that rates it once, no login."""
        token = signing.sign("survey", {"ticket_id": ticket_id, "contact_id": contact_id}, ttl=SURVEY_LINK_TTL)
        return f"{self.desk.config.survey_url}/{token}"

    def servqual_link(self, survey_id: str, contact_id: str) -> str:
        """The service desk's SERVQUAL questionnaire: a signed link (purpose `servqual`) that answers it once."""
        token = signing.sign("servqual", {"survey_id": survey_id, "contact_id": contact_id}, ttl=SURVEY_LINK_TTL)
        return f"{self.desk.config.survey_url}/servqual/{token}"

    def confirm_link(self, contact_id: str, since: str) -> str:
        """The contacts service's page where this person confirms their details: a signed link that
        answers this stale flag (`since`) once, no login."""
        token = signing.sign(CONFIRM_PURPOSE, {"c": contact_id, "s": since}, ttl=CONFIRM_LINK_TTL)
        return f"{self.desk.config.details_url}/{token}"

    def reset(self) -> None:
        """Nothing to drop: what a trigger queued are messages (events), not a read model."""


SURVEY_TEMPLATE = "tpl-satisfaction-survey"
WELCOME_TEMPLATE = "tpl-welcome"
SERVQUAL_TEMPLATE = "tpl-servqual-survey"
CONFIRM_TEMPLATE = "tpl-confirm-details"

DEFAULT_TEMPLATES = {
    SURVEY_TEMPLATE: {
        "name": "Satisfaction survey (ticket solved)",
        "channel": "email",
        "category": "transactional",
        "default_locale": "en",
        "variants": {
            "en": {
                "subject": "How did we do? (ticket {{ ticket_id }})",
                "body": "Hello {{ first_name or 'there' }},\n\nYour request {{ ticket_id }} has been solved. "
                "Please tell us how we did:\n{{ survey_url }}\n\nThank you.",
            },
            "fa": {
                "subject": "نظر شما درباره درخواست {{ ticket_id }}",
                "body": "{{ first_name }} عزیز،\n\nدرخواست شما ({{ ticket_id }}) حل شد. "
                "لطفاً نظرتان را به ما بگویید:\n{{ survey_url }}\n\nسپاس.",
            },
        },
    },
    WELCOME_TEMPLATE: {
        "name": "Welcome (deal won)",
        "channel": "email",
        "category": "transactional",
        "default_locale": "en",
        "variants": {
            "en": {
                "subject": "Welcome aboard, {{ first_name or 'friend' }}",
                "body": "Hello {{ name or 'there' }},\n\nThank you for choosing us. "
                "We are glad to have you as a customer.",
            },
            "fa": {
                "subject": "{{ first_name }} عزیز، خوش آمدید",
                "body": "{{ name }} عزیز،\n\nاز اینکه ما را انتخاب کردید سپاسگزاریم.",
            },
        },
    },
    # marketing, not transactional: a request to update one's details serves the sender's records, not
    # a transaction the person asked for (the UK ICO fined Flybe and Honda in 2017 for exactly such
    # mails to people who had opted out), so it goes only with consent and carries an unsubscribe link
    CONFIRM_TEMPLATE: {
        "name": "Confirm your details (contact became stale)",
        "channel": "email",
        "category": "marketing",
        "default_locale": "en",
        "variants": {
            "en": {
                "subject": "Are your details still up to date?",
                "body": "Hello {{ first_name or 'there' }},\n\nIt has been a while since you confirmed the "
                "details we hold about you. Please check them, correct anything that has changed, "
                "and confirm:\n{{ confirm_url }}\n\nThank you.",
            },
            "fa": {
                "subject": "آیا مشخصات شما هنوز به‌روز است؟",
                "body": "{{ first_name }} عزیز،\n\nمدتی است مشخصاتی را که از شما داریم تأیید نکرده‌اید. "
                "لطفاً آن را بررسی، در صورت تغییر اصلاح و تأیید کنید:\n{{ confirm_url }}\n\nسپاس.",
            },
            "ar": {
                "subject": "هل ما زالت بياناتك محدّثة؟",
                "body": "مرحبًا {{ first_name }}،\n\nمضى بعض الوقت منذ أن أكدت البيانات التي نحتفظ بها عنك. "
                "يرجى مراجعتها وتصحيح ما تغيّر منها ثم تأكيدها:\n{{ confirm_url }}\n\nشكرًا لك.",
            },
        },
    },
}

DEFAULT_TEMPLATES[SERVQUAL_TEMPLATE] = {
    "name": "SERVQUAL survey (sent by the service desk)",
    "channel": "email",
    "category": "transactional",
    "default_locale": "en",
    "variants": {
        "en": {
            "subject": "How well does our service meet your expectations?",
            "body": "Hello {{ first_name or 'there' }},\n\nWe would like to know how well our service meets what "
            "you expect. The questionnaire takes about five minutes:\n{{ survey_url }}\n\nThank you.",
        },
        "fa": {
            "subject": "خدمات ما تا چه اندازه با انتظارات شما هماهنگ است؟",
            "body": "{{ first_name }} عزیز،\n\nمی‌خواهیم بدانیم خدمات ما تا چه اندازه با انتظارات شما هماهنگ "
            "است. پاسخ به این پرسش‌نامه حدود پنج دقیقه زمان می‌برد:\n{{ survey_url }}\n\nسپاس.",
        },
    },
}

DEFAULT_TRIGGERS = {
    # the service desk sends a SERVQUAL survey only when its policy (off by default) or staff say so
    "trg-servqual-survey": {
        "name": "SERVQUAL survey sent → its questionnaire link",
        "event_type": SERVQUAL_SURVEY_SENT,
        "filter": {},
        "template_id": SERVQUAL_TEMPLATE,
        "channel": "email",
        "variables": {},
        "enabled": True,
    },
    "trg-ticket-solved-survey": {
        "name": "Ticket solved → satisfaction survey",
        "event_type": TICKET_SOLVED,
        "filter": {},
        "template_id": SURVEY_TEMPLATE,
        "channel": "email",
        "variables": {},
        "enabled": True,
    },
    "trg-deal-won-welcome": {
        "name": "Deal won → welcome",
        "event_type": "crm.sales.DealWon.v1",
        "filter": {},
        "template_id": WELCOME_TEMPLATE,
        "channel": "email",
        "variables": {},
        "enabled": True,
    },
    # off until an installation turns it on (PATCH /v1/triggers/trg-contact-stale-confirm): it is marketing
    "trg-contact-stale-confirm": {
        "name": "Contact became stale → confirm your details",
        "event_type": CONTACT_STALE,
        "filter": {},
        "template_id": CONFIRM_TEMPLATE,
        "channel": "email",
        "variables": {},
        "enabled": False,
    },
}


def install_defaults(desk: MessageDesk) -> None:
    """The shipped templates and triggers, created once with fixed ids (repeating does nothing)."""
    meta = Metadata(actor="service:messaging", correlation_id="defaults")
    for template_id, fields in DEFAULT_TEMPLATES.items():
        if not desk.runtime.store.load(template_id):
            with contextlib.suppress(ConcurrencyError, Conflict):
                desk.define_template(dict(fields), meta, template_id=template_id)
    for trigger_id, trigger in DEFAULT_TRIGGERS.items():
        desk.register_trigger(trigger_id)  # also for defaults stored before the register existed
        if not desk.runtime.store.load(trigger_id):
            with contextlib.suppress(ConcurrencyError, Conflict):
                desk.define_trigger(dict(trigger), meta, trigger_id=trigger_id)
