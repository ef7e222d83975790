"""The customer record: Contact and Company aggregates. Pure Python, no I/O.

Each aggregate's state is the fold of its events; commands check the rules against
that state and record events. Field values arrive already validated and normalised by
the API layer; the aggregates enforce what depends on state (a merged or erased
contact cannot change, a no-op update records nothing).

Each aggregate declares its events (crmkit.domainevents): the catalogue's meanings and schemas,
and PERSONAL_DATA (what the event store seals), follow from the classes; a shape a type hint
cannot say (attributes, a stage change's cause, released consents) is given here as JSON Schema.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from crmkit.aggregate import Aggregate
from crmkit.domainevents import DomainEvent, json_schema, personal_fields, spec
from crmkit.errors import Conflict, ValidationFailed
from crmkit.events import RecordedEvent, epoch_ms, parse_time, rfc3339, text_ms

LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketing_qualified_lead",
    "sales_qualified_lead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
    "churned",  # added by lifecycle automation: a customer who stopped buying (see README)
)
# The path lifecycle automation moves contacts along, and only forward (see `automation_may_move`).
AUTOMATION_PATH = ("subscriber", "lead", "marketing_qualified_lead", "sales_qualified_lead", "opportunity", "customer")

# Fields a person may set on a contact directly (lifecycle stage has its own event).
CONTACT_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "company_id",
    "tags",
    "attributes",
    "owner",
    "locale",
    "time_zone",
)
# What identifies or describes the person: encrypted with the person's key in every
# event (crypto-shredding), and wiped from the record on erasure.
PERSONAL_FIELDS = ("first_name", "last_name", "email", "phone", "attributes")
CHANNELS = ("email", "sms", "fax", "phone")
CONSENT_STATUSES = ("granted", "withdrawn")
LEGAL_BASES = ("consent", "contract", "legal_obligation", "vital_interests", "public_task", "legitimate_interests")
COMPANY_FIELDS = ("name", "domain", "industry", "size", "phone", "website", "address", "tags", "attributes", "owner")

# JSON shapes the events' type hints cannot say
ATTRIBUTES = {"type": ["object", "null"], "additionalProperties": {"type": ["string", "number", "boolean", "null"]}}
TEAM = {
    "type": ["string", "null"],
    "description": "the owning team (added later, optional: absent in older events "
    "and when none); team-scoped roles see only its contacts",
}
CAUSE = {
    "type": "object",
    "required": ["kind", "by"],
    "additionalProperties": False,
    "properties": {
        "kind": {"enum": ["manual", "automation", "merge", "unmerge"]},
        "by": {"type": "string", "description": "the person (user:<name>), rule, or merged record that moved it"},
        "detail": {"type": ["string", "null"]},
    },
}
MERGED_FROM = "the duplicate a merge took this from (an unmerge gives it back)"
CONSENT = {
    "type": "object",
    "required": ["status", "source", "legal_basis", "at"],
    "additionalProperties": False,
    "properties": {
        "status": {"enum": list(CONSENT_STATUSES)},
        "source": {"type": ["string", "null"]},
        "legal_basis": {"enum": [*LEGAL_BASES, None]},
        "at": {"type": ["string", "null"], "format": "date-time"},
    },
}
RELEASED_CONSENTS = {
    "type": "object",
    "propertyNames": {"enum": list(CHANNELS)},
    "additionalProperties": {"oneOf": [CONSENT, {"type": "null"}]},
}


class _Kept:
    """A field's value when it is left out of `data` altogether (None would be a value there)."""

    def __repr__(self) -> str:
        return "KEPT"


KEPT: Any = _Kept()


def changes_schema(fields: Mapping[str, Any], min_properties: int = 1) -> dict[str, Any]:
    """The shape of an update's `changes`: any of `fields` (name → schema), at least `min_properties`."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": dict(fields),
        "minProperties": min_properties,
    }


def _merge_attributes(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch for custom attributes: a null value removes the key."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _changes(current: Callable[[str], Any], fields: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The new values of the fields a partial update really changes (tags as a set, attributes merged)."""
    changes: dict[str, Any] = {}
    for name in names:
        if name not in fields:
            continue
        value = fields[name]
        if name == "tags":
            value = sorted(set(value or []))
        elif name == "attributes":
            value = _merge_attributes(current("attributes") or {}, value or {})
        if value != current(name):
            changes[name] = value
    return changes


def _stage_rank(stage: str) -> int:
    """How far along the lifecycle a stage is ("other" and "churned" are not on the path)."""
    return LIFECYCLE_STAGES.index(stage) if stage not in ("other", "churned") else -1


def automation_may_move(current: str, target: str) -> bool:
    """Whether a rule (not a person) may move a contact from `current` to `target`.

    Automation moves only forward along subscriber → … → opportunity → customer; it never
    moves a contact out of a stage a person chose off that path (evangelist, other), and
    never backwards, with two exceptions: the churn rule (customer → churned) and the
    win-back rule (churned → customer). A person may set any stage.
    """
    if (current, target) in (("customer", "churned"), ("churned", "customer")):
        return True
    return (
        current in AUTOMATION_PATH
        and target in AUTOMATION_PATH
        and AUTOMATION_PATH.index(target) > AUTOMATION_PATH.index(current)
    )


IDENTIFYING = ("first_name", "last_name", "email", "phone")


