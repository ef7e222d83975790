"""Every event the service desk emits: meaning, JSON Schema of `data`, an example.

`make catalogue` turns this into docs/events/; with CRM_STRICT_EVENTS=1 (tests) the
event store refuses anything not described here (docs/events-versioning.md). What the
customer wrote (`domain.PERSONAL_DATA`: a ticket's subject and description, a customer
comment's `customer_body`, the rating `comment`) is sealed with the *ticket's* key,
which is forgotten when a person on the ticket is erased. A ticket event's subject is
the ticket id; an SLA policy event's is the policy id. Times are RFC 3339 strings.
"""

from __future__ import annotations

from typing import Any

from crm_servicedesk.domain import (
    CHANNELS,
    ESCALATIONS,
    PERSONAL_DATA,
    PRIORITIES,
    SERVQUAL,
    STATUSES,
    TARGETS,
    TYPES,
    WEEKDAYS,
)
from crm_servicedesk.inbound_report import REPORT_EVENTS
from crm_servicedesk.servqual_events import EVENT_TYPES as SERVQUAL_EVENTS
from crmkit.catalogue import Catalogue, EventType
from crmkit.events import Upcasters

ID = {"type": "string", "minLength": 1}
OPTIONAL_ID = {"type": ["string", "null"], "minLength": 1}
TEXT = {"type": "string", "minLength": 1}
OPTIONAL_TEXT = {"type": ["string", "null"]}
TIME = {"type": "string", "format": "date-time"}
PRIORITY = {"enum": list(PRIORITIES)}
STATUS = {"enum": list(STATUSES)}
TARGET = {"enum": list(TARGETS)}
MINUTES = {"type": ["number", "null"], "minimum": 0, "description": "business minutes under the ticket's policy"}
HHMM = {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"}
TARGET_MINUTES = {"type": ["integer", "null"], "minimum": 1, "description": "business minutes; null: no target"}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties}


TARGETS_OF_A_PRIORITY = _object(list(TARGETS), {name: TARGET_MINUTES for name in TARGETS})
BUSINESS_HOURS = {
    **_object(["time_zone", "working_days", "start", "end"], {
        "time_zone": {"type": "string", "minLength": 1, "description": "an IANA time zone, e.g. Asia/Tehran"},
        "working_days": {"type": "array", "items": {"enum": list(WEEKDAYS)}, "minItems": 1, "maxItems": 7},
        "start": HHMM,
        "end": {"type": "string", "pattern": "^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"},
    }),
    "type": ["object", "null"],
    "description": "local working hours; null: 24/7",
}
ESCALATION = _object(["action", "assignee", "group"], {
    "action": {"enum": list(ESCALATIONS)}, "assignee": OPTIONAL_TEXT, "group": OPTIONAL_TEXT})
POLICY_FIELDS: dict[str, Any] = {
    "name": TEXT,
    "description": OPTIONAL_TEXT,
    "targets": _object(list(PRIORITIES), {p: TARGETS_OF_A_PRIORITY for p in PRIORITIES}),
    "business_hours": BUSINESS_HOURS,
    "holidays": {"type": "array", "items": {"type": "string", "format": "date"}},
    "customer_tiers": {"type": "array", "items": TEXT,
                       "description": "the tiers it applies to (e.g. strategic); empty: every customer"},
    "escalation": ESCALATION,
    "enabled": {"type": "boolean"},
}
EFFECTIVE_AT = {"type": ["string", "null"], "format": "date-time",
                "description": "in force from then on (until a later version's effective_at); null: since always"}
POLICY_VERSION = _object(["id", "version", *POLICY_FIELDS], {
    "id": ID, "version": {"type": "integer", "minimum": 1, "description": "the policy stream's version"},
    "effective_at": EFFECTIVE_AT, **POLICY_FIELDS})
