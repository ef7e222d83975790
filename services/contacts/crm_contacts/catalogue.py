"""Every event the contacts service emits: meaning, JSON Schema of `data`, an example.

`make catalogue` turns this into docs/events/; with CRM_STRICT_EVENTS=1 (tests) the
event store refuses anything not described here. Old versions stay listed so consumers
can still read old events; producers emit only the newest (docs/events-versioning.md).
"""

from __future__ import annotations

from typing import Any

from crm_contacts.domain import CHANNELS, CONSENT_STATUSES, LEGAL_BASES, LIFECYCLE_STAGES, PERSONAL_FIELDS, Company
from crm_contacts.segments import Segment
from crmkit.catalogue import Catalogue, EventType
from crmkit.events import Upcasters

TEXT = {"type": ["string", "null"]}
ID = {"type": "string", "minLength": 1}
TAGS = {"type": "array", "items": {"type": "string"}}
ATTRIBUTES = {"type": ["object", "null"], "additionalProperties": {"type": ["string", "number", "boolean", "null"]}}
STAGE = {"enum": list(LIFECYCLE_STAGES)}
TIME = {"type": "string", "format": "date-time"}

CONTACT_FIELDS: dict[str, Any] = {
    "first_name": TEXT, "last_name": TEXT, "email": TEXT, "phone": TEXT, "company_id": TEXT, "tags": TAGS,
    "attributes": ATTRIBUTES, "owner": TEXT, "locale": TEXT, "time_zone": TEXT,
    "team": {**TEXT, "description": "the owning team (added later, optional: absent in older events and when "
                                   "none); team-scoped roles see only its contacts"},
}
CAUSE_V2 = {
    "type": "object",
    "required": ["kind", "by"],
    "additionalProperties": False,
    "properties": {
        "kind": {"enum": ["manual", "automation", "merge", "unmerge"]},
        "by": {"type": "string", "description": "the person (user:<name>), rule, or merged record that moved it"},
        "detail": {"type": ["string", "null"]},
    },
}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties}


def _changes(fields: dict[str, Any], min_properties: int = 1) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": fields, "minProperties": min_properties}


CHANGES_PERSONAL = tuple(f"changes.{name}" for name in PERSONAL_FIELDS)
MERGED_FROM = {**ID, "description": "the duplicate a merge took this from (an unmerge gives it back)"}
CONSENT = _object(["status", "source", "legal_basis", "at"], {
    "status": {"enum": list(CONSENT_STATUSES)}, "source": TEXT, "legal_basis": {"enum": [*LEGAL_BASES, None]},
    "at": {"type": ["string", "null"], "format": "date-time"}})