@dataclass
class Absorbed:
    """What a survivor took from one duplicate at the merge and has not changed since.

    Built by the fold from the merge's own events (`ContactDuplicateAbsorbed`, and the
    purchase, stage and consents recorded with `merged_from` / cause `merge`); anything
    that moves a field afterwards (a person's update, a newer purchase, another stage or
    consent decision) makes that field the survivor's own, so an unmerge leaves it alone.
    """

    fields: dict[str, Any] = field(default_factory=dict)  # empty fields filled from the duplicate
    tags: list[str] = field(default_factory=list)  # tags only the duplicate had
    attributes: dict[str, Any] = field(default_factory=dict)  # keys only the duplicate had, as taken
    stage: dict[str, Any] | None = None  # {"from", "to"}: a stage the merge raised
    purchase: dict[str, Any] | None = None  # {"from", "to"}: the duplicate's newer last purchase
    consents: dict[str, dict[str, Any]] = field(default_factory=dict)  # channel: {"from": before, "proof": before's}

    @classmethod
    def of(cls, survivor: Contact, changes: dict[str, Any]) -> Absorbed:
        """From a `ContactDuplicateAbsorbed`'s changes, against the survivor just before them."""
        return cls(
            fields={name: value for name, value in changes.items() if name not in ("tags", "attributes")},
            tags=sorted(set(changes.get("tags") or []) - set(survivor.tags)),
            attributes={k: v for k, v in (changes.get("attributes") or {}).items() if k not in survivor.attributes},
        )

    def changed(self, changes: dict[str, Any]) -> None:
        """A person changed these fields (a `ContactUpdated`): what they touched is theirs now.
        A tag stays absorbed while it is kept; an attribute while its value is the one taken."""
        for name, value in changes.items():
            if name == "tags":
                self.tags = [tag for tag in self.tags if tag in (value or [])]
            elif name == "attributes":
                self.attributes = {k: v for k, v in self.attributes.items() if (value or {}).get(k) == v}
            else:
                self.fields.pop(name, None)

    def reverted(self, survivor: Contact) -> dict[str, Any]:
        """The changes giving back what `survivor` still holds only from the duplicate. The
        identifying fields stay if clearing them would leave no name, email or phone."""
        changes: dict[str, Any] = {
            name: None for name, value in self.fields.items() if getattr(survivor, name) == value
        }
        tags = sorted(set(survivor.tags) - set(self.tags))
        if tags != sorted(survivor.tags):
            changes["tags"] = tags
        attributes = {
            k: v for k, v in survivor.attributes.items() if k not in self.attributes or self.attributes[k] != v
        }
        if attributes != survivor.attributes:
            changes["attributes"] = attributes
        if not any(changes.get(name, getattr(survivor, name)) for name in IDENTIFYING):
            changes = {name: value for name, value in changes.items() if name not in IDENTIFYING}
        return changes


