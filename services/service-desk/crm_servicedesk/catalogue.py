"""Every event the service desk emits, for `make catalogue` (docs/events/) and the strict check.

Each type's meaning, JSON Schema and personal fields come from its class, declared with its
aggregate (`domain.Ticket`, `domain.SlaPolicy`; crmkit.domainevents): here only an example of
each. With CRM_STRICT_EVENTS=1 (tests) the event store refuses anything not described here
(docs/events-versioning.md). What the customer wrote (`domain.PERSONAL_DATA`: a ticket's subject
and description, a customer comment's `customer_body`, the rating `comment`) is sealed with the
*ticket's* key, which is forgotten when a person on the ticket is erased. A ticket event's subject
is the ticket id; an SLA policy event's is the policy id. Times are RFC 3339 strings.
"""

from __future__ import annotations

from typing import Any

from crm_servicedesk.domain import PRIORITIES, SlaPolicy, Ticket
from crm_servicedesk.inbound_report import REPORT_EVENTS
from crm_servicedesk.servqual_events import EVENT_TYPES as SERVQUAL_EVENTS
from crmkit.catalogue import Catalogue, EventType
from crmkit.events import Upcasters

EVENTS = Catalogue(
    "servicedesk",
    "Service desk",
    [
        EventType.of(
            Ticket.TicketOpened,
            {
                "subject": "Invoice shows the wrong amount",
                "description": "Charged twice in November.",
                "contact_id": "01a2…",
                "company_id": None,
                "deal_id": None,
                "channel": "email",
                "type": "complaint",
                "priority": "high",
                "tags": ["billing"],
                "assignee": None,
                "group": "billing",
                "customer_tier": "strategic",
                "opened_at": "2026-11-26T08:00:00.000Z",
                "sla_policy": {
                    "id": "01c1…",
                    "version": 1,
                    "name": "Strategic",
                    "description": None,
                    "targets": {p: {"first_response": 60, "next_response": 120, "resolution": 480} for p in PRIORITIES},
                    "business_hours": {
                        "time_zone": "Asia/Tehran",
                        "working_days": ["saturday", "sunday", "monday", "tuesday", "wednesday"],
                        "start": "08:00",
                        "end": "17:00",
                    },
                    "holidays": ["2027-03-21"],
                    "customer_tiers": ["strategic"],
                    "escalation": {"action": "raise_priority", "assignee": None, "group": None},
                    "enabled": True,
                },
            },
        ),
        EventType.of(
            Ticket.TicketCommented,
            {
                "comment_id": "01c3…",
                "author_type": "customer",
                "author": "contact:01a2…",
                "public": True,
                "customer_body": "Any news?",
                "at": "2026-11-26T09:00:00.000Z",
            },
        ),
        EventType.of(
            Ticket.TicketAssigned,
            {
                "assignee": "ana",
                "group": "billing",
                "previous_assignee": None,
                "previous_group": "billing",
                "at": "2026-11-26T08:05:00.000Z",
            },
        ),
        EventType.of(
            Ticket.TicketStatusChanged,
            {"from": "new", "to": "open", "reason": "agent_replied", "at": "2026-11-26T08:20:00.000Z"},
        ),
        EventType.of(
            Ticket.TicketSolved,
            {
                "ticket_id": "01c2…",
                "contact_id": "01a2…",
                "at": "2026-11-26T12:00:00.000Z",
                "resolution_minutes": 240.0,
                "first_response_minutes": 20.0,
            },
        ),
        EventType.of(
            Ticket.SlaBreachedV1,
            {
                "key": "first_response",
                "target": "first_response",
                "priority": "high",
                "contact_id": "01a2…",
                "policy_id": "01c1…",
                "due_at": "2026-11-26T09:00:00.000Z",
                "breached_at": "2026-11-26T09:00:05.000Z",
            },
        ),
        EventType.of(
            Ticket.SlaBreached,
            {
                "key": "first_response",
                "target": "first_response",
                "priority": "high",
                "contact_id": "01a2…",
                "policy_id": "01c1…",
                "due_at": "2026-11-26T09:00:00.000Z",
                "breached_at": "2026-11-26T09:00:00.000Z",
                "detected_at": "2026-11-26T09:00:05.000Z",
            },
        ),
        EventType.of(
            Ticket.SlaRecomputed,
            {
                "policy_id": "01c1…",
                "versions": [1, 2],
                "timeline": [
                    {
                        "id": "01c1…",
                        "version": 1,
                        "effective_at": None,
                        "name": "Standard",
                        "description": None,
                        "targets": {
                            p: {"first_response": 240, "next_response": None, "resolution": 2400} for p in PRIORITIES
                        },
                        "business_hours": None,
                        "holidays": [],
                        "customer_tiers": [],
                        "escalation": {"action": "none", "assignee": None, "group": None},
                        "enabled": True,
                    },
                    {
                        "id": "01c1…",
                        "version": 2,
                        "effective_at": "2026-03-01T00:00:00.000Z",
                        "name": "Standard",
                        "description": None,
                        "targets": {
                            p: {"first_response": 240, "next_response": None, "resolution": 2400} for p in PRIORITIES
                        },
                        "business_hours": {
                            "time_zone": "Asia/Tehran",
                            "working_days": ["saturday", "sunday", "monday", "tuesday", "wednesday"],
                            "start": "08:00",
                            "end": "16:00",
                        },
                        "holidays": ["2026-03-21", "2026-03-22"],
                        "customer_tiers": [],
                        "escalation": {"action": "none", "assignee": None, "group": None},
                        "enabled": True,
                    },
                ],
                "due": [{"key": "first_response", "target": "first_response", "due_at": "2026-03-03T08:00:00.000Z"}],
                "withdrawn": [],
                "moved": [
                    {
                        "key": "first_response",
                        "due_at": "2026-03-03T08:00:00.000Z",
                        "breached_at": "2026-03-03T08:00:00.000Z",
                    }
                ],
                "at": "2026-03-05T10:00:00.000Z",
            },
        ),
        EventType.of(
            Ticket.TicketEscalated,
            {
                "target": "first_response",
                "action": "raise_priority",
                "from_priority": "high",
                "to_priority": "urgent",
                "assignee": "ana",
                "group": "billing",
                "at": "2026-11-26T09:00:05.000Z",
            },
        ),
        EventType.of(
            Ticket.SatisfactionRated,
            {
                "contact_id": "01a2…",
                "csat": 5,
                "comment": "Quick and kind",
                "nps": 9,
                "servqual": {"reliability": 6, "empathy": 7},
                "at": "2026-11-26T13:00:00.000Z",
            },
        ),
        EventType.of(
            Ticket.TicketContactChanged,
            {
                "contact_id": "01a2…",
                "previous_contact_id": "01a3…",
                "reason": "contact_merged",
                "at": "2026-11-27T08:00:00.000Z",
            },
        ),
        EventType.of(
            Ticket.TicketCustomerDataErased,
            {"contact_id": "01a2…", "at": "2026-11-28T08:00:00.000Z"},
        ),
        EventType.of(
            SlaPolicy.SlaPolicyDefined,
            {
                "policy_id": "01c1…",
                "name": "Standard",
                "description": None,
                "targets": {p: {"first_response": 240, "next_response": None, "resolution": 2400} for p in PRIORITIES},
                "business_hours": {
                    "time_zone": "Europe/Berlin",
                    "working_days": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                    "start": "09:00",
                    "end": "17:00",
                },
                "holidays": ["2026-12-25"],
                "customer_tiers": [],
                "escalation": {"action": "reassign", "assignee": None, "group": "tier-2"},
                "enabled": True,
            },
        ),
        EventType.of(
            SlaPolicy.SlaPolicyRevised,
            {
                "policy_id": "01c1…",
                "effective_at": "2026-03-01T00:00:00.000Z",
                "changed": ["business_hours", "holidays"],
                "name": "Standard",
                "description": None,
                "targets": {p: {"first_response": 240, "next_response": None, "resolution": 2400} for p in PRIORITIES},
                "business_hours": {
                    "time_zone": "Asia/Tehran",
                    "working_days": ["saturday", "sunday", "monday", "tuesday", "wednesday"],
                    "start": "08:00",
                    "end": "16:00",
                },
                "holidays": ["2026-03-21", "2026-03-22"],
                "customer_tiers": [],
                "escalation": {"action": "reassign", "assignee": None, "group": "tier-2"},
                "enabled": True,
            },
        ),
        *REPORT_EVENTS,  # bounces and complaints the support mailbox received, for messaging (inbound_report)
        *SERVQUAL_EVENTS,  # the SERVQUAL instrument, policy, surveys and answers (servqual_events)
    ],
)

UPCASTERS = Upcasters()


@UPCASTERS.register("SlaBreached", 1)
def _breached_at_due_time(data: dict[str, Any]) -> dict[str, Any]:
    """v1 → v2: the breach happened at the due time; v1's `breached_at` was when it was found."""
    return {**data, "breached_at": data["due_at"], "detected_at": data["breached_at"]}