POLICY_SNAPSHOT = {
    **POLICY_VERSION,
    "type": ["object", "null"],
    "description": "the SLA policy version in force when the ticket opened (kept with the ticket); null: none applied",
}
SERVQUAL_SCORES = {
    "type": ["object", "null"], "additionalProperties": False, "minProperties": 1,
    "properties": {name: {"type": "integer", "minimum": 1, "maximum": 7} for name in SERVQUAL},
}
COMMENT_AUTHORS = [
    {"properties": {"author_type": {"const": "agent"}}, "required": ["body"], "not": {"required": ["customer_body"]}},
    {"properties": {"author_type": {"const": "customer"}, "public": {"const": True}},
     "required": ["customer_body"], "not": {"required": ["body"]}},
]

EVENTS = Catalogue("servicedesk", "Service desk", [
    EventType(
        "TicketOpened", 1, "ticket",
        "A ticket was opened for a contact, with the SLA policy chosen for it now: the version in force "
        "(`sla_policy`) and any recorded to take effect later (`sla_policy_later`, in order), kept with the ticket; "
        "a later revision of the policy reaches it through `SlaRecomputed`. The subject is the ticket id.",
        _object(["subject", "description", "contact_id", "company_id", "deal_id", "channel", "type", "priority",
                 "tags", "assignee", "group", "customer_tier", "opened_at", "sla_policy"], {
            "subject": TEXT, "description": OPTIONAL_TEXT, "contact_id": ID, "company_id": OPTIONAL_ID,
            "deal_id": OPTIONAL_ID, "channel": {"enum": list(CHANNELS)}, "type": {"enum": list(TYPES)},
            "priority": PRIORITY, "tags": {"type": "array", "items": TEXT}, "assignee": OPTIONAL_TEXT,
            "group": OPTIONAL_TEXT, "customer_tier": OPTIONAL_TEXT, "opened_at": TIME, "sla_policy": POLICY_SNAPSHOT,
            "sla_policy_later": {"type": "array", "items": POLICY_VERSION,
                                 "description": "versions scheduled to take effect after the opening; optional"},
            "team": {"type": "string", "maxLength": 100, "description": "the owning team, when it has one (added "
                     "later, optional; not the agent `group`): team-scoped roles see only its tickets"}}),
        {"subject": "Invoice shows the wrong amount", "description": "Charged twice in November.",
         "contact_id": "01a2…", "company_id": None, "deal_id": None, "channel": "email", "type": "complaint",
         "priority": "high", "tags": ["billing"], "assignee": None, "group": "billing", "customer_tier": "strategic",
         "opened_at": "2026-11-26T08:00:00.000Z",
         "sla_policy": {"id": "01c1…", "version": 1, "name": "Strategic", "description": None,
                        "targets": {p: {"first_response": 60, "next_response": 120, "resolution": 480}
                                    for p in PRIORITIES},
                        "business_hours": {"time_zone": "Asia/Tehran",
                                           "working_days": ["saturday", "sunday", "monday", "tuesday", "wednesday"],
                                           "start": "08:00", "end": "17:00"},
                        "holidays": ["2027-03-21"], "customer_tiers": ["strategic"],
                        "escalation": {"action": "raise_priority", "assignee": None, "group": None},
                        "enabled": True}},
        personal=PERSONAL_DATA["TicketOpened"],
    ),
    EventType(
        "TicketCommented", 1, "ticket",
        "A comment was added: an agent's public reply or internal note (`body`), or the customer's reply "
        "(`customer_body`, always public, personal).",
        {**_object(["comment_id", "author_type", "author", "public", "at"], {
            "comment_id": ID, "author_type": {"enum": ["agent", "customer"]}, "author": {"type": "string"},
            "public": {"type": "boolean"}, "body": TEXT, "customer_body": TEXT, "at": TIME}),
         "oneOf": COMMENT_AUTHORS},
        {"comment_id": "01c3…", "author_type": "customer", "author": "contact:01a2…", "public": True,
         "customer_body": "Any news?", "at": "2026-11-26T09:00:00.000Z"},
        personal=PERSONAL_DATA["TicketCommented"],
    ),
    EventType(
        "TicketAssigned", 1, "ticket", "The ticket's assignee and/or group changed (both new values, and the old).",
        _object(["assignee", "group", "previous_assignee", "previous_group", "at"], {
            "assignee": OPTIONAL_TEXT, "group": OPTIONAL_TEXT, "previous_assignee": OPTIONAL_TEXT,
            "previous_group": OPTIONAL_TEXT, "at": TIME}),
        {"assignee": "ana", "group": "billing", "previous_assignee": None, "previous_group": "billing",
         "at": "2026-11-26T08:05:00.000Z"},
    ),
    EventType(
        "TicketStatusChanged", 1, "ticket",
        "The ticket moved along its workflow (`solved` → `open` is a reopen); `reason` `manual`, or "
        "`customer_replied` / `agent_replied` when a comment moved it.",
        _object(["from", "to", "reason", "at"], {
            "from": STATUS, "to": STATUS, "reason": {"enum": ["manual", "customer_replied", "agent_replied"]},
            "at": TIME}),
        {"from": "new", "to": "open", "reason": "agent_replied", "at": "2026-11-26T08:20:00.000Z"},
    ),
    EventType(
        "TicketSolved", 1, "ticket",
        "The ticket was solved (right after its TicketStatusChanged to `solved`), with its resolution and first "
        "response times; messaging sends the satisfaction survey to `contact_id`.",
        _object(["ticket_id", "contact_id", "at", "resolution_minutes", "first_response_minutes"], {
            "ticket_id": ID, "contact_id": ID, "at": TIME, "resolution_minutes": MINUTES,
            "first_response_minutes": MINUTES}),
        {"ticket_id": "01c2…", "contact_id": "01a2…", "at": "2026-11-26T12:00:00.000Z", "resolution_minutes": 240.0,
         "first_response_minutes": 20.0},
    ),
    EventType(
        "SlaBreached", 1, "ticket",
        "Superseded by v2 (still readable: upcast on read, `breached_at` becoming v2's `detected_at` and the due "
        "time v2's `breached_at`). An SLA target of the ticket was missed; `breached_at` was when it was found open "
        "past due, or when it was met late.",
        _object(["key", "target", "priority", "contact_id", "policy_id", "due_at", "breached_at"], {
            "key": {"type": "string", "pattern": "^(first_response|resolution|next_response:[0-9]+)$"},
            "target": TARGET, "priority": PRIORITY, "contact_id": ID, "policy_id": OPTIONAL_ID, "due_at": TIME,
            "breached_at": TIME}),
        {"key": "first_response", "target": "first_response", "priority": "high", "contact_id": "01a2…",
         "policy_id": "01c1…", "due_at": "2026-11-26T09:00:00.000Z", "breached_at": "2026-11-26T09:00:05.000Z"},
    ),
    EventType(
        "SlaBreached", 2, "ticket",
        "An SLA target of the ticket was missed (recorded once per `key`: the target, `next_response:<n>` per "
        "reply cycle). `breached_at` is when the promise broke: the due time, however late it was found (by a sweep, "
        "by the command that met it late, or by a recompute after a policy change); `detected_at` is when it was "
        "recorded. A later `SlaRecomputed` may withdraw or move it.",
        _object(["key", "target", "priority", "contact_id", "policy_id", "due_at", "breached_at", "detected_at"], {
            "key": {"type": "string", "pattern": "^(first_response|resolution|next_response:[0-9]+)$"},
            "target": TARGET, "priority": PRIORITY, "contact_id": ID, "policy_id": OPTIONAL_ID, "due_at": TIME,
            "breached_at": TIME, "detected_at": TIME}),
        {"key": "first_response", "target": "first_response", "priority": "high", "contact_id": "01a2…",
         "policy_id": "01c1…", "due_at": "2026-11-26T09:00:00.000Z", "breached_at": "2026-11-26T09:00:00.000Z",
         "detected_at": "2026-11-26T09:00:05.000Z"},
    ),
    EventType(
        "SlaRecomputed", 1, "ticket",
        "The ticket now follows its policy's versions as they are (`versions`, `timeline`: the version in force "
        "when it opened and every later one), after a revision of the policy or its calendar; its clocks count "
        "working time under the calendar in force at each instant. `due`: each target's due time now (null while "
        "paused); `withdrawn`: breach keys no longer breached; `moved`: breaches whose due (and breach) time moved. "
        "Breaches newly past due follow as SlaBreached.",
        _object(["policy_id", "versions", "timeline", "due", "withdrawn", "moved", "at"], {
            "policy_id": ID, "versions": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
            "timeline": {"type": "array", "items": POLICY_VERSION, "minItems": 1},
            "due": {"type": "array", "items": _object(["key", "target", "due_at"], {
                "key": {"type": "string"}, "target": TARGET, "due_at": {**TIME, "type": ["string", "null"]}})},
            "withdrawn": {"type": "array", "items": {"type": "string"}},
            "moved": {"type": "array", "items": _object(["key", "due_at", "breached_at"], {
                "key": {"type": "string"}, "due_at": TIME, "breached_at": TIME})},
            "at": TIME}),
        {"policy_id": "01c1…", "versions": [1, 2],
         "timeline": [{"id": "01c1…", "version": 1, "effective_at": None, "name": "Standard", "description": None,
                       "targets": {p: {"first_response": 240, "next_response": None, "resolution": 2400}
                                   for p in PRIORITIES},
                       "business_hours": None, "holidays": [], "customer_tiers": [],
                       "escalation": {"action": "none", "assignee": None, "group": None}, "enabled": True},
                      {"id": "01c1…", "version": 2, "effective_at": "2026-03-01T00:00:00.000Z", "name": "Standard",
                       "description": None,
                       "targets": {p: {"first_response": 240, "next_response": None, "resolution": 2400}
                                   for p in PRIORITIES},
                       "business_hours": {"time_zone": "Asia/Tehran",
                                          "working_days": ["saturday", "sunday", "monday", "tuesday", "wednesday"],
                                          "start": "08:00", "end": "16:00"},
                       "holidays": ["2026-03-21", "2026-03-22"], "customer_tiers": [],
                       "escalation": {"action": "none", "assignee": None, "group": None}, "enabled": True}],
         "due": [{"key": "first_response", "target": "first_response", "due_at": "2026-03-03T08:00:00.000Z"}],
         "withdrawn": [], "moved": [{"key": "first_response", "due_at": "2026-03-03T08:00:00.000Z",
                                     "breached_at": "2026-03-03T08:00:00.000Z"}],
         "at": "2026-03-05T10:00:00.000Z"},
    ),
    EventType(
        "TicketEscalated", 1, "ticket",
        "An open target was breached and the policy escalates: the priority was raised, or the ticket reassigned "
        "(`assignee`, `group` are the values from now on).",
        _object(["target", "action", "from_priority", "to_priority", "assignee", "group", "at"], {
            "target": TARGET, "action": {"enum": [a for a in ESCALATIONS if a != "none"]},
            "from_priority": PRIORITY, "to_priority": PRIORITY, "assignee": OPTIONAL_TEXT, "group": OPTIONAL_TEXT,
            "at": TIME}),
        {"target": "first_response", "action": "raise_priority", "from_priority": "high", "to_priority": "urgent",
         "assignee": "ana", "group": "billing", "at": "2026-11-26T09:00:05.000Z"},
    ),
    EventType(
        "SatisfactionRated", 1, "ticket",
        "The customer rated the solved ticket (once): CSAT 1–5, optional NPS 0–10, SERVQUAL dimensions 1–7 and a "
        "comment (personal).",
        _object(["contact_id", "csat", "comment", "nps", "servqual", "at"], {
            "contact_id": ID, "csat": {"type": "integer", "minimum": 1, "maximum": 5}, "comment": OPTIONAL_TEXT,
            "nps": {"type": ["integer", "null"], "minimum": 0, "maximum": 10}, "servqual": SERVQUAL_SCORES,
            "at": TIME}),
        {"contact_id": "01a2…", "csat": 5, "comment": "Quick and kind", "nps": 9,
         "servqual": {"reliability": 6, "empathy": 7}, "at": "2026-11-26T13:00:00.000Z"},
        personal=PERSONAL_DATA["SatisfactionRated"],
    ),
    EventType(
        "TicketContactChanged", 1, "ticket",
        "The ticket now belongs to another contact: its contact was merged into `contact_id` (`merge_id` names "
        "the merge), or that merge was reversed (back to the duplicate `contact_id`).",
        _object(["contact_id", "previous_contact_id", "reason", "at"], {
            "contact_id": ID, "previous_contact_id": ID,
            "reason": {"enum": ["contact_merged", "contact_unmerged"],
                       "description": "why: the contact was merged into another; or that merge was reversed "
                                      "(`contact_unmerged`, added later: a new value)"},
            "at": TIME,
            "merge_id": {**ID, "description": "the contacts service's ContactMerged event that caused the move "
                                              "(or whose reversal did); also the envelope's causationid"}}),
        {"contact_id": "01a2…", "previous_contact_id": "01a3…", "reason": "contact_merged",
         "at": "2026-11-27T08:00:00.000Z"},
    ),
    EventType(
        "TicketCustomerDataErased", 1, "ticket",
        "A person on the ticket was erased: drop what they wrote (subject, description, their comments, the rating "
        "comment); the ticket's key is deleted, so every sealed field of this ticket becomes unreadable.",
        _object(["contact_id", "at"], {"contact_id": ID, "at": TIME}),
        {"contact_id": "01a2…", "at": "2026-11-28T08:00:00.000Z"},
    ),
    EventType(
        "SlaPolicyDefined", 1, "sla_policy",
        "An SLA policy was defined: targets per priority in business minutes, business hours, holidays, the "
        "customer tiers it applies to, and what a breach escalates to. The subject is the policy id.",
        _object(["policy_id", *POLICY_FIELDS], {"policy_id": ID, **POLICY_FIELDS}),
        {"policy_id": "01c1…", "name": "Standard", "description": None,
         "targets": {p: {"first_response": 240, "next_response": None, "resolution": 2400} for p in PRIORITIES},
         "business_hours": {"time_zone": "Europe/Berlin",
                            "working_days": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                            "start": "09:00", "end": "17:00"},
         "holidays": ["2026-12-25"], "customer_tiers": [],
         "escalation": {"action": "reassign", "assignee": None, "group": "tier-2"}, "enabled": True},
    ),
    EventType(
        "SlaPolicyRevised", 1, "sla_policy",
        "A new version of the SLA policy (its stream version), in force from `effective_at` on (past or future), "
        "replacing from then on whatever was in force, later scheduled versions included. Carries every field as "
        "revised (`changed` names those that differ from the version before); the calendar (business hours, "
        "holidays) is part of the policy, and holidays taken from a country's public holidays are stored as the "
        "dates they expanded to. Open tickets follow it through SlaRecomputed.",
        _object(["policy_id", "effective_at", "changed", *POLICY_FIELDS], {
            "policy_id": ID, "effective_at": TIME,
            "changed": {"type": "array", "items": {"enum": list(POLICY_FIELDS)}}, **POLICY_FIELDS}),
        {"policy_id": "01c1…", "effective_at": "2026-03-01T00:00:00.000Z", "changed": ["business_hours", "holidays"],
         "name": "Standard", "description": None,
         "targets": {p: {"first_response": 240, "next_response": None, "resolution": 2400} for p in PRIORITIES},
         "business_hours": {"time_zone": "Asia/Tehran",
                            "working_days": ["saturday", "sunday", "monday", "tuesday", "wednesday"],
                            "start": "08:00", "end": "16:00"},
         "holidays": ["2026-03-21", "2026-03-22"], "customer_tiers": [],
         "escalation": {"action": "reassign", "assignee": None, "group": "tier-2"}, "enabled": True},
    ),
    *REPORT_EVENTS,  # bounces and complaints the support mailbox received, for messaging (inbound_report)
    *SERVQUAL_EVENTS,  # the SERVQUAL instrument, policy, surveys and answers (servqual_events)
])

UPCASTERS = Upcasters()


@UPCASTERS.register("SlaBreached", 1)
def _breached_at_due_time(data: dict[str, Any]) -> dict[str, Any]:
    """v1 → v2: the breach happened at the due time; v1's `breached_at` was when it was found."""
    return {**data, "breached_at": data["due_at"], "detected_at": data["breached_at"]}