def _proofs_back(proofs: dict[str, Any], released: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """Consent proofs after a release: each given-back channel rests on its earlier decision again."""
    back = {channel: proof for channel, proof in proofs.items() if channel not in released}
    back.update({channel: proof for channel, proof in released.items() if proof is not None})
    return back


def _contact_changes(min_properties: int) -> dict[str, Any]:
    """The `changes` of an update, absorption or release: any field a person may set (schemas as when created)."""
    created = json_schema(Contact.ContactCreated)["properties"]
    return changes_schema({name: created[name] for name in (*CONTACT_FIELDS, "team")}, min_properties)


class Contact(Aggregate):
    """A person on the customer record; its events' subject is the contact id. What identifies the
    person (PERSONAL_FIELDS) is sealed with the person's key in every event that carries it."""

    aggregate_type = "contact"

    class ContactCreated(DomainEvent):
        """A person was added to the customer record."""

        contact_id: str = spec(minLength=1)
        first_name: str | None = spec(default=None, personal=True)
        last_name: str | None = spec(default=None, personal=True)
        email: str | None = spec(default=None, personal=True)
        phone: str | None = spec(default=None, personal=True)
        company_id: str | None = None
        tags: list[str]
        attributes: dict[str, Any] | None = spec(schema=ATTRIBUTES, personal=True)
        owner: str | None = None
        lifecycle_stage: str = spec(enum=LIFECYCLE_STAGES)
        locale: str | None = None
        time_zone: str | None = None
        team: str | None = spec(omit_none=True, schema=TEAM)
        verified_at: str | None = spec(
            omit_none=True,
            format="date-time",
            description=(
                "when the details were last confirmed, if before the record was made "
                "(added later: absent, the creation counts as the confirmation)"
            ),
        )

    class ContactUpdated(DomainEvent):
        """Fields of a contact changed; `changes` holds the new values of the fields that changed."""

        contact_id: str = spec(minLength=1)
        changes: dict[str, Any] = spec(schema=functools.partial(_contact_changes, 1), personal=PERSONAL_FIELDS)

    class ContactLifecycleStageChangedV1(DomainEvent, name="ContactLifecycleStageChanged", version=1):
        """Superseded by v2 (still readable: upcast on read). `cause` was a string such as `manual:user:ana`."""

        contact_id: str = spec(minLength=1)
        from_: str = spec(wire="from", enum=LIFECYCLE_STAGES)
        to: str = spec(enum=LIFECYCLE_STAGES)
        cause: str

    class ContactLifecycleStageChanged(DomainEvent, version=2):
        """The contact moved to another lifecycle stage, and who or what moved it. Lifecycle automation says
        `cause.kind` `automation`, `by` `rule:<name>` (deal-opened, deal-won, churn, win-back), `detail` the
        deal id or reason; a merge or unmerge says `merge` / `unmerge`, `by` the duplicate's id. The stage
        `churned` and the kind `unmerge` were added later (new values, same version)."""

        contact_id: str = spec(minLength=1)
        from_: str = spec(wire="from", enum=LIFECYCLE_STAGES)
        to: str = spec(enum=LIFECYCLE_STAGES)
        cause: dict[str, Any] = spec(schema=CAUSE)

    class ContactPurchaseRecorded(DomainEvent):
        """Lifecycle automation heard that a deal of this contact was won (sales' DealWon) at `at`, the newest
        purchase so far; `deal_id` is null when a merge brought the purchase over from a duplicate (since
        unmerge: named by `merged_from`)."""

        contact_id: str = spec(minLength=1)
        deal_id: str | None
        at: str = spec(format="date-time")
        merged_from: str | None = spec(default=None, omit_none=True, minLength=1, description=MERGED_FROM)

    class ContactFlaggedAtRisk(DomainEvent):
        """A customer had no won deal for `CRM_AT_RISK_AFTER_DAYS`: flagged at risk of churning since `since`."""

        contact_id: str = spec(minLength=1)
        since: str = spec(format="date-time")
        last_purchase_at: str = spec(format="date-time")
        cause: dict[str, Any] = spec(schema=CAUSE)

    class ContactAtRiskCleared(DomainEvent):
        """The at-risk flag was lifted (`reason` `purchase`: a deal was won, `detail` its id)."""

        contact_id: str = spec(minLength=1)
        reason: str
        detail: str | None = None

    class ContactBecameStale(DomainEvent):
        """Data freshness: the contact's details were last confirmed (`verified_at`: a verification, or the
        creation) longer ago than the threshold for its lifecycle stage (`stale_after_days`,
        CRM_CONTACTS_STALE_AFTER_DAYS[_BY_STAGE]), so it is flagged stale since `since` (when it crossed that
        line). Recorded once, by the contacts worker, until a ContactDetailsVerified clears it. Messaging's
        trigger trg-contact-stale-confirm (off by default) asks the person to confirm their details."""

        contact_id: str = spec(minLength=1)
        since: str = spec(format="date-time")
        verified_at: str = spec(format="date-time")
        stale_after_days: float = spec(exclusiveMinimum=0)
        lifecycle_stage: str = spec(enum=LIFECYCLE_STAGES)
        owner: str | None = None

    class ContactDetailsVerified(DomainEvent):
        """The contact's details were confirmed at `at`: by staff (`source` `staff`, POST
        /v1/contacts/{id}/verify, `method` how: phone, email, in_person, ...) or by the person through the
        signed confirmation link (`source` `contact`, `method` `confirmation_link`; what they corrected is a
        ContactUpdated just before). `by` is who (user:<name> or contact:<id>); `stale_since` the stale flag
        it cleared (null: it was not stale)."""

        contact_id: str = spec(minLength=1)
        at: str = spec(format="date-time")
        by: str
        source: str = spec(enum=("staff", "contact"))
        method: str | None = None
        stale_since: str | None = spec(format="date-time")

    class ContactConsentChanged(DomainEvent):
        """The person gave or withdrew consent for a channel; the latest decision per channel counts.
        `merged_from`: a merge took this decision over from that duplicate (it was the newer one)."""

        contact_id: str = spec(minLength=1)
        channel: str = spec(enum=CHANNELS)
        status: str = spec(enum=CONSENT_STATUSES)
        source: str
        legal_basis: str = spec(enum=LEGAL_BASES)
        at: str = spec(format="date-time")
        merged_from: str | None = spec(default=None, omit_none=True, minLength=1, description=MERGED_FROM)

    class ContactDuplicateAbsorbed(DomainEvent):
        """A duplicate record of the same person was folded into this one (the survivor); `changes` are the
        fields it filled in."""

        contact_id: str = spec(minLength=1)
        duplicate_id: str = spec(minLength=1)
        changes: dict[str, Any] = spec(schema=functools.partial(_contact_changes, 0), personal=PERSONAL_FIELDS)

    class ContactMerged(DomainEvent):
        """This record was a duplicate and now leads to the survivor: re-point anything that refers to it."""

        contact_id: str = spec(minLength=1)
        duplicate_id: str = spec(minLength=1)
        survivor_id: str = spec(minLength=1)

    class ContactDuplicateReleased(DomainEvent):
        """An unmerge: this survivor gave back what it had only absorbed from `duplicate_id` (at the merge
        `merge_event_id`) and not changed since. `changes` are the fields' new values (cleared, or tags and
        attributes without the duplicate's), `consents` each given-back channel's decision from before the
        merge (null: none), `last_purchase_at` (when present) the last purchase from before the merge.
        Anything the survivor had or changed itself stays."""

        contact_id: str = spec(minLength=1)
        duplicate_id: str = spec(minLength=1)
        merge_event_id: str | None
        changes: dict[str, Any] = spec(schema=functools.partial(_contact_changes, 0), personal=PERSONAL_FIELDS)
        consents: dict[str, Any] = spec(schema=RELEASED_CONSENTS)
        last_purchase_at: str | None = spec(default=KEPT, format="date-time")  # KEPT: the merge brought none

        def data(self) -> dict[str, Any]:
            """As stored: `last_purchase_at` only when given back, null included (it may have been none)."""
            return {name: value for name, value in super().data().items() if value is not KEPT}

    class ContactUnmerged(DomainEvent):
        """A merge was reversed: this record (the duplicate) is active again, exactly as it was when merged.
        Move back to it what you moved to `survivor_id` because of the merge `merge_event_id` (the
        ContactMerged event's id) and has not changed since."""

        contact_id: str = spec(minLength=1)
        duplicate_id: str = spec(minLength=1)
        survivor_id: str = spec(minLength=1)
        merge_event_id: str | None

    class ContactErased(DomainEvent):
        """The person was erased: delete or scrub every copy of their personal data you hold."""

        contact_id: str = spec(minLength=1)
        reason: str

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.first_name: str | None = None
        self.last_name: str | None = None
        self.email: str | None = None
        self.phone: str | None = None
        self.company_id: str | None = None
        self.lifecycle_stage: str = "lead"
        self.tags: list[str] = []
        self.attributes: dict[str, Any] = {}
        self.owner: str | None = None
        self.team: str | None = None  # the owning team: team-scoped roles see only their team's contacts
        self.locale: str | None = None  # BCP 47, e.g. fa-IR: the language messages are written in
        self.time_zone: str | None = None  # IANA, e.g. Asia/Tehran: quiet hours and business hours
        self.status = "active"  # active | merged | erased
        self.consents: dict[str, dict[str, Any]] = {}
        # per channel, the stored ContactConsentChanged the consent rests on ({"event_id", "version"}):
        # what a sender keeps as proof (CheckConsent). Known only from a fold of stored events.
        self.consent_events: dict[str, dict[str, Any]] = {}
        self.merged_into: str | None = None
        self.merged_from: list[str] = []
        # unmerge bookkeeping, known only from a fold of stored events (not in `view`):
        # per duplicate, what this survivor took from it and has not changed since (`Absorbed`)
        self.absorbed: dict[str, Absorbed] = {}
        self.merge_event_id: str | None = None  # as a duplicate: the ContactMerged event that merged it
        self.unmerged_from: list[str] = []  # as a duplicate: survivors it was unmerged from
        self._released_proofs: dict[str, dict[str, Any] | None] = {}  # the last release's, for catch_up
        # lifecycle automation (crm_contacts.records.lifecycle): times as RFC 3339 text
        self.last_purchase_at: str | None = None  # the newest won deal's time
        self.at_risk = False  # a customer without a won deal for too long
        self.at_risk_since: str | None = None
        self.win_backs = 0  # churned → customer again by the win-back rule
        # data freshness (crm_contacts.records.freshness): when the details were last confirmed (None: at
        # creation, `created_at`), by whom, and the stale flag the worker sets past the threshold
        self.verified_at: str | None = None
        self.verified_by: str | None = None
        self.stale = False
        self.stale_since: str | None = None

    @property
    def last_purchase_ms(self) -> int | None:
        return text_ms(self.last_purchase_at)

    @property
    def at_risk_since_ms(self) -> int | None:
        return text_ms(self.at_risk_since)

    @property
    def last_verified_at(self) -> str | None:
        """When the details were last confirmed: a verification, else the creation (which counts as one)."""
        return self.verified_at or (rfc3339(self.created_at) if self.created_at else None)

    # --- commands -------------------------------------------------------------------

    @classmethod
    def create(cls, contact_id: str, fields: dict[str, Any]) -> Contact:
        if not any(fields.get(name) for name in ("first_name", "last_name", "email", "phone")):
            raise ValidationFailed(
                "a contact needs a name, an email or a phone",
                {
                    name: ["one of first_name, last_name, email, phone is required"]
                    for name in ("first_name", "last_name", "email", "phone")
                },
            )
        contact = cls(contact_id)
        data: dict[str, Any] = {name: fields.get(name) for name in CONTACT_FIELDS}
        data["tags"] = sorted(set(fields.get("tags") or []))
        data["attributes"] = {k: v for k, v in (fields.get("attributes") or {}).items() if v is not None}
        contact.record(
            cls.ContactCreated(
                contact_id=contact_id,
                **data,
                lifecycle_stage=fields.get("lifecycle_stage") or "lead",
                team=fields.get("team") or None,  # the owning team (added later: recorded only when given)
                # confirmed before it was entered here (e.g. migrated records)
                verified_at=rfc3339(fields["verified_at"]) if fields.get("verified_at") else None,
            )
        )
        return contact

    def update(self, fields: dict[str, Any], *, stage_cause: dict[str, str]) -> None:
        """Apply a partial update; records only what actually changes."""
        self._require_active()
        changes = _changes(lambda name: getattr(self, name), fields, (*CONTACT_FIELDS, "team"))
        if changes:
            if not any((changes.get(n, getattr(self, n))) for n in ("first_name", "last_name", "email", "phone")):
                raise ValidationFailed(
                    "a contact needs a name, an email or a phone",
                    {name: ["cannot clear the last identifying field"] for name in changes},
                )
            self.record(self.ContactUpdated(contact_id=self.id, changes=changes))
        stage = fields.get("lifecycle_stage")
        if stage is not None and stage != self.lifecycle_stage:
            self.change_stage(stage, cause=stage_cause)

    def change_stage(self, stage: str, *, cause: Mapping[str, str | None]) -> None:
        """Move to `stage`; `cause` says who or what: {"kind": manual|automation|merge, "by": ...}."""
        self._require_active()
        if stage not in LIFECYCLE_STAGES:
            raise ValidationFailed(
                "unknown lifecycle stage", {"lifecycle_stage": [f"must be one of {', '.join(LIFECYCLE_STAGES)}"]}
            )
        if stage != self.lifecycle_stage:
            self.record(
                self.ContactLifecycleStageChanged(
                    contact_id=self.id, from_=self.lifecycle_stage, to=stage, cause=dict(cause)
                )
            )

    def automate_stage(self, stage: str, rule: str, detail: str | None) -> bool:
        """Move to `stage` for lifecycle rule `rule` if automation may (`automation_may_move`)."""
        if self.status != "active" or not automation_may_move(self.lifecycle_stage, stage):
            return False
        self.change_stage(stage, cause={"kind": "automation", "by": f"rule:{rule}", "detail": detail})
        return True

    def record_purchase(self, deal_id: str | None, at: str) -> None:
        """A deal of this contact was won at `at`: remember the newest purchase, clear the
        at-risk flag, and make the contact a customer (a churned one by the win-back rule).

        Safe to repeat: an older or the same purchase records nothing new, and only a
        purchase newer than the last one wins a churned contact back.
        """
        if self.status != "active":
            return
        last = self.last_purchase_ms
        newer = last is None or (text_ms(at) or 0) > last
        if newer:
            self.record(self.ContactPurchaseRecorded(contact_id=self.id, deal_id=deal_id, at=at))
            if self.at_risk:
                self.record(self.ContactAtRiskCleared(contact_id=self.id, reason="purchase", detail=deal_id))
        if self.lifecycle_stage == "churned":
            if newer:
                self.automate_stage("customer", "win-back", deal_id)
        else:
            self.automate_stage("customer", "deal-won", deal_id)

    def flag_at_risk(self, now: datetime, after: timedelta) -> bool:
        """Flag a customer whose last purchase is at least `after` before `now`."""
        last, last_at = self.last_purchase_ms, self.last_purchase_at
        if (
            self.status != "active"
            or self.lifecycle_stage != "customer"
            or self.at_risk
            or last is None
            or last_at is None
            or epoch_ms(now) - last < after.total_seconds() * 1000
        ):
            return False
        days = int(after.total_seconds() // 86400)
        self.record(
            self.ContactFlaggedAtRisk(
                contact_id=self.id,
                since=rfc3339(now),
                last_purchase_at=last_at,
                cause={"kind": "automation", "by": "rule:at-risk", "detail": f"no won deal for {days} days"},
            )
        )
        return True

    def churn(self, now: datetime, after: timedelta) -> bool:
        """Move an at-risk customer flagged at least `after` before `now` to churned."""
        since = self.at_risk_since_ms
        if (
            self.status != "active"
            or self.lifecycle_stage != "customer"
            or not self.at_risk
            or since is None
            or epoch_ms(now) - since < after.total_seconds() * 1000
        ):
            return False
        return self.automate_stage("churned", "churn", f"at risk since {self.at_risk_since}")

    # --- data freshness (crm_contacts.records.freshness; docs/contacts.md, "Data freshness") ---------

    def verify(self, at: datetime, by: str, source: str, method: str | None = None) -> None:
        """The details were confirmed at `at`: by staff (`source` staff, `method` how) or by the
        person (`source` contact, through the confirmation link). Clears the stale flag. Every
        confirmation is recorded, a repeat too: each is a fact an audit may ask about."""
        self._require_active()
        self.record(
            self.ContactDetailsVerified(
                contact_id=self.id, at=rfc3339(at), by=by, source=source, method=method, stale_since=self.stale_since
            )
        )

    def confirm_details(self, fields: dict[str, Any], at: datetime) -> list[str]:
        """The person confirmed their details through the link, correcting some of name, email and
        phone: the corrections (a `ContactUpdated`), then the confirmation. Returns what changed."""
        self._require_active()
        corrected = {name: fields[name] for name in IDENTIFYING if name in fields}
        changed = sorted(_changes(lambda name: getattr(self, name), corrected, IDENTIFYING))
        self.update(corrected, stage_cause={})
        self.verify(at, f"contact:{self.id}", "contact", "confirmation_link")
        return changed

    def flag_stale(self, now: datetime, after: timedelta) -> bool:
        """Flag an active contact whose details were last confirmed at least `after` before `now`;
        `since` is when it crossed that line. Once: a stale contact stays flagged until confirmed."""
        verified = self.last_verified_at
        if self.status != "active" or self.stale or verified is None or now - parse_time(verified) < after:
            return False
        since = parse_time(verified) + after
        self.record(
            self.ContactBecameStale(
                contact_id=self.id,
                since=rfc3339(since),
                verified_at=verified,
                stale_after_days=after / timedelta(days=1),
                lifecycle_stage=self.lifecycle_stage,
                owner=self.owner,
            )
        )
        return True

    def set_consent(self, channel: str, consent: dict[str, Any], *, merged_from: str | None = None) -> None:
        """Record the person's choice for a channel (status, source, legal basis, when);
        `merged_from` names the duplicate a merge took it from (so an unmerge can give it back)."""
        self._require_active()
        current = self.consents.get(channel)
        recorded: dict[str, Any] = {key: consent.get(key) for key in ("status", "source", "legal_basis", "at")}
        if current is not None and all(current.get(k) == v for k, v in recorded.items() if k != "at"):
            return  # the same choice again: nothing new happened
        self.record(
            self.ContactConsentChanged(contact_id=self.id, channel=channel, **recorded, merged_from=merged_from or None)
        )

    def absorb(self, duplicate: Contact) -> None:
        """Fold a duplicate record of the same person into this one.

        The survivor's own values win; the duplicate fills what the survivor lacks.
        Tags are united, attributes merged (survivor's keys win), the more advanced
        lifecycle stage is kept, and per channel the most recent consent decision wins
        (the person's latest word, whichever record it was given on).
        """
        self._require_active()
        duplicate._require_active()
        if duplicate.id == self.id:
            raise Conflict("a contact cannot be merged into itself")
        if duplicate.id in self.merged_from:
            return
        changes: dict[str, Any] = {
            name: getattr(duplicate, name)
            for name in ("first_name", "last_name", "email", "phone", "company_id", "owner", "locale", "time_zone")
            if not getattr(self, name) and getattr(duplicate, name)
        }
        if set(duplicate.tags) - set(self.tags):
            changes["tags"] = sorted(set(self.tags) | set(duplicate.tags))
        if set(duplicate.attributes) - set(self.attributes):
            changes["attributes"] = {**duplicate.attributes, **self.attributes}
        self.record(self.ContactDuplicateAbsorbed(contact_id=self.id, duplicate_id=duplicate.id, changes=changes))
        if duplicate.last_purchase_at and (duplicate.last_purchase_ms or 0) > (self.last_purchase_ms or 0):
            self.record(
                self.ContactPurchaseRecorded(
                    contact_id=self.id, deal_id=None, at=duplicate.last_purchase_at, merged_from=duplicate.id
                )
            )
        if _stage_rank(duplicate.lifecycle_stage) > _stage_rank(self.lifecycle_stage):
            self.change_stage(duplicate.lifecycle_stage, cause={"kind": "merge", "by": duplicate.id})
        for channel, theirs in sorted(duplicate.consents.items()):
            mine = self.consents.get(channel)
            if mine is None or (theirs.get("at") or "") > (mine.get("at") or ""):
                self.set_consent(channel, theirs, merged_from=duplicate.id)

    def mark_merged(self, survivor_id: str) -> None:
        self._require_active()
        self.record(self.ContactMerged(contact_id=self.id, duplicate_id=self.id, survivor_id=survivor_id))

    def release(self, duplicate_id: str, merge_event_id: str | None) -> None:
        """Undo absorbing `duplicate_id`: give back what this survivor took from it and has not
        changed since (`Absorbed`); what it had or changed itself stays. Nothing if it holds
        no such duplicate (a repeat). See docs/contacts.md, "Unmerge"."""
        self._require_active()
        if duplicate_id not in self.merged_from:
            return
        taken = self.absorbed.get(duplicate_id) or Absorbed()
        self.record(
            self.ContactDuplicateReleased(
                contact_id=self.id,
                duplicate_id=duplicate_id,
                merge_event_id=merge_event_id,
                changes=taken.reverted(self),
                consents={channel: taken.consents[channel]["from"] for channel in sorted(taken.consents)},
                last_purchase_at=KEPT if taken.purchase is None else taken.purchase["from"],
            )
        )
        if taken.stage is not None and self.lifecycle_stage == taken.stage["to"]:
            self.change_stage(taken.stage["from"], cause={"kind": "unmerge", "by": duplicate_id})

    def may_unmerge(self, survivor_id: str) -> bool:
        """Whether unmerging this duplicate from `survivor_id` has anything left to do: False for
        a repeat; Conflict once erased (it cannot come back); ValidationFailed if it is not
        merged into that survivor."""
        if self.status == "erased":
            raise Conflict(f"contact {self.id} was erased since the merge; it cannot be unmerged")
        if self.status == "active" and survivor_id in self.unmerged_from:
            return False
        if self.status != "merged" or self.merged_into != survivor_id:
            raise ValidationFailed(
                "not merged into this contact", {"duplicate_id": [f"{self.id} is not merged into {survivor_id}"]}
            )
        return True

    def unmerge(self, survivor_id: str) -> None:
        """This duplicate stands on its own again, exactly as it was when merged (a merged
        record cannot change). A repeat records nothing (`may_unmerge`)."""
        if not self.may_unmerge(survivor_id):
            return
        self.record(
            self.ContactUnmerged(
                contact_id=self.id, duplicate_id=self.id, survivor_id=survivor_id, merge_event_id=self.merge_event_id
            )
        )

    def erase(self, reason: str) -> None:
        """Forget the person: the record keeps its id and history of what happened, not who."""
        if self.status != "erased":
            self.record(self.ContactErased(contact_id=self.id, reason=reason))

    def catch_up(self, events: Sequence[RecordedEvent]) -> None:
        """The fold, noting which stored event each channel's consent comes from (its id is
        known only once stored, so `apply` cannot see it), and which event merged this record."""
        for event in events:
            proofs = self.consent_events
            super().catch_up([event])
            if event.type == "ContactConsentChanged":
                channel = event.data["channel"]
                taken = self.absorbed.get(event.data.get("merged_from") or "")
                if taken is not None and channel in taken.consents:
                    taken.consents[channel]["proof"] = proofs.get(channel)
                self.consent_events = {**proofs, channel: {"event_id": event.id, "version": event.version}}
            elif event.type == "ContactDuplicateReleased":
                self.consent_events = _proofs_back(proofs, self._released_proofs)
            elif event.type == "ContactMerged":
                self.merge_event_id = event.id
            elif event.type == "ContactErased":
                self.consent_events = {}

    def _require_active(self) -> None:
        if self.status != "active":
            raise Conflict(f"contact {self.id} is {self.status} and cannot change")

    # --- the fold -------------------------------------------------------------------

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Events with no effect on state (the superseded v1 stage change: upcast before it is folded)."""

    @apply.register(ContactCreated)
    def _on_created(self, event: ContactCreated) -> None:
        self.adopt(event)  # the person's fields, company, owner, stage, locale, time zone, team, verified_at
        self.tags = list(event.tags or [])
        self.attributes = dict(event.attributes or {})
        self.lifecycle_stage = event.lifecycle_stage or "lead"

    @apply.register(ContactUpdated)
    def _on_updated(self, event: ContactUpdated) -> None:
        for taken in self.absorbed.values():
            taken.changed(event.changes)
        for name, value in event.changes.items():
            setattr(self, name, value)

    @apply.register(ContactLifecycleStageChanged)
    def _on_stage_changed(self, event: ContactLifecycleStageChanged) -> None:
        cause = event.cause
        self._note_stage(event)
        if (
            event.from_ == "churned"
            and event.to == "customer"
            and isinstance(cause, dict)
            and cause.get("by") == "rule:win-back"
        ):
            self.win_backs += 1
        self.lifecycle_stage = event.to
        if event.to != "customer":  # "at risk" is a property of customers only
            self.at_risk, self.at_risk_since = False, None

    @apply.register(ContactPurchaseRecorded)
    def _on_purchase(self, event: ContactPurchaseRecorded) -> None:
        for duplicate_id, taken in self.absorbed.items():
            taken.purchase = (
                {"from": self.last_purchase_at, "to": event.at} if duplicate_id == event.merged_from else None
            )
        self.last_purchase_at = event.at

    @apply.register(ContactFlaggedAtRisk)
    def _on_flagged_at_risk(self, event: ContactFlaggedAtRisk) -> None:
        self.at_risk, self.at_risk_since = True, event.since

    @apply.register(ContactAtRiskCleared)
    def _on_at_risk_cleared(self, event: ContactAtRiskCleared) -> None:
        self.at_risk, self.at_risk_since = False, None

    @apply.register(ContactBecameStale)
    def _on_stale(self, event: ContactBecameStale) -> None:
        self.stale, self.stale_since = True, event.since

    @apply.register(ContactDetailsVerified)
    def _on_verified(self, event: ContactDetailsVerified) -> None:
        self.verified_at, self.verified_by = event.at, event.by
        self.stale, self.stale_since = False, None

    @apply.register(ContactConsentChanged)
    def _on_consent(self, event: ContactConsentChanged) -> None:
        for duplicate_id, taken in self.absorbed.items():
            if duplicate_id == event.merged_from:
                taken.consents[event.channel] = {"from": self.consents.get(event.channel), "proof": None}
            else:
                taken.consents.pop(event.channel, None)
        consents = dict(self.consents)
        consents[event.channel] = {
            "status": event.status,
            "source": event.source,
            "legal_basis": event.legal_basis,
            "at": event.at,
        }
        self.consents = consents

    @apply.register(ContactDuplicateAbsorbed)
    def _on_absorbed(self, event: ContactDuplicateAbsorbed) -> None:
        self.absorbed = {**self.absorbed, event.duplicate_id: Absorbed.of(self, event.changes)}
        for name, value in event.changes.items():
            setattr(self, name, value)
        self.merged_from = [*self.merged_from, event.duplicate_id]

    @apply.register(ContactDuplicateReleased)
    def _on_released(self, event: ContactDuplicateReleased) -> None:
        for name, value in event.changes.items():
            setattr(self, name, value)
        consents = dict(self.consents)
        for channel, consent in (event.consents or {}).items():
            if consent is None:
                consents.pop(channel, None)
            else:
                consents[channel] = dict(consent)
        self.consents = consents
        if event.last_purchase_at is not KEPT:
            self.last_purchase_at = event.last_purchase_at
        taken = self.absorbed.get(event.duplicate_id)
        self._released_proofs = {
            channel: (taken.consents.get(channel) or {}).get("proof") if taken else None
            for channel in event.consents or {}
        }
        self.absorbed = {k: v for k, v in self.absorbed.items() if k != event.duplicate_id}
        self.merged_from = [m for m in self.merged_from if m != event.duplicate_id]

    @apply.register(ContactMerged)
    def _on_merged(self, event: ContactMerged) -> None:
        self.status, self.merged_into = "merged", event.survivor_id

    @apply.register(ContactUnmerged)
    def _on_unmerged(self, event: ContactUnmerged) -> None:
        self.status, self.merged_into = "active", None
        self.unmerged_from = [*self.unmerged_from, event.survivor_id]

    @apply.register(ContactErased)
    def _on_erased(self, event: ContactErased) -> None:
        for name in PERSONAL_FIELDS:
            setattr(self, name, None)
        self.attributes, self.consents, self.status, self.absorbed = {}, {}, "erased", {}
        self.stale, self.stale_since = False, None

    def _note_stage(self, event: ContactLifecycleStageChanged) -> None:
        """A stage a merge raised stays the duplicate's to take back until anything moves it."""
        cause = event.cause
        by_merge = isinstance(cause, dict) and cause.get("kind") == "merge"
        for duplicate_id, taken in self.absorbed.items():
            taken.stage = (
                {"from": event.from_, "to": event.to} if by_merge and cause.get("by") == duplicate_id else None
            )

    def view(self) -> dict[str, Any]:
        """The contact as the API shows it."""
        return {
            "id": self.id,
            "version": self.version,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
            "phone": self.phone,
            "company_id": self.company_id,
            "lifecycle_stage": self.lifecycle_stage,
            "tags": list(self.tags),
            "attributes": dict(self.attributes),
            "owner": self.owner,
            "team": self.team,
            "locale": self.locale,
            "time_zone": self.time_zone,
            "status": self.status,
            "consents": {channel: dict(consent) for channel, consent in self.consents.items()},
            "merged_into": self.merged_into,
            "merged_from": list(self.merged_from),
            "last_purchase_at": self.last_purchase_at,
            "at_risk": self.at_risk,
            "at_risk_since": self.at_risk_since,
            "win_backs": self.win_backs,
            "verified_at": self.verified_at,  # null: not since the creation, which counts (created_at)
            "verified_by": self.verified_by,
            "stale": self.stale,
            "stale_since": self.stale_since,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Contact:
        """The aggregate back from its `view` (how projections continue a fold): every state attribute
        the view shows (copies: the fold replaces, never mutates, but a caller may), version and times;
        what it leaves out (the unmerge bookkeeping) keeps its default."""
        contact = cls(view["id"])
        for name in (*cls.state_names(), "version", "created_at", "updated_at"):
            if name in view:
                setattr(contact, name, copy.deepcopy(view[name]))
        return contact


def _company_changes() -> dict[str, Any]:
    """CompanyUpdated's `changes`: any of the company's fields (schemas as when created)."""
    created = json_schema(Company.CompanyCreated)["properties"]
    return changes_schema({name: created[name] for name in COMPANY_FIELDS})


class Company(Aggregate):
    aggregate_type = "company"

    class CompanyCreated(DomainEvent):
        """A company (organisation contacts belong to) was added."""

        company_id: str = spec(minLength=1)
        name: str | None
        domain: str | None = None
        industry: str | None = None
        size: str | None = None
        phone: str | None = None
        website: str | None = None
        address: str | None = None
        tags: list[str]
        attributes: dict[str, Any] | None = spec(schema=ATTRIBUTES)
        owner: str | None = None

    class CompanyUpdated(DomainEvent):
        """Fields of a company changed; `changes` holds the new values."""

        company_id: str = spec(minLength=1)
        changes: dict[str, Any] = spec(schema=_company_changes)

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.fields: dict[str, Any] = {name: None for name in COMPANY_FIELDS}
        self.fields["tags"], self.fields["attributes"] = [], {}

    @classmethod
    def create(cls, company_id: str, fields: dict[str, Any]) -> Company:
        company = cls(company_id)
        data: dict[str, Any] = {name: fields.get(name) for name in COMPANY_FIELDS}
        data["tags"] = sorted(set(fields.get("tags") or []))
        data["attributes"] = {k: v for k, v in (fields.get("attributes") or {}).items() if v is not None}
        company.record(cls.CompanyCreated(company_id=company_id, **data))
        return company

    def update(self, fields: dict[str, Any]) -> None:
        changes = _changes(self.fields.get, fields, COMPANY_FIELDS)
        if "name" in changes and not changes["name"]:
            raise ValidationFailed("a company needs a name", {"name": ["cannot be empty"]})
        if changes:
            self.record(self.CompanyUpdated(company_id=self.id, changes=changes))

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes a company."""

    @apply.register(CompanyCreated)
    def _on_created(self, event: CompanyCreated) -> None:
        self.fields.update({name: getattr(event, name) for name in COMPANY_FIELDS})

    @apply.register(CompanyUpdated)
    def _on_updated(self, event: CompanyUpdated) -> None:
        self.fields.update(event.changes)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            **{name: self.fields[name] for name in COMPANY_FIELDS},
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Company:
        """The company back from its `view` (the fields flattened into it: not the base's restore)."""
        company = cls(view["id"])
        company.fields.update({name: view.get(name) for name in COMPANY_FIELDS})
        company.version = view["version"]
        company.created_at, company.updated_at = view["created_at"], view["updated_at"]
        return company


# event type → its personal fields (the person's fields, in `changes` too): what the event store seals
PERSONAL_DATA = personal_fields(Contact)
