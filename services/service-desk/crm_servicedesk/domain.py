"""Tickets and SLA policies: aggregates that decide. Pure Python, no I/O.

An SLA policy is a series of versions, each in force from its `effective_at` on (the
first since always): `SlaPolicyRevised` records a new one, possibly effective in the
past or in the future. The business calendar (hours, time zone, holidays) is part of a
policy, so one stream says which targets and which calendar applied at every moment.

A ticket carries snapshots of its policy's versions (from the one in force when it was
opened on), so its due times are a pure function of its own events and "now". When the
policy changes, a recompute appends `SlaRecomputed` with the versions as they are now;
the ticket's clocks are then counted piecewise: working time under the calendar in
force at each instant, against the target in force when the clock started. Times
inside events and state are RFC 3339 strings.

Each aggregate declares its events (crmkit.domainevents): the catalogue's schemas follow from
the dataclasses; a policy as tickets and policy events carry it stays plain JSON, its shape
given once here (`POLICY_SCHEMA`, `POLICY_VERSION`).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from crm_servicedesk import business_hours as bh
from crmkit.aggregate import Aggregate
from crmkit.domainevents import DomainEvent, json_schema, personal_fields, spec
from crmkit.errors import Conflict, ValidationFailed
from crmkit.events import new_id, parse_time, rfc3339

CHANNELS = ("email", "phone", "web", "sms", "chat")
TYPES = ("complaint", "question", "request", "incident")
PRIORITIES = ("low", "normal", "high", "urgent")
STATUSES = ("new", "open", "pending", "on_hold", "solved", "closed")
ACTIVE = ("new", "open", "pending", "on_hold")
PAUSED = ("pending", "on_hold")  # waiting on the customer or a third party: the SLA clock stops
TRANSITIONS = {
    "new": ("open", "pending", "on_hold", "solved"),
    "open": ("pending", "on_hold", "solved"),
    "pending": ("open", "on_hold", "solved"),
    "on_hold": ("open", "pending", "solved"),
    "solved": ("open", "closed"),  # open again = reopen
    "closed": (),
}
TARGETS = ("first_response", "next_response", "resolution")
ESCALATIONS = ("none", "raise_priority", "reassign")
SERVQUAL = ("tangibles", "reliability", "responsiveness", "assurance", "empathy")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MAX_HOLIDAYS = 1000  # dates in one calendar
NEVER_MS = 2**62  # "nothing due": an integer, because the stand-in compares null with numbers

# JSON shapes the events' type hints cannot say: a policy's parts as tickets keep them (plain JSON).
TEXT = {"type": "string", "minLength": 1}
TIME = {"format": "date-time"}  # spec(format="date-time"): an RFC 3339 string
ID = {"minLength": 1}  # spec(minLength=1): a non-empty id
HHMM = {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"}
TARGET_MINUTES = {"type": ["integer", "null"], "minimum": 1, "description": "business minutes; null: no target"}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties}


TARGETS_SCHEMA = _object(
    list(PRIORITIES), {p: _object(list(TARGETS), {name: TARGET_MINUTES for name in TARGETS}) for p in PRIORITIES}
)
BUSINESS_HOURS = {
    **_object(
        ["time_zone", "working_days", "start", "end"],
        {
            "time_zone": {"type": "string", "minLength": 1, "description": "an IANA time zone, e.g. Asia/Tehran"},
            "working_days": {"type": "array", "items": {"enum": list(WEEKDAYS)}, "minItems": 1, "maxItems": 7},
            "start": HHMM,
            "end": {"type": "string", "pattern": "^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"},
        },
    ),
    "type": ["object", "null"],
    "description": "local working hours; null: 24/7",
}
ESCALATION = _object(
    ["action", "assignee", "group"],
    {
        "action": {"enum": list(ESCALATIONS)},
        "assignee": {"type": ["string", "null"]},
        "group": {"type": ["string", "null"]},
    },
)
SERVQUAL_SCORES = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {name: {"type": "integer", "minimum": 1, "maximum": 7} for name in SERVQUAL},
}
COMMENT_AUTHORS = [
    {"properties": {"author_type": {"const": "agent"}}, "required": ["body"], "not": {"required": ["customer_body"]}},
    {
        "properties": {"author_type": {"const": "customer"}, "public": {"const": True}},
        "required": ["customer_body"],
        "not": {"required": ["body"]},
    },
]


def calendar_of(policy: dict[str, Any] | None) -> bh.Calendar:
    """The business-hours calendar of a policy snapshot (24/7 without one)."""
    hours = (policy or {}).get("business_hours")
    holidays = frozenset(datetime.fromisoformat(day).date() for day in (policy or {}).get("holidays") or ())
    if not hours:
        return bh.Calendar("UTC", frozenset(range(7)), time(0, 0), None, holidays)
    end = hours["end"]
    return bh.Calendar(
        hours["time_zone"],
        frozenset(WEEKDAYS.index(day) for day in hours["working_days"]),
        time.fromisoformat(hours["start"]),
        None if end == "24:00" else time.fromisoformat(end),
        holidays,
    )


def strictness(policy: dict[str, Any], priority: str) -> tuple[float, float, float]:
    """Smaller is stricter: resolution, then first response, then next response targets."""
    targets = policy["targets"].get(priority) or {}
    return tuple(
        targets.get(name) if targets.get(name) is not None else float("inf")  # type: ignore[return-value]
        for name in ("resolution", "first_response", "next_response")
    )


def choose_policy(policies: list[dict[str, Any]], priority: str, tier: str | None) -> dict[str, Any] | None:
    """The policy a new ticket gets: the strictest of those that apply to the customer.

    A policy with `customer_tiers` applies only to customers of those tiers (e.g.
    strategic); one without applies to everyone. So a strategic customer gets the
    stricter of the general and the strategic policy.
    """
    fitting = [
        p
        for p in policies
        if p.get("enabled", True)
        and (not p.get("customer_tiers") or (tier is not None and tier in p["customer_tiers"]))
    ]
    if not fitting:
        return None
    return min(fitting, key=lambda p: (strictness(p, priority), p["id"]))


POLICY_FIELDS = (
    "name",
    "description",
    "targets",
    "business_hours",
    "holidays",
    "customer_tiers",
    "escalation",
    "enabled",
)  # what a version of a policy says: the fields of both policy events


class SlaPolicy(Aggregate):
    """An SLA policy and its versions (`timeline`), each in force from its `effective_at` on.

    A revision is the latest decision: from its effective time on it replaces whatever
    was in force, versions scheduled later included (a correction effective 1 March
    overrides a change planned for 1 April). `fields` is the latest decision's content,
    what a further revision starts from.
    """

    aggregate_type = "sla_policy"
    VIEW_KEYS = frozenset({"_id", "id", "version", "created_at", "updated_at", "versions"})  # not fields

    class SlaPolicyDefined(DomainEvent):
        """An SLA policy was defined: targets per priority in business minutes, business hours, holidays, the
        customer tiers it applies to, and what a breach escalates to. The subject is the policy id."""

        policy_id: str = spec(minLength=1)
        name: str = spec(minLength=1)
        description: str | None
        targets: dict[str, Any] = spec(schema=TARGETS_SCHEMA)
        business_hours: dict[str, Any] | None = spec(schema=BUSINESS_HOURS)
        holidays: list[str] = spec(items={"type": "string", "format": "date"})
        customer_tiers: list[str] = spec(
            items=TEXT, description="the tiers it applies to (e.g. strategic); empty: every customer"
        )
        escalation: dict[str, Any] = spec(schema=ESCALATION)
        enabled: bool

    class SlaPolicyRevised(DomainEvent):
        """A new version of the SLA policy (its stream version), in force from `effective_at` on (past or future),
        replacing from then on whatever was in force, later scheduled versions included. Carries every field as
        revised (`changed` names those that differ from the version before); the calendar (business hours,
        holidays) is part of the policy, and holidays taken from a country's public holidays are stored as the
        dates they expanded to. Open tickets follow it through SlaRecomputed."""

        policy_id: str = spec(minLength=1)
        effective_at: str = spec(format="date-time")
        changed: list[str] = spec(items={"enum": list(POLICY_FIELDS)})
        name: str = spec(minLength=1)
        description: str | None
        targets: dict[str, Any] = spec(schema=TARGETS_SCHEMA)
        business_hours: dict[str, Any] | None = spec(schema=BUSINESS_HOURS)
        holidays: list[str] = spec(items={"type": "string", "format": "date"})
        customer_tiers: list[str] = spec(
            items=TEXT, description="the tiers it applies to (e.g. strategic); empty: every customer"
        )
        escalation: dict[str, Any] = spec(schema=ESCALATION)
        enabled: bool

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.fields: dict[str, Any] = {}
        # [{"version", "effective_at" (None for the first: since always), "changed", **fields}] by effective_at
        self.timeline: list[dict[str, Any]] = []

    @classmethod
    def define(cls, policy_id: str, fields: dict[str, Any]) -> SlaPolicy:
        calendar_of(fields)  # a calendar that cannot be built is a 422 at the edge; this is the last check
        policy = cls(policy_id)
        content: dict[str, Any] = {name: fields.get(name) for name in POLICY_FIELDS}
        policy.record(cls.SlaPolicyDefined(policy_id=policy_id, **content))
        return policy

    def revise(self, changes: dict[str, Any], effective_at: datetime, extra_holidays: Sequence[str] = ()) -> list[str]:
        """Record a new version: the latest fields with `changes` (and `extra_holidays` added to the
        holidays: a country's public ones), in force from `effective_at`.

        Returns the names of the fields that differ from the latest version. Records
        nothing when the policy would apply the same way at every moment as it does now
        (a repeated request), so revising is idempotent.
        """
        fields = {**self.fields, **{k: v for k, v in changes.items() if k in POLICY_FIELDS}}
        if extra_holidays:
            fields["holidays"] = sorted({*(fields.get("holidays") or ()), *extra_holidays})
        if len(fields.get("holidays") or ()) > MAX_HOLIDAYS:
            raise ValidationFailed(
                "too many holidays", {"holidays_from": [f"more than {MAX_HOLIDAYS} holidays with the policy's own"]}
            )
        calendar_of(fields)
        at = rfc3339(effective_at)
        changed = sorted(name for name in POLICY_FIELDS if fields.get(name) != self.fields.get(name))
        after = _revised(self.timeline, {"version": self.version + 1, "effective_at": at, "changed": changed, **fields})
        if _periods(after) == _periods(self.timeline):
            return []
        content: dict[str, Any] = {name: fields.get(name) for name in POLICY_FIELDS}
        self.record(self.SlaPolicyRevised(policy_id=self.id, effective_at=at, changed=changed, **content))
        return changed

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes a policy."""

    @apply.register(SlaPolicyDefined)
    def _on_defined(self, event: SlaPolicyDefined) -> None:
        self.fields = {k: v for k, v in event.data().items() if k != "policy_id"}
        self.timeline = [{"version": self.version + 1, "effective_at": None, "changed": [], **self.fields}]

    @apply.register(SlaPolicyRevised)
    def _on_revised(self, event: SlaPolicyRevised) -> None:
        data = event.data()
        self.fields = {name: data[name] for name in POLICY_FIELDS}
        self.timeline = _revised(
            self.timeline,
            {
                "version": self.version + 1,
                "effective_at": event.effective_at,
                "changed": event.changed or [],
                **self.fields,
            },
        )

    def in_force(self, moment: datetime) -> dict[str, Any]:
        """The version in force at `moment`, as a ticket keeps it."""
        return self.timeline_from(moment)[0]

    def timeline_from(self, moment: datetime) -> list[dict[str, Any]]:
        """The version in force at `moment` and every later one, as tickets keep them."""
        first = 0
        for index, entry in enumerate(self.timeline):
            if entry["effective_at"] is None or parse_time(entry["effective_at"]) <= moment:
                first = index
        return [
            {"id": self.id, **{k: v for k, v in entry.items() if k != "changed"}} for entry in self.timeline[first:]
        ]

    @classmethod
    def restore(cls, view: dict[str, Any]) -> SlaPolicy:
        """The policy back from its `view()` (how the read model continues a fold)."""
        policy = cls(view["id"])
        policy.fields = {k: copy.deepcopy(v) for k, v in view.items() if k not in cls.VIEW_KEYS}
        policy.timeline = copy.deepcopy(view.get("versions") or [])
        if not policy.timeline:  # a document from before versions were kept: one version, since always
            policy.timeline = [{"version": view["version"], "effective_at": None, "changed": [], **policy.fields}]
        policy.version = view["version"]
        policy.created_at, policy.updated_at = view.get("created_at"), view.get("updated_at")
        return policy

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            **self.fields,
            "versions": copy.deepcopy(self.timeline),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


POLICY_SCHEMA = {
    name: schema
    for name, schema in json_schema(SlaPolicy.SlaPolicyDefined)["properties"].items()
    if name != "policy_id"
}
POLICY_VERSION = _object(
    ["id", "version", *POLICY_FIELDS],
    {
        "id": TEXT,
        "version": {"type": "integer", "minimum": 1, "description": "the policy stream's version"},
        "effective_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "in force from then on (until a later version's effective_at); null: since always",
        },
        **POLICY_SCHEMA,
    },
)
POLICY_SNAPSHOT = {
    **POLICY_VERSION,
    "type": ["object", "null"],
    "description": "the SLA policy version in force when the ticket opened (kept with the ticket); null: none applied",
}


def _revised(timeline: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """`timeline` with `entry` in force from its effective time on (what was in force after it is replaced)."""
    at = parse_time(entry["effective_at"])
    kept = [e for e in timeline if e["effective_at"] is None or parse_time(e["effective_at"]) < at]
    return [*kept, entry]


def _periods(timeline: list[dict[str, Any]]) -> list[tuple[str | None, dict[str, Any]]]:
    """What applies when: (from, fields), consecutive versions with the same fields joined."""
    periods: list[tuple[str | None, dict[str, Any]]] = []
    for entry in timeline:
        fields = {name: entry.get(name) for name in POLICY_FIELDS}
        if not periods or periods[-1][1] != fields:
            periods.append((entry["effective_at"], fields))
    return periods


def _t(text: str | None) -> datetime | None:
    return parse_time(text) if text else None


class Ticket(Aggregate):
    """A ticket; its events' subject is the ticket id. What the customer wrote is personal data, sealed
    with the ticket's key (README, "Erasure"): subject and description (usually the customer's own
    words), the customer's comments, and the satisfaction comment."""

    aggregate_type = "ticket"

    class TicketOpened(DomainEvent):
        """A ticket was opened for a contact, with the SLA policy chosen for it now: the version in force
        (`sla_policy`) and any recorded to take effect later (`sla_policy_later`, in order), kept with the ticket;
        a later revision of the policy reaches it through `SlaRecomputed`. The subject is the ticket id."""

        subject: str = spec(minLength=1, personal=True)
        description: str | None = spec(personal=True)
        contact_id: str = spec(minLength=1)
        company_id: str | None = spec(minLength=1)
        deal_id: str | None = spec(minLength=1)
        channel: str = spec(enum=CHANNELS)
        type: str = spec(enum=TYPES)
        priority: str = spec(enum=PRIORITIES)
        tags: list[str] = spec(items=TEXT)
        assignee: str | None
        group: str | None
        customer_tier: str | None
        opened_at: str = spec(format="date-time")
        sla_policy: dict[str, Any] | None = spec(schema=POLICY_SNAPSHOT)
        sla_policy_later: list[dict[str, Any]] | None = spec(
            omit_none=True,
            items=POLICY_VERSION,
            description=("versions scheduled to take effect after the opening; optional"),
        )  # [] when none: always recorded
        team: str | None = spec(
            omit_none=True,
            maxLength=100,
            description=(
                "the owning team, when it has one (added later, optional; not the agent `group`): "
                "team-scoped roles see only its tickets"
            ),
        )

    class TicketCommented(DomainEvent):
        """A comment was added: an agent's public reply or internal note (`body`), or the customer's reply
        (`customer_body`, always public, personal)."""

        schema_extra = {"oneOf": COMMENT_AUTHORS}
        comment_id: str = spec(minLength=1)
        author_type: str = spec(enum=("agent", "customer"))
        author: str
        public: bool
        body: str | None = spec(omit_none=True, minLength=1)
        customer_body: str | None = spec(omit_none=True, minLength=1, personal=True)
        at: str = spec(format="date-time")

    class TicketAssigned(DomainEvent):
        """The ticket's assignee and/or group changed (both new values, and the old)."""

        assignee: str | None
        group: str | None
        previous_assignee: str | None
        previous_group: str | None
        at: str = spec(format="date-time")

    class TicketStatusChanged(DomainEvent):
        """The ticket moved along its workflow (`solved` → `open` is a reopen); `reason` `manual`, or
        `customer_replied` / `agent_replied` when a comment moved it."""

        from_: str = spec(wire="from", enum=STATUSES)
        to: str = spec(enum=STATUSES)
        reason: str = spec(enum=("manual", "customer_replied", "agent_replied"))
        at: str = spec(format="date-time")

    class TicketSolved(DomainEvent):
        """The ticket was solved (right after its TicketStatusChanged to `solved`), with its resolution and first
        response times; messaging sends the satisfaction survey to `contact_id`."""

        ticket_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        at: str = spec(format="date-time")
        resolution_minutes: float | None = spec(minimum=0, description="business minutes under the ticket's policy")
        first_response_minutes: float | None = spec(minimum=0, description="business minutes under the ticket's policy")

    class SlaBreachedV1(DomainEvent, name="SlaBreached", version=1):
        """Superseded by v2 (still readable: upcast on read, `breached_at` becoming v2's `detected_at` and the due
        time v2's `breached_at`). An SLA target of the ticket was missed; `breached_at` was when it was found open
        past due, or when it was met late."""

        key: str = spec(pattern="^(first_response|resolution|next_response:[0-9]+)$")
        target: str = spec(enum=TARGETS)
        priority: str = spec(enum=PRIORITIES)
        contact_id: str = spec(minLength=1)
        policy_id: str | None = spec(minLength=1)
        due_at: str = spec(format="date-time")
        breached_at: str = spec(format="date-time")

    class SlaBreached(DomainEvent, version=2):
        """An SLA target of the ticket was missed (recorded once per `key`: the target, `next_response:<n>` per
        reply cycle). `breached_at` is when the promise broke: the due time, however late it was found (by a sweep,
        by the command that met it late, or by a recompute after a policy change); `detected_at` is when it was
        recorded. A later `SlaRecomputed` may withdraw or move it."""

        key: str = spec(pattern="^(first_response|resolution|next_response:[0-9]+)$")
        target: str = spec(enum=TARGETS)
        priority: str = spec(enum=PRIORITIES)
        contact_id: str = spec(minLength=1)
        policy_id: str | None = spec(minLength=1)
        due_at: str = spec(format="date-time")
        breached_at: str = spec(format="date-time")
        detected_at: str = spec(format="date-time")

    @dataclass(frozen=True)
    class Due:
        """A target's due time after a recompute (null while paused)."""

        key: str
        target: str = spec(enum=TARGETS)
        due_at: str | None = spec(format="date-time")

    @dataclass(frozen=True)
    class Moved:
        """A recorded breach whose due (and breach) time a recompute moved."""

        key: str
        due_at: str = spec(format="date-time")
        breached_at: str = spec(format="date-time")

    class SlaRecomputed(DomainEvent):
        """The ticket now follows its policy's versions as they are (`versions`, `timeline`: the version in force
        when it opened and every later one), after a revision of the policy or its calendar; its clocks count
        working time under the calendar in force at each instant. `due`: each target's due time now (null while
        paused); `withdrawn`: breach keys no longer breached; `moved`: breaches whose due (and breach) time moved.
        Breaches newly past due follow as SlaBreached."""

        policy_id: str = spec(minLength=1)
        versions: list[int] = spec(items={"type": "integer", "minimum": 1}, minItems=1)
        timeline: list[dict[str, Any]] = spec(items=POLICY_VERSION, minItems=1)
        due: list[Ticket.Due]
        withdrawn: list[str]
        moved: list[Ticket.Moved]
        at: str = spec(format="date-time")

    class TicketEscalated(DomainEvent):
        """An open target was breached and the policy escalates: the priority was raised, or the ticket reassigned
        (`assignee`, `group` are the values from now on)."""

        target: str = spec(enum=TARGETS)
        action: str = spec(enum=[a for a in ESCALATIONS if a != "none"])
        from_priority: str = spec(enum=PRIORITIES)
        to_priority: str = spec(enum=PRIORITIES)
        assignee: str | None
        group: str | None
        at: str = spec(format="date-time")

    class SatisfactionRated(DomainEvent):
        """The customer rated the solved ticket (once): CSAT 1–5, optional NPS 0–10, SERVQUAL dimensions 1–7 and a
        comment (personal)."""

        contact_id: str = spec(minLength=1)
        csat: int = spec(minimum=1, maximum=5)
        comment: str | None = spec(personal=True)
        nps: int | None = spec(minimum=0, maximum=10)
        servqual: dict[str, int] | None = spec(schema=SERVQUAL_SCORES)
        at: str = spec(format="date-time")

    class TicketContactChanged(DomainEvent):
        """The ticket now belongs to another contact: its contact was merged into `contact_id` (`merge_id` names
        the merge), or that merge was reversed (back to the duplicate `contact_id`)."""

        contact_id: str = spec(minLength=1)
        previous_contact_id: str = spec(minLength=1)
        reason: str = spec(
            enum=("contact_merged", "contact_unmerged"),
            description=(
                "why: the contact was merged into another; or that merge was reversed (`contact_unmerged`, added "
                "later: a new value)"
            ),
        )
        at: str = spec(format="date-time")
        merge_id: str | None = spec(
            omit_none=True,
            minLength=1,
            description=(
                "the contacts service's ContactMerged event that caused the move (or whose reversal did); also the "
                "envelope's causationid"
            ),
        )

    class TicketCustomerDataErased(DomainEvent):
        """A person on the ticket was erased: drop what they wrote (subject, description, their comments, the rating
        comment); the ticket's key is deleted, so every sealed field of this ticket becomes unreadable."""

        contact_id: str = spec(minLength=1)
        at: str = spec(format="date-time")

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.subject: str | None = None
        self.description: str | None = None
        self.contact_id: str = ""
        self.previous_contact_ids: list[str] = []
        # the last contact change, if a merge made it: {"merge_id", "from"} (what an unmerge moves back)
        self.merge_move: dict[str, Any] | None = None
        self.company_id: str | None = None
        self.deal_id: str | None = None
        self.channel = "web"
        self.type = "question"
        self.priority = "normal"
        self.status = "new"
        self.tags: list[str] = []
        self.assignee: str | None = None
        self.group: str | None = None  # the agent group it is routed to (who works it)
        self.team: str | None = None  # the owning team (whose ticket it is: team-scoped roles see only theirs)
        self.customer_tier: str | None = None
        self.opened_at: str = ""
        self.policy: dict[str, Any] | None = None  # the version in force at opening, as the ticket was opened
        self.policy_timeline: list[dict[str, Any]] | None = None  # versions followed since (None: just `policy`)
        self.comments: list[dict[str, Any]] = []
        self.first_response_at: str | None = None
        self.last_agent_reply_at: str | None = None
        self.awaiting_reply_since: str | None = None  # a customer reply starts a next-response cycle
        self.replies_awaited = 0  # next-response cycles started (the breach key of each)
        self.solved_at: str | None = None
        self.closed_at: str | None = None
        self.pauses: list[list[str | None]] = []  # [start, end|None] while pending / on_hold
        self.solved_periods: list[list[str | None]] = []  # resolution clock stopped while solved
        self.breaches: dict[str, dict[str, Any]] = {}
        self.escalations: list[dict[str, Any]] = []
        self.satisfaction: dict[str, Any] | None = None
        self.erased_contacts: list[str] = []

    # --- commands ------------------------------------------------------------------

    @classmethod
    def open(
        cls, ticket_id: str, fields: dict[str, Any], timeline: list[dict[str, Any]], tier: str | None, now: datetime
    ) -> Ticket:
        """A new ticket following `timeline`: its policy's version in force now and any scheduled later."""
        ticket = cls(ticket_id)
        ticket.record(
            cls.TicketOpened(
                subject=fields["subject"],
                description=fields.get("description"),
                contact_id=fields["contact_id"],
                company_id=fields.get("company_id"),
                deal_id=fields.get("deal_id"),
                channel=fields["channel"],
                type=fields["type"],
                priority=fields.get("priority") or "normal",
                tags=fields.get("tags") or [],
                assignee=fields.get("assignee"),
                group=fields.get("group"),
                customer_tier=tier,
                opened_at=rfc3339(now),
                sla_policy=timeline[0] if timeline else None,
                sla_policy_later=timeline[1:],
                team=fields.get("team") or None,
            )
        )
        return ticket

    def comment(
        self, body: str, public: bool, author_type: str, author: str, now: datetime, comment_id: str | None = None
    ) -> str:
        """`comment_id` fixed by the caller (an inbound mail's, derived from its Message-ID) makes a repeat a
        no-op: a comment already on the ticket is not recorded twice."""
        if comment_id is not None and any(c["id"] == comment_id for c in self.comments):
            return comment_id
        self._require_not_closed("comment on")
        if author_type == "customer" and not public:
            raise ValidationFailed(
                "an internal note is written by an agent", {"public": ["a customer comment is always public"]}
            )
        comment_id = comment_id or new_id()
        customer = author_type == "customer"
        self.record(
            self.TicketCommented(
                comment_id=comment_id,
                author_type=author_type,
                author=author,
                public=public,
                body=None if customer else body,
                customer_body=body if customer else None,
                at=rfc3339(now),
            )
        )
        if author_type == "customer" and self.status in ("pending", "solved"):
            self._move("open", now, "customer_replied")
        elif author_type == "agent" and public and self.status == "new":
            self._move("open", now, "agent_replied")
        self.detect_breaches(now)
        return comment_id

    def assign(self, assignee: str | None, group: str | None, now: datetime) -> None:
        self._require_not_closed("assign")
        new_assignee = assignee if assignee is not None else self.assignee
        new_group = group if group is not None else self.group
        if (new_assignee, new_group) == (self.assignee, self.group):
            return
        self.record(
            self.TicketAssigned(
                assignee=new_assignee,
                group=new_group,
                previous_assignee=self.assignee,
                previous_group=self.group,
                at=rfc3339(now),
            )
        )

    def change_status(self, status: str, now: datetime) -> None:
        if status == self.status or status not in TRANSITIONS[self.status]:
            allowed = ", ".join(TRANSITIONS[self.status]) or "none (closed is final)"
            raise Conflict(f"a ticket cannot go from {self.status} to {status}; allowed: {allowed}")
        self._move(status, now, "manual")
        self.detect_breaches(now)

    def rate(self, rating: dict[str, Any], now: datetime) -> None:
        if self.status not in ("solved", "closed"):
            raise Conflict(f"a ticket is rated after it is solved; it is {self.status}")
        if self.satisfaction is not None:
            raise Conflict("this ticket has already been rated")
        self.record(
            self.SatisfactionRated(
                contact_id=self.contact_id,
                csat=rating["csat"],
                comment=rating.get("comment"),
                nps=rating.get("nps"),
                servqual=rating.get("servqual") or None,
                at=rfc3339(now),
            )
        )

    def detect_breaches(self, now: datetime) -> list[str]:
        """Record SlaBreached for every target past due and not yet recorded; escalate.

        Called by every command and by the worker's sweep. Each breach has a key
        (the target; `next_response:<n>` per reply cycle), so it is recorded once:
        the event store's (stream, version) uniqueness settles concurrent sweeps.
        """
        recorded = []
        for key, target, state in self._target_states(now):
            if key in self.breaches or state["due_at"] is None:
                continue
            completed = state["completed_at"]
            due = state["due_at"]
            if (completed is None and now >= due) or (completed is not None and completed > due):
                # the promise broke at the due time, however late a sweep or a recompute finds it
                self.record(
                    self.SlaBreached(
                        key=key,
                        target=target,
                        priority=self.priority,
                        contact_id=self.contact_id,
                        policy_id=(self.policy or {}).get("id"),
                        due_at=rfc3339(due),
                        breached_at=rfc3339(due),
                        detected_at=rfc3339(now),
                    )
                )
                recorded.append(key)
                if completed is None:
                    self._escalate(target, now)
        return recorded

    def follow_policy(self, timeline: list[dict[str, Any]], now: datetime) -> bool:
        """Count this ticket's clocks against its policy's versions as they are now.

        `timeline`: the policy's version in force when the ticket opened and every later
        one. Same versions as followed already: nothing (so a recompute run twice changes
        nothing). Otherwise `SlaRecomputed` records them with the due times they give, the
        recorded breaches they undo (`withdrawn`: met in time, or not yet due, after all)
        or move (`moved`, breached at the new due time); then breaches newly past due are
        recorded at their due time. Returns whether anything was recorded.
        """
        if not self.policy or not timeline or [e["version"] for e in timeline] == self._versions():
            return False
        before = self.policy_timeline
        self.policy_timeline = timeline
        states = self._target_states(now)
        self.policy_timeline = before
        withdrawn, moved = [], []
        for key, _, state in states:
            if key not in self.breaches:
                continue
            due, completed = state["due_at"], state["completed_at"]
            if due is None or (completed or now) < due or (completed is not None and completed <= due):
                withdrawn.append(key)
            elif rfc3339(due) != self.breaches[key]["due_at"]:
                moved.append(self.Moved(key, rfc3339(due), rfc3339(due)))
        self.record(
            self.SlaRecomputed(
                policy_id=self.policy["id"],
                versions=[e["version"] for e in timeline],
                timeline=timeline,
                due=[
                    self.Due(key, target, rfc3339(state["due_at"]) if state["due_at"] else None)
                    for key, target, state in states
                ],
                withdrawn=withdrawn,
                moved=moved,
                at=rfc3339(now),
            )
        )
        self.detect_breaches(now)
        return True

    def _escalate(self, target: str, now: datetime) -> None:
        escalation = (self._version_at(now) or {}).get("escalation") or {}
        action = escalation.get("action") or "none"
        if action == "none":
            return
        priority, assignee, group = self.priority, self.assignee, self.group
        if action == "raise_priority":
            priority = PRIORITIES[min(PRIORITIES.index(self.priority) + 1, len(PRIORITIES) - 1)]
        else:  # reassign
            assignee = escalation.get("assignee") or self.assignee
            group = escalation.get("group") or self.group
        self.record(
            self.TicketEscalated(
                target=target,
                action=action,
                from_priority=self.priority,
                to_priority=priority,
                assignee=assignee,
                group=group,
                at=rfc3339(now),
            )
        )

    def repoint(
        self, survivor_id: str, now: datetime, merge_id: str | None = None, reason: str = "contact_merged"
    ) -> bool:
        """Belong to another contact; `merge_id` names the contacts' ContactMerged that caused it
        (or, with reason `contact_unmerged`, the merge reversed)."""
        if self.contact_id == survivor_id:
            return False
        self.record(
            self.TicketContactChanged(
                contact_id=survivor_id,
                previous_contact_id=self.contact_id,
                reason=reason,
                at=rfc3339(now),
                merge_id=merge_id or None,
            )
        )
        return True

    def move_back(self, duplicate_id: str, survivor_id: str, merge_id: str | None, now: datetime) -> bool:
        """An unmerge: go back to `duplicate_id` if the merge `merge_id` moved this ticket here and
        nothing moved it since. A merge recorded before merges were named counts when it moved the
        ticket from the duplicate to the survivor."""
        move = self.merge_move
        if (
            move is None
            or self.contact_id != survivor_id
            or move["from"] != duplicate_id
            or move["merge_id"] not in (merge_id, None)
        ):
            return False
        return self.repoint(duplicate_id, now, merge_id, "contact_unmerged")

    def erase_customer_data(self, contact_id: str, now: datetime) -> bool:
        """Scrub what the erased person wrote from this ticket's state (the key is forgotten by the caller)."""
        if contact_id in self.erased_contacts:
            return False
        self.record(self.TicketCustomerDataErased(contact_id=contact_id, at=rfc3339(now)))
        return True

    def _move(self, status: str, now: datetime, reason: str) -> None:
        at = rfc3339(now)
        self.record(self.TicketStatusChanged(from_=self.status, to=status, reason=reason, at=at))
        if status == "solved":
            # ticket and contact ids: what messaging's survey trigger sends to (the event names its person)
            self.record(
                self.TicketSolved(
                    ticket_id=self.id,
                    contact_id=self.contact_id,
                    at=at,
                    resolution_minutes=self.resolution_minutes(now),
                    first_response_minutes=self.first_response_minutes(),
                )
            )

    def _require_not_closed(self, what: str) -> None:
        if self.status == "closed":
            raise Conflict(f"cannot {what} a closed ticket")

    # --- state ---------------------------------------------------------------------

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """An event with no effect on the state: TicketSolved is for consumers (the status change carries it)."""

    @apply.register(TicketOpened)
    def _on_opened(self, event: TicketOpened) -> None:
        self.adopt(event)  # subject, contact, channel, type, priority, assignee, group, team, tier, opened_at, ...
        self.tags = list(event.tags or [])
        self.policy = event.sla_policy
        later = event.sla_policy_later or []
        self.policy_timeline = [self.policy, *later] if self.policy and later else None

    @apply.register(TicketCommented)
    def _on_commented(self, event: TicketCommented) -> None:
        customer = event.author_type == "customer"
        self.comments.append(
            {
                "id": event.comment_id,
                "author_type": event.author_type,
                "author": event.author,
                "public": event.public,
                "body": event.customer_body if customer else event.body,
                "at": event.at,
            }
        )
        if customer:
            if self.first_response_at is not None and self.awaiting_reply_since is None:
                self.awaiting_reply_since = event.at
                self.replies_awaited += 1
        elif event.public:
            self.first_response_at = self.first_response_at or event.at
            self.last_agent_reply_at = event.at
            self.awaiting_reply_since = None

    @apply.register(TicketAssigned)
    def _on_assigned(self, event: TicketAssigned) -> None:
        self.assignee, self.group = event.assignee, event.group

    @apply.register(TicketStatusChanged)
    def _on_status_changed(self, event: TicketStatusChanged) -> None:
        before, after, at = event.from_, event.to, event.at
        if before in PAUSED and after not in PAUSED and self.pauses and self.pauses[-1][1] is None:
            self.pauses[-1][1] = at
        if after in PAUSED and before not in PAUSED:
            self.pauses.append([at, None])
        if before == "solved" and after == "open":  # reopened: the resolution clock runs again
            self.solved_periods[-1][1] = at
            self.solved_at = None
        if after == "solved":
            self.solved_periods.append([at, None])
            self.solved_at = at
            self.awaiting_reply_since = None
        if after == "closed":
            self.closed_at = at
        self.status = after

    @apply.register(SlaBreached)
    def _on_breached(self, event: SlaBreached) -> None:
        self.breaches[event.key] = {
            "target": event.target,
            "priority": event.priority,
            "due_at": event.due_at,
            "breached_at": event.breached_at,
            "detected_at": event.detected_at,
        }

    @apply.register(SlaRecomputed)
    def _on_recomputed(self, event: SlaRecomputed) -> None:
        self.policy_timeline = event.timeline
        for key in event.withdrawn:
            self.breaches.pop(key, None)
        for move in event.moved:
            if move.key in self.breaches:
                self.breaches[move.key].update(due_at=move.due_at, breached_at=move.breached_at)

    @apply.register(TicketEscalated)
    def _on_escalated(self, event: TicketEscalated) -> None:
        self.priority, self.assignee, self.group = event.to_priority, event.assignee, event.group
        self.escalations.append({k: v for k, v in event.data().items() if k not in ("assignee", "group")})

    @apply.register(SatisfactionRated)
    def _on_rated(self, event: SatisfactionRated) -> None:
        self.satisfaction = {k: v for k, v in event.data().items() if k != "contact_id"}

    @apply.register(TicketContactChanged)
    def _on_contact_changed(self, event: TicketContactChanged) -> None:
        self.previous_contact_ids.append(event.previous_contact_id)
        self.contact_id = event.contact_id
        by_merge = event.reason in (None, "contact_merged")  # a change recorded before reasons were: a merge
        self.merge_move = {"merge_id": event.merge_id, "from": event.previous_contact_id} if by_merge else None

    @apply.register(TicketCustomerDataErased)
    def _on_erased(self, event: TicketCustomerDataErased) -> None:
        self.erased_contacts.append(event.contact_id)
        self.subject = self.description = None
        for comment in self.comments:
            if comment["author_type"] == "customer":
                comment["body"] = None
        if self.satisfaction is not None:
            self.satisfaction["comment"] = None

    # --- SLA -----------------------------------------------------------------------

    def _timeline(self) -> list[dict[str, Any]]:
        """The policy versions this ticket follows, in order of effect (the first since always)."""
        if self.policy_timeline is not None:
            return self.policy_timeline
        return [self.policy] if self.policy else []

    def _versions(self) -> list[int]:
        return [entry["version"] for entry in self._timeline()]

    def _version_at(self, moment: datetime) -> dict[str, Any] | None:
        """The policy version in force at `moment` (the first one before any later took effect)."""
        chosen = None
        for entry in self._timeline():
            if chosen is None or parse_time(entry["effective_at"]) <= moment:
                chosen = entry
        return chosen

    def _target(self, name: str, started: datetime) -> int | None:
        """A clock's target: what the version in force when the clock started promised."""
        version = self._version_at(started) or {}
        return ((version.get("targets") or {}).get(self.priority) or {}).get(name)

    @property
    def calendar(self) -> bh.Schedule:
        """Working time as the policy counts it: one calendar, or the calendars of its versions in turn."""
        timeline = self._timeline()
        if len(timeline) <= 1:
            return calendar_of(timeline[0] if timeline else None)
        return bh.Timeline(
            (
                (None, calendar_of(timeline[0])),
                *((parse_time(entry["effective_at"]), calendar_of(entry)) for entry in timeline[1:]),
            )
        )

    def _spans(self, spans: list[list[str | None]]) -> list[bh.Pause]:
        return [(parse_time(start), _t(end)) for start, end in spans]  # type: ignore[arg-type]

    def _target_states(self, now: datetime) -> list[tuple[str, str, dict[str, Any]]]:
        """(breach key, target, state) of every target the policy sets for this ticket."""
        if not self.policy:
            return []
        calendar = self.calendar
        pauses = self._spans(self.pauses)
        opened = parse_time(self.opened_at)
        solved = _t(self.solved_at)
        states = []
        first_done = _t(self.first_response_at) or solved
        if (minutes := self._target("first_response", opened)) is not None:
            states.append(
                ("first_response", "first_response", self._state(opened, first_done, minutes, calendar, pauses, now))
            )
        if self.awaiting_reply_since is not None:
            start = parse_time(self.awaiting_reply_since)
            if (minutes := self._target("next_response", start)) is not None:
                states.append(
                    (
                        f"next_response:{self.replies_awaited}",
                        "next_response",
                        self._state(start, None, minutes, calendar, pauses, now),
                    )
                )
        if (minutes := self._target("resolution", opened)) is not None:
            stopped = pauses + self._spans(self.solved_periods)
            states.append(("resolution", "resolution", self._state(opened, solved, minutes, calendar, stopped, now)))
        return states

    def _state(
        self,
        start: datetime,
        completed: datetime | None,
        minutes: int,
        calendar: bh.Schedule,
        pauses: list[bh.Pause],
        now: datetime,
    ) -> dict[str, Any]:
        open_since = [s for s, e in pauses if e is None]
        paused = completed is None and bool(open_since)
        closed_pauses = [(s, e) for s, e in pauses if e is not None]
        due: datetime | None = bh.add_minutes(start, minutes, calendar, closed_pauses)
        if paused and due > min(open_since):  # type: ignore[operator]
            due = None  # the clock stopped before it ran out: due once it runs again
        end = completed or now
        elapsed = bh.minutes_between(start, end, calendar, pauses)
        return {
            "start": start,
            "minutes": minutes,
            "due_at": due,
            "completed_at": completed,
            "paused": paused,
            "elapsed_minutes": elapsed,
            "remaining_minutes": minutes - elapsed,
        }

    def sla(self, now: datetime) -> list[dict[str, Any]]:
        """Each target's promise: due time, remaining business minutes, and outcome."""
        out = []
        for key, target, state in self._target_states(now):
            breached = key in self.breaches or (
                state["due_at"] is not None and (state["completed_at"] or now) > state["due_at"]
            )
            if state["completed_at"] is not None:
                status = "breached" if breached else "met"
            elif breached:
                status = "breached"
            else:
                status = "paused" if state["paused"] else "active"
            out.append(
                {
                    "target": target,
                    "key": key,
                    "minutes": state["minutes"],
                    "due_at": state["due_at"],
                    "completed_at": state["completed_at"],
                    "status": status,
                    "breached": breached,
                    "elapsed_minutes": round(state["elapsed_minutes"], 2),
                    "remaining_minutes": round(state["remaining_minutes"], 2),
                }
            )
        return out

    def next_due(self, now: datetime) -> datetime | None:
        """The earliest due time among outstanding, unbreached, running targets (what the sweep waits for)."""
        dues = [
            state["due_at"]
            for key, _, state in self._target_states(now)
            if key not in self.breaches and state["completed_at"] is None and state["due_at"] is not None
        ]
        return min(dues) if dues else None

    def first_response_minutes(self) -> float | None:
        if self.first_response_at is None:
            return None
        return round(
            bh.minutes_between(
                parse_time(self.opened_at), parse_time(self.first_response_at), self.calendar, self._spans(self.pauses)
            ),
            2,
        )

    def resolution_minutes(self, now: datetime | None = None) -> float | None:
        end = now if now is not None else _t(self.solved_at)
        if end is None:
            return None
        stopped = self._spans(self.pauses) + self._spans(self.solved_periods)
        return round(bh.minutes_between(parse_time(self.opened_at), end, self.calendar, stopped), 2)

    # --- views ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON (what the read model keeps to fold further)."""
        return {name: getattr(self, name) for name in self.state_names()}

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Ticket:
        """The ticket back from its read-model document (`id`, `version`, times and `state`, the snapshot)."""
        ticket = cls(view["id"])
        state = copy.deepcopy(view["state"])
        for name in cls.state_names():
            if name in state:
                setattr(ticket, name, state[name])
        ticket.version = view["version"]
        ticket.created_at, ticket.updated_at = view.get("created_at"), view.get("updated_at")
        return ticket

    def _policy_ref(self, now: datetime | None) -> dict[str, Any] | None:
        """Which policy the ticket follows: its id, the name and version in force now, the versions followed."""
        if not self.policy:
            return None
        current = (self._version_at(now) if now is not None else None) or self.policy
        return {
            "id": self.policy["id"],
            "name": current.get("name"),
            "version": current.get("version"),
            "versions": self._versions(),
        }

    def view(self, now: datetime | None = None) -> dict[str, Any]:
        sla = self.sla(now) if now is not None else []
        return {
            "id": self.id,
            "version": self.version,
            "subject": self.subject,
            "description": self.description,
            "contact_id": self.contact_id,
            "company_id": self.company_id,
            "deal_id": self.deal_id,
            "channel": self.channel,
            "type": self.type,
            "priority": self.priority,
            "status": self.status,
            "tags": self.tags,
            "assignee": self.assignee,
            "group": self.group,
            "team": self.team,
            "customer_tier": self.customer_tier,
            "opened_at": self.opened_at,
            "first_response_at": self.first_response_at,
            "solved_at": self.solved_at,
            "closed_at": self.closed_at,
            "sla_policy": self._policy_ref(now),
            "sla": sla,
            "breached": bool(self.breaches) or any(t["breached"] for t in sla),
            "breaches": [{"key": k, **v} for k, v in self.breaches.items()],
            "escalations": self.escalations,
            "comments": self.comments,
            "satisfaction": self.satisfaction,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def due_ms(moment: datetime | None) -> int:
    return (
        NEVER_MS
        if moment is None
        else int((moment - datetime(1970, 1, 1, tzinfo=moment.tzinfo)) / timedelta(milliseconds=1))
    )


# Text the customer wrote is personal data, sealed with the ticket's key: the fields declared personal=True.
PERSONAL_DATA = personal_fields(Ticket)
