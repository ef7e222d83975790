"""Derived values: what other services conclude about a contact, kept beside the record.

Sales ranks customers and says so with `crm.sales.CustomerTierChanged` (on its topic,
keyed by the contact id, its stream = the contact id). The `derived` projection keeps
the newest values per contact in `contact_derived` (`{_id, version, values}`; `version`
is the sales stream version, so a repeated or stale event changes nothing: a late v1
arriving after v2 is such a stale one, and skipping it is right, because every
CustomerTierChanged carries all the derived values, so the newest version is the whole
truth, as in-order delivery would leave it) and copies
them onto the contact's read-model document as `derived` (`derived.tier`,
`derived.clv`, …), where segment rules (`{"field": "derived.tier", ...}`) find them.

`contact_derived` is the source the `contacts` view joins when it folds a document, so
`crm rebuild contacts contacts` keeps every derived value and the two projectors can
run in any order: every copy onto a document is guarded by `derived_version` (only a
newer version overwrites), and the contacts view copies again after its own writes
(see `ContactsView.handle`), so a tier that lands while a document is being refolded
is not lost. Merged contacts: nothing moves here; sales re-points the duplicate's deals
and records a new tier for the survivor, which arrives like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from crmkit.events import RecordedEvent

SALES_SERVICE = "sales"


def derived_values(data: dict[str, Any]) -> dict[str, Any]:
    """The values a CustomerTierChanged puts on the contact (numbers as numbers, for segments)."""
    clv = data.get("clv") or {}
    try:
        amount = float(Decimal(str(clv.get("amount"))))
    except (InvalidOperation, ValueError):
        amount = None
    tier = data.get("tier")
    return {
        "tier": tier,
        "previous_tier": data.get("previous_tier"),
        "strategic": tier == "strategic",
        "clv": amount,
        "clv_currency": clv.get("currency"),
    }


def copy_onto(contacts: Collection, contact_id: str, values: dict[str, Any], version: int) -> None:
    """Put `values` on the contact's document unless it already holds a newer version."""
    contacts.update_one(
        {"_id": contact_id, "$or": [{"derived_version": {"$lt": version}}, {"derived_version": {"$in": [None]}}]},
        {"$set": {"derived": values, "derived_version": version}},
    )


def known(derived: Collection, contact_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`contact_derived` documents by contact id."""
    ids = list(contact_ids)
    return {doc["_id"]: doc for doc in derived.find({"_id": {"$in": ids}})} if ids else {}


class DerivedValues:
    """Projection `derived`: CustomerTierChanged from the sales topic → `contact_derived` + `derived.*`."""

    name = "derived"

    def __init__(self, contacts: Collection, derived: Collection, sales_topic: str) -> None:
        self.contacts = contacts
        self.derived = derived
        self.topics = [sales_topic]

    def handle(self, events: Sequence[RecordedEvent]) -> None:
        newest: dict[str, RecordedEvent] = {}
        for event in events:
            if event.service == SALES_SERVICE and event.type == "CustomerTierChanged":
                seen = newest.get(event.stream_id)
                if seen is None or event.version > seen.version:
                    newest[event.stream_id] = event
        current = known(self.derived, newest)
        for contact_id, event in newest.items():
            if (current.get(contact_id) or {}).get("version", 0) >= event.version:
                continue  # already applied (at-least-once delivery) or older than what we hold
            values = derived_values(event.data)
            try:  # the _id repeated in the replacement: nx-27017 does not take it from the filter on upsert
                self.derived.replace_one(
                    {"_id": contact_id, "version": {"$lt": event.version}},
                    {"_id": contact_id, "version": event.version, "values": values},
                    upsert=True,
                )
            except DuplicateKeyError:
                continue  # a newer version landed meanwhile (a rebuild beside the worker)
            copy_onto(self.contacts, contact_id, values, event.version)

    def reset(self) -> None:
        """Forget every derived value (a rebuild reads the sales topic again from the start)."""
        self.derived.delete_many({})
        self.contacts.update_many({}, {"$set": {"derived": {}, "derived_version": 0}})