EVENTS = Catalogue("contacts", "Contacts", [
    EventType(
        "ContactCreated", 1, "contact", "A person was added to the customer record.",
        _object(["contact_id", "lifecycle_stage", "tags", "attributes"],
                {"contact_id": ID, "lifecycle_stage": STAGE, **CONTACT_FIELDS, "verified_at": {
                    **TIME, "description": "when the details were last confirmed, if before the record was made "
                                           "(added later: absent, the creation counts as the confirmation)"}}),
        {"contact_id": "01a2…", "first_name": "علی", "last_name": "Rezaei", "email": "ali@example.com",
         "phone": "+989121234567", "company_id": None, "tags": ["vip"], "attributes": {"city": "Tehran"},
         "owner": "ana", "lifecycle_stage": "lead", "locale": "fa-IR", "time_zone": "Asia/Tehran"},
        personal=PERSONAL_FIELDS,
    ),
    EventType(
        "ContactUpdated", 1, "contact",
        "Fields of a contact changed; `changes` holds the new values of the fields that changed.",
        _object(["contact_id", "changes"], {"contact_id": ID, "changes": _changes(CONTACT_FIELDS)}),
        {"contact_id": "01a2…", "changes": {"last_name": "Karimi", "tags": ["vip", "b2b"]}},
        personal=CHANGES_PERSONAL,
    ),
    EventType(
        "ContactLifecycleStageChanged", 1, "contact",
        "Superseded by v2 (still readable: upcast on read). `cause` was a string such as `manual:user:ana`.",
        _object(["contact_id", "from", "to", "cause"],
                {"contact_id": ID, "from": STAGE, "to": STAGE, "cause": {"type": "string"}}),
        {"contact_id": "01a2…", "from": "lead", "to": "customer", "cause": "manual:user:ana"},
    ),
    EventType(
        "ContactLifecycleStageChanged", 2, "contact",
        "The contact moved to another lifecycle stage, and who or what moved it. Lifecycle automation says "
        "`cause.kind` `automation`, `by` `rule:<name>` (deal-opened, deal-won, churn, win-back), `detail` the "
        "deal id or reason; a merge or unmerge says `merge` / `unmerge`, `by` the duplicate's id. The stage "
        "`churned` and the kind `unmerge` were added later (new values, same version).",
        _object(["contact_id", "from", "to", "cause"],
                {"contact_id": ID, "from": STAGE, "to": STAGE, "cause": CAUSE_V2}),
        {"contact_id": "01a2…", "from": "lead", "to": "customer", "cause": {"kind": "manual", "by": "user:ana"}},
    ),
    EventType(
        "ContactPurchaseRecorded", 1, "contact",
        "Lifecycle automation heard that a deal of this contact was won (sales' DealWon) at `at`, the newest "
        "purchase so far; `deal_id` is null when a merge brought the purchase over from a duplicate (since "
        "unmerge: named by `merged_from`).",
        _object(["contact_id", "deal_id", "at"],
                {"contact_id": ID, "deal_id": TEXT, "at": TIME, "merged_from": MERGED_FROM}),
        {"contact_id": "01a2…", "deal_id": "01b7…", "at": "2026-11-26T08:00:00.000Z"},
    ),
    EventType(
        "ContactFlaggedAtRisk", 1, "contact",
        "A customer had no won deal for `CRM_AT_RISK_AFTER_DAYS`: flagged at risk of churning since `since`.",
        _object(["contact_id", "since", "last_purchase_at", "cause"],
                {"contact_id": ID, "since": TIME, "last_purchase_at": TIME, "cause": CAUSE_V2}),
        {"contact_id": "01a2…", "since": "2027-11-27T00:00:00.000Z", "last_purchase_at": "2026-11-26T08:00:00.000Z",
         "cause": {"kind": "automation", "by": "rule:at-risk", "detail": "no won deal for 365 days"}},
    ),
    EventType(
        "ContactAtRiskCleared", 1, "contact",
        "The at-risk flag was lifted (`reason` `purchase`: a deal was won, `detail` its id).",
        _object(["contact_id", "reason"], {"contact_id": ID, "reason": {"type": "string"}, "detail": TEXT}),
        {"contact_id": "01a2…", "reason": "purchase", "detail": "01b9…"},
    ),
    EventType(
        "ContactBecameStale", 1, "contact",
        "Data freshness: the contact's details were last confirmed (`verified_at`: a verification, or the "
        "creation) longer ago than the threshold for its lifecycle stage (`stale_after_days`, "
        "CRM_CONTACTS_STALE_AFTER_DAYS[_BY_STAGE]), so it is flagged stale since `since` (when it crossed that "
        "line). Recorded once, by the contacts worker, until a ContactDetailsVerified clears it. Messaging's "
        "trigger trg-contact-stale-confirm (off by default) asks the person to confirm their details.",
        _object(["contact_id", "since", "verified_at", "stale_after_days", "lifecycle_stage"],
                {"contact_id": ID, "since": TIME, "verified_at": TIME,
                 "stale_after_days": {"type": "number", "exclusiveMinimum": 0}, "lifecycle_stage": STAGE,
                 "owner": TEXT}),
        {"contact_id": "01a2…", "since": "2027-11-26T08:00:00.000Z", "verified_at": "2026-11-26T08:00:00.000Z",
         "stale_after_days": 365, "lifecycle_stage": "customer", "owner": "ana"},
    ),
    EventType(
        "ContactDetailsVerified", 1, "contact",
        "The contact's details were confirmed at `at`: by staff (`source` `staff`, POST "
        "/v1/contacts/{id}/verify, `method` how: phone, email, in_person, ...) or by the person through the "
        "signed confirmation link (`source` `contact`, `method` `confirmation_link`; what they corrected is a "
        "ContactUpdated just before). `by` is who (user:<name> or contact:<id>); `stale_since` the stale flag "
        "it cleared (null: it was not stale).",
        _object(["contact_id", "at", "by", "source", "stale_since"],
                {"contact_id": ID, "at": TIME, "by": {"type": "string"}, "source": {"enum": ["staff", "contact"]},
                 "method": TEXT, "stale_since": {"type": ["string", "null"], "format": "date-time"}}),
        {"contact_id": "01a2…", "at": "2027-12-01T09:30:00.000Z", "by": "contact:01a2…", "source": "contact",
         "method": "confirmation_link", "stale_since": "2027-11-26T08:00:00.000Z"},
    ),
    EventType(
        "ContactConsentChanged", 1, "contact",
        "The person gave or withdrew consent for a channel; the latest decision per channel counts. "
        "`merged_from`: a merge took this decision over from that duplicate (it was the newer one).",
        _object(["contact_id", "channel", "status", "source", "legal_basis", "at"],
                {"contact_id": ID, "channel": {"enum": list(CHANNELS)}, "status": {"enum": list(CONSENT_STATUSES)},
                 "source": {"type": "string"}, "legal_basis": {"enum": list(LEGAL_BASES)}, "at": TIME,
                 "merged_from": MERGED_FROM}),
        {"contact_id": "01a2…", "channel": "email", "status": "granted", "source": "web_form",
         "legal_basis": "consent", "at": "2026-11-26T08:00:00.000Z"},
    ),
    EventType(
        "ContactDuplicateAbsorbed", 1, "contact",
        "A duplicate record of the same person was folded into this one (the survivor); `changes` are the "
        "fields it filled in.",
        _object(["contact_id", "duplicate_id", "changes"],
                {"contact_id": ID, "duplicate_id": ID, "changes": _changes(CONTACT_FIELDS, 0)}),
        {"contact_id": "01a2…", "duplicate_id": "01a3…", "changes": {"phone": "+989121234567"}},
        personal=CHANGES_PERSONAL,
    ),
    EventType(
        "ContactMerged", 1, "contact",
        "This record was a duplicate and now leads to the survivor: re-point anything that refers to it.",
        _object(["contact_id", "duplicate_id", "survivor_id"],
                {"contact_id": ID, "duplicate_id": ID, "survivor_id": ID}),
        {"contact_id": "01a3…", "duplicate_id": "01a3…", "survivor_id": "01a2…"},
    ),
    EventType(
        "ContactDuplicateReleased", 1, "contact",
        "An unmerge: this survivor gave back what it had only absorbed from `duplicate_id` (at the merge "
        "`merge_event_id`) and not changed since. `changes` are the fields' new values (cleared, or tags and "
        "attributes without the duplicate's), `consents` each given-back channel's decision from before the "
        "merge (null: none), `last_purchase_at` (when present) the last purchase from before the merge. "
        "Anything the survivor had or changed itself stays.",
        _object(["contact_id", "duplicate_id", "merge_event_id", "changes", "consents"], {
            "contact_id": ID, "duplicate_id": ID, "merge_event_id": TEXT, "changes": _changes(CONTACT_FIELDS, 0),
            "consents": {"type": "object", "propertyNames": {"enum": list(CHANNELS)},
                         "additionalProperties": {"oneOf": [CONSENT, {"type": "null"}]}},
            "last_purchase_at": {"type": ["string", "null"], "format": "date-time"}}),
        {"contact_id": "01a2…", "duplicate_id": "01a3…", "merge_event_id": "01c1…",
         "changes": {"phone": None, "tags": ["vip"]}, "consents": {"email": None}},
        personal=CHANGES_PERSONAL,
    ),
    EventType(
        "ContactUnmerged", 1, "contact",
        "A merge was reversed: this record (the duplicate) is active again, exactly as it was when merged. "
        "Move back to it what you moved to `survivor_id` because of the merge `merge_event_id` (the "
        "ContactMerged event's id) and has not changed since.",
        _object(["contact_id", "duplicate_id", "survivor_id", "merge_event_id"],
                {"contact_id": ID, "duplicate_id": ID, "survivor_id": ID, "merge_event_id": TEXT}),
        {"contact_id": "01a3…", "duplicate_id": "01a3…", "survivor_id": "01a2…", "merge_event_id": "01c1…"},
    ),
    EventType(
        "ContactErased", 1, "contact",
        "The person was erased: delete or scrub every copy of their personal data you hold.",
        _object(["contact_id", "reason"], {"contact_id": ID, "reason": {"type": "string"}}),
        {"contact_id": "01a2…", "reason": "data subject request"},
    ),
    EventType.of(
        Company.CompanyCreated,
        {"company_id": "01a4…", "name": "Acme", "domain": "acme.example", "industry": "retail", "size": "11-50",
         "phone": None, "website": None, "address": None, "tags": [], "attributes": {}, "owner": None},
    ),
    EventType.of(Company.CompanyUpdated, {"company_id": "01a4…", "changes": {"industry": "wholesale"}}),
    EventType.of(
        Segment.SegmentDefined,
        {"segment_id": "01a5…", "name": "Strategic in Tehran", "description": None,
         "rules": {"all": [{"field": "derived.tier", "op": "eq", "value": "strategic"}]}},
    ),
    EventType.of(Segment.SegmentUpdated, {"segment_id": "01a5…", "changes": {"name": "Strategic customers in Tehran"}}),
])

UPCASTERS = Upcasters()


@UPCASTERS.register("ContactLifecycleStageChanged", 1)
def _structured_cause(data: dict[str, Any]) -> dict[str, Any]:
    """v1 → v2: "manual:user:ana" → {"kind": "manual", "by": "user:ana"}; "merge:<id>" likewise."""
    kind, _, by = str(data.get("cause") or "").partition(":")
    if kind not in ("manual", "merge"):
        kind, by = "automation", str(data.get("cause") or "unknown")
    return {**data, "cause": {"kind": kind, "by": by or "unknown"}}
