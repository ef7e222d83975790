"""Every event the contacts service emits, for `make catalogue` (docs/events/) and the strict check.

Each type's meaning, JSON Schema and personal fields come from its class, declared with its
aggregate (`domain.Contact`, `domain.Company`, `segments.Segment`; crmkit.domainevents): here
only an example of each. With CRM_STRICT_EVENTS=1 (tests) the event store refuses anything not
described here. Old versions stay listed so consumers can still read old events; producers emit
only the newest (docs/events-versioning.md).
"""

from __future__ import annotations

from typing import Any

from crm_contacts.records.domain import Company, Contact
from crm_contacts.segments.domain import Segment
from crmkit.catalogue import Catalogue, EventType
from crmkit.events import Upcasters

EVENTS = Catalogue(
    "contacts",
    "Contacts",
    [
        EventType.of(
            Contact.ContactCreated,
            {
                "contact_id": "01a2…",
                "first_name": "علی",
                "last_name": "Rezaei",
                "email": "ali@example.com",
                "phone": "+989121234567",
                "company_id": None,
                "tags": ["vip"],
                "attributes": {"city": "Tehran"},
                "owner": "ana",
                "lifecycle_stage": "lead",
                "locale": "fa-IR",
                "time_zone": "Asia/Tehran",
            },
        ),
        EventType.of(
            Contact.ContactUpdated, {"contact_id": "01a2…", "changes": {"last_name": "Karimi", "tags": ["vip", "b2b"]}}
        ),
        EventType.of(
            Contact.ContactLifecycleStageChangedV1,
            {"contact_id": "01a2…", "from": "lead", "to": "customer", "cause": "manual:user:ana"},
        ),
        EventType.of(
            Contact.ContactLifecycleStageChanged,
            {"contact_id": "01a2…", "from": "lead", "to": "customer", "cause": {"kind": "manual", "by": "user:ana"}},
        ),
        EventType.of(
            Contact.ContactPurchaseRecorded,
            {"contact_id": "01a2…", "deal_id": "01b7…", "at": "2026-11-26T08:00:00.000Z"},
        ),
        EventType.of(
            Contact.ContactFlaggedAtRisk,
            {
                "contact_id": "01a2…",
                "since": "2027-11-27T00:00:00.000Z",
                "last_purchase_at": "2026-11-26T08:00:00.000Z",
                "cause": {"kind": "automation", "by": "rule:at-risk", "detail": "no won deal for 365 days"},
            },
        ),
        EventType.of(Contact.ContactAtRiskCleared, {"contact_id": "01a2…", "reason": "purchase", "detail": "01b9…"}),
        EventType.of(
            Contact.ContactBecameStale,
            {
                "contact_id": "01a2…",
                "since": "2027-11-26T08:00:00.000Z",
                "verified_at": "2026-11-26T08:00:00.000Z",
                "stale_after_days": 365,
                "lifecycle_stage": "customer",
                "owner": "ana",
            },
        ),
        EventType.of(
            Contact.ContactDetailsVerified,
            {
                "contact_id": "01a2…",
                "at": "2027-12-01T09:30:00.000Z",
                "by": "contact:01a2…",
                "source": "contact",
                "method": "confirmation_link",
                "stale_since": "2027-11-26T08:00:00.000Z",
            },
        ),
        EventType.of(
            Contact.ContactConsentChanged,
            {
                "contact_id": "01a2…",
                "channel": "email",
                "status": "granted",
                "source": "web_form",
                "legal_basis": "consent",
                "at": "2026-11-26T08:00:00.000Z",
            },
        ),
        EventType.of(
            Contact.ContactDuplicateAbsorbed,
            {"contact_id": "01a2…", "duplicate_id": "01a3…", "changes": {"phone": "+989121234567"}},
        ),
        EventType.of(Contact.ContactMerged, {"contact_id": "01a3…", "duplicate_id": "01a3…", "survivor_id": "01a2…"}),
        EventType.of(
            Contact.ContactDuplicateReleased,
            {
                "contact_id": "01a2…",
                "duplicate_id": "01a3…",
                "merge_event_id": "01c1…",
                "changes": {"phone": None, "tags": ["vip"]},
                "consents": {"email": None},
            },
        ),
        EventType.of(
            Contact.ContactUnmerged,
            {"contact_id": "01a3…", "duplicate_id": "01a3…", "survivor_id": "01a2…", "merge_event_id": "01c1…"},
        ),
        EventType.of(Contact.ContactErased, {"contact_id": "01a2…", "reason": "data subject request"}),
        EventType.of(
            Company.CompanyCreated,
            {
                "company_id": "01a4…",
                "name": "Acme",
                "domain": "acme.example",
                "industry": "retail",
                "size": "11-50",
                "phone": None,
                "website": None,
                "address": None,
                "tags": [],
                "attributes": {},
                "owner": None,
            },
        ),
        EventType.of(Company.CompanyUpdated, {"company_id": "01a4…", "changes": {"industry": "wholesale"}}),
        EventType.of(
            Segment.SegmentDefined,
            {
                "segment_id": "01a5…",
                "name": "Strategic in Tehran",
                "description": None,
                "rules": {"all": [{"field": "derived.tier", "op": "eq", "value": "strategic"}]},
            },
        ),
        EventType.of(
            Segment.SegmentUpdated, {"segment_id": "01a5…", "changes": {"name": "Strategic customers in Tehran"}}
        ),
    ],
)

UPCASTERS = Upcasters()


@UPCASTERS.register("ContactLifecycleStageChanged", 1)
def _structured_cause(data: dict[str, Any]) -> dict[str, Any]:
    """v1 → v2: "manual:user:ana" → {"kind": "manual", "by": "user:ana"}; "merge:<id>" likewise."""
    kind, _, by = str(data.get("cause") or "").partition(":")
    if kind not in ("manual", "merge"):
        kind, by = "automation", str(data.get("cause") or "unknown")
    return {**data, "cause": {"kind": kind, "by": by or "unknown"}}
