"""Every event the messaging service emits, for `make catalogue` (docs/events/) and the strict check.

Each type's meaning, JSON Schema and personal fields come from its class, declared with its
aggregate (`domain.Message`, `Template`, `Campaign`, `Trigger`, `suppressions.Suppression`;
crmkit.domainevents): here only an example of each. With CRM_STRICT_EVENTS=1 (tests) the event
store refuses anything not described here (docs/events-versioning.md). A message's personal data
(`domain.PERSONAL_DATA`: the call's variables, explicit or rendered subject and body, the
address) is sealed with the message's own key, which is deleted when the contact is erased. The
consent proof a send or suppression carries (`consent`) is not personal: it stays readable after
an erasure, as evidence must.
"""

from __future__ import annotations

from crm_messaging.domain import Campaign, Message, Template, Trigger
from crm_messaging.suppressions import SUPPRESSION_EVENTS
from crmkit.catalogue import Catalogue, EventType

EVENTS = Catalogue(
    "messaging",
    "Messaging",
    [
        EventType.of(
            Message.MessageQueued,
            {
                "message_id": "01c1…",
                "contact_id": "01a2…",
                "channel": "email",
                "category": "transactional",
                "template_id": "tpl-welcome",
                "campaign_id": None,
                "trigger_id": "trg-deal-won-welcome",
                "subject": None,
                "body": None,
                "variables": {"deal_id": "01b2…", "amount": "13080.00"},
                "queued_at": "2026-12-20T08:00:00.120Z",
            },
        ),
        EventType.of(
            Message.MessageSuppressed,
            {
                "message_id": "01c1…",
                "contact_id": "01a2…",
                "reason": "consent_withdrawn",
                "consent": {
                    "contact_id": "01a2…",
                    "granted": False,
                    "reason": "consent_withdrawn",
                    "status": "withdrawn",
                    "legal_basis": "consent",
                    "source": "unsubscribe_link",
                    "decided_at": "2026-12-18T21:04:00.000Z",
                    "event_id": "01a9…",
                    "event_version": 7,
                    "checked_at": "2026-12-20T08:00:01.000Z",
                },
            },
        ),
        EventType.of(
            Message.MessageRetryScheduled,
            {
                "message_id": "01c1…",
                "attempt": 1,
                "error": "smtp: connection refused",
                "retry_at": "2026-12-20T08:00:30.120Z",
            },
        ),
        EventType.of(
            Message.MessageSent,
            {
                "message_id": "01c1…",
                "contact_id": "01a2…",
                "channel": "email",
                "provider": "smtp",
                "provider_message_id": "<01c1…@crm.example>",
                "address": "ali@example.com",
                "subject": "Welcome aboard, Ali",
                "body": "Hello Ali Rezaei, …",
                "attempt": 1,
                "sent_at": "2026-12-20T08:00:01.000Z",
                "consent": {
                    "contact_id": "01a2…",
                    "granted": True,
                    "reason": None,
                    "status": "granted",
                    "legal_basis": "contract",
                    "source": "web_form",
                    "decided_at": "2026-11-26T08:00:00.000Z",
                    "event_id": "01a8…",
                    "event_version": 3,
                    "checked_at": "2026-12-20T08:00:01.000Z",
                },
            },
        ),
        EventType.of(
            Message.MessageDelivered,
            {
                "message_id": "01c1…",
                "contact_id": "01a2…",
                "provider": "smtp",
                "delivered_at": "2026-12-20T08:00:03.000Z",
            },
        ),
        EventType.of(
            Message.MessageContactChanged,
            {"message_id": "01c1…", "from": "01a3…", "to": "01a2…", "reason": "contact_merged", "merge_id": "01c9…"},
        ),
        EventType.of(
            Message.MessageFailed,
            {
                "message_id": "01c1…",
                "contact_id": "01a2…",
                "reason": "mailbox unavailable",
                "failed_at": "2026-12-20T08:05:00.000Z",
                "bounced": True,
            },
        ),
        EventType.of(
            Template.TemplateDefined,
            {
                "template_id": "tpl-welcome",
                "name": "Welcome (deal won)",
                "channel": "email",
                "category": "transactional",
                "default_locale": "en",
                "variants": {
                    "en": {
                        "subject": "Welcome aboard, {{ first_name or 'friend' }}",
                        "body": "Hello {{ name or 'there' }}, …",
                    }
                },
            },
        ),
        EventType.of(
            Template.TemplateUpdated,
            {"template_id": "tpl-welcome", "changes": {"default_locale": "fa"}},
        ),
        EventType.of(
            Campaign.CampaignCreated,
            {
                "campaign_id": "01c3…",
                "name": "Winter offer",
                "segment_id": "01a5…",
                "template_id": "01c2…",
                "channel": "email",
                "throttle_per_minute": 600,
            },
        ),
        EventType.of(
            Campaign.CampaignLaunched,
            {
                "campaign_id": "01c3…",
                "segment_id": "01a5…",
                "template_id": "01c2…",
                "channel": "email",
                "scheduled_at": "2026-12-01T08:00:00.000Z",
                "launched_at": "2026-11-30T15:00:00.000Z",
            },
        ),
        EventType.of(
            Campaign.CampaignTargeted,
            {"campaign_id": "01c3…", "targeted": 1250},
        ),
        EventType.of(Campaign.CampaignPaused, {"campaign_id": "01c3…"}),
        EventType.of(Campaign.CampaignResumed, {"campaign_id": "01c3…"}),
        EventType.of(Campaign.CampaignCancelled, {"campaign_id": "01c3…"}),
        EventType.of(
            Campaign.CampaignCompleted,
            {"campaign_id": "01c3…", "completed_at": "2026-12-01T09:12:00.000Z"},
        ),
        EventType.of(
            Trigger.TriggerDefined,
            {
                "trigger_id": "trg-deal-won-welcome",
                "name": "Deal won → welcome",
                "event_type": "crm.sales.DealWon.v1",
                "filter": {},
                "template_id": "tpl-welcome",
                "channel": "email",
                "variables": {},
                "enabled": True,
            },
        ),
        EventType.of(Trigger.TriggerEnabled, {"trigger_id": "trg-deal-won-welcome"}),
        EventType.of(Trigger.TriggerDisabled, {"trigger_id": "trg-deal-won-welcome"}),
        *SUPPRESSION_EVENTS,  # bounced and complained addresses (suppressions.py)
    ],
)
