"""Read models of the contacts service, and the queries that use them.

`contacts` and `companies` hold one document per aggregate (its API view plus search
terms), folded from events by the same domain code the write side uses, so a read
model can never disagree with the record about what an event means.
Lists and search read these; a single record by id is folded from the event store.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from crm_contacts.records import derived as derived_values
from crm_contacts.records import normalize
from crm_contacts.records.domain import Company, Contact
from crmkit.events import RecordedEvent, epoch_ms, parse_time
from crmkit.eventstore import EventStore
from crmkit.projector import AggregateView
from crmkit.web.pagination import decode_cursor, encode_cursor


class ContactsView(AggregateView):
    """One document per contact; it also carries `derived` (crm_contacts.records.derived), which it
    does not fold itself: each fold keeps the newest of the document's own copy and
    `contact_derived`, and copies again after writing, so no derived value is lost to a
    refold or a rebuild."""

    kind = Contact

    def __init__(
        self, name: str, collection: Collection, store: EventStore, topic: str, derived: Collection | None = None
    ) -> None:
        super().__init__(name, collection, store, topic)
        self.derived = derived
        self._known: dict[str, dict[str, Any]] = {}

    def document(self, aggregate: Contact) -> dict[str, Any]:
        return contact_document(aggregate)

    def handle(self, events: Sequence[RecordedEvent]) -> None:
        ids = {event.stream_id for event in events if event.aggregate_type in self.aggregate_types}
        if not ids:
            return
        self._known = derived_values.known(self.derived, ids) if self.derived is not None else {}
        super().handle(events)
        if self.derived is not None:  # a value that landed while we folded: copy it (guarded by version)
            for contact_id, doc in derived_values.known(self.derived, ids).items():
                if doc["version"] > (self._known.get(contact_id) or {}).get("version", 0):
                    derived_values.copy_onto(self.collection, contact_id, doc["values"], doc["version"])

    def fold(self, document: dict[str, Any] | None, events: Sequence[RecordedEvent]) -> dict[str, Any]:
        folded = super().fold(document, events)
        own = (document or {}).get("derived_version") or 0
        joined = self._known.get(events[0].stream_id) or {}
        if joined.get("version", 0) > own:
            folded["derived"], folded["derived_version"] = joined["values"], joined["version"]
        else:
            folded["derived"], folded["derived_version"] = (document or {}).get("derived") or {}, own
        return folded

    def ensure_indexes(self) -> None:
        for keys in (
            ["search"],
            ["email"],
            ["phone"],
            ["company_id"],
            ["lifecycle_stage"],
            ["tags"],
            ["owner"],
            ["team"],
            ["name_key"],
            ["status"],
            ["last_purchase_ms"],
            ["at_risk_since_ms"],
            ["verified_ms"],
            ["stale", "owner"],
            ["stale", "lifecycle_stage"],
        ):
            self.collection.create_index([(key, ASCENDING) for key in keys])


class CompaniesView(AggregateView):
    kind = Company

    def document(self, aggregate: Company) -> dict[str, Any]:
        return company_document(aggregate)

    def ensure_indexes(self) -> None:
        for key in ("search", "domain"):
            self.collection.create_index([(key, ASCENDING)])


def company_document(company: Company) -> dict[str, Any]:
    """A company's read-model document: its view, search terms, and the folded name segment rules compare."""
    view = company.view()
    return {
        **view,
        "search": search_text(normalize.terms(view["name"], view["domain"])),
        "name_folded": normalize.fold(view["name"]) if view["name"] else None,
    }


def contact_document(contact: Contact) -> dict[str, Any]:
    view = contact.view()
    extra = [view["email"]] if view["email"] else []
    if view["phone"]:
        extra += [view["phone"], view["phone"].lstrip("+")]
    words = normalize.terms(view["first_name"], view["last_name"], view["email"])
    name = normalize.fold(f"{view['first_name'] or ''} {view['last_name'] or ''}")
    return {
        **view,
        "search": search_text(words + extra),
        # the same person at the same company: a de-duplication key (None without a name)
        "name_key": f"{name}|{view['company_id'] or ''}" if name else None,
        **segment_keys(view),
    }


# keys only segment rules and the lifecycle and freshness timers query, never shown by the API
SEGMENT_KEYS = (
    "first_name_folded",
    "last_name_folded",
    "created_ms",
    "updated_ms",
    "name_folded",
    "last_purchase_ms",
    "at_risk_since_ms",
    "derived_version",
    "verified_ms",
)


def segment_keys(view: dict[str, Any]) -> dict[str, Any]:
    """What segment rules compare: folded names, and times as integer epoch milliseconds.

    Integers rather than datetimes because the stand-in compares datetimes at whole
    seconds (docs/architecture.md); folded names so letter variants and case do not matter.
    """
    return {
        "first_name_folded": normalize.fold(view["first_name"]) if view["first_name"] else None,
        "last_name_folded": normalize.fold(view["last_name"]) if view["last_name"] else None,
        "created_ms": epoch_ms(view["created_at"]) if view["created_at"] else None,
        "updated_ms": epoch_ms(view["updated_at"]) if view["updated_at"] else None,
        # lifecycle timers (crm_contacts.records.lifecycle) compare these
        "last_purchase_ms": epoch_ms(parse_time(view["last_purchase_at"])) if view["last_purchase_at"] else None,
        "at_risk_since_ms": epoch_ms(parse_time(view["at_risk_since"])) if view["at_risk_since"] else None,
        # the freshness timer (crm_contacts.records.freshness) compares this
        "verified_ms": epoch_ms(parse_time(view["verified_at"]))
        if view.get("verified_at")
        else epoch_ms(view["created_at"])
        if view["created_at"]
        else None,  # the creation counts
    }


DUPLICATE_REASONS = (("email", "same_email"), ("phone", "same_phone"), ("name_key", "same_name_and_company"))
REASON_ORDER = {reason: index for index, (_, reason) in enumerate(DUPLICATE_REASONS)}


def duplicate_pairs(contacts: Collection, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Pairs of active contacts that look like one person, with the reason, a page at a time.

    Pairs are ordered by reason, shared value, then the duplicate's id; the oldest contact
    of a group is suggested as the survivor. A page reads only the groups it shows: per
    reason one `$group` (values held by more than one contact, from the cursor's value on,
    at most a page of them) and one `$in` query for those contacts. (Only `$group` by a
    single field with `$sum` is used: nx-27017 returns `$push` accumulators as strings
    and ignores compound group keys.) The cursor is the last pair's reason and duplicate.
    """
    reason_index, after = _duplicate_position(contacts, cursor)
    pairs: list[dict[str, Any]] = []
    for index in range(reason_index, len(DUPLICATE_REASONS)):
        field, reason = DUPLICATE_REASONS[index]
        resume = after if index == reason_index else None
        pairs += _duplicate_pairs_of(contacts, field, reason, resume, limit + 1 - len(pairs))
        if len(pairs) > limit:
            break
    page, more = pairs[:limit], len(pairs) > limit
    if not more:
        return page, None
    last = page[-1]
    return page, encode_cursor(f"{REASON_ORDER[last['reason']]}:{last['duplicate_id']}")


def _duplicate_position(contacts: Collection, cursor: str | None) -> tuple[int, tuple[Any, str] | None]:
    """Where a page starts: the reason, and the (value, duplicate id) of the last pair shown.

    The value is read from the duplicate's current document; if it has changed since
    (merged, edited), the page resumes at its new place in the order.
    """
    if not cursor:
        return 0, None
    key = decode_cursor(cursor)
    index, _, duplicate_id = key.partition(":")
    if not index.isdigit() or int(index) >= len(DUPLICATE_REASONS) or not duplicate_id:
        # a key this API did not issue is still a position (as on every list): the first reason after it
        later = [at for at in range(len(DUPLICATE_REASONS)) if f"{at}:" > key]
        return (later[0], None) if later else (len(DUPLICATE_REASONS), None)
    field = DUPLICATE_REASONS[int(index)][0]
    document = contacts.find_one({"_id": duplicate_id}, {field: 1}) or {}
    value = document.get(field)
    return int(index), (value, duplicate_id) if value is not None else None


def _duplicate_pairs_of(
    contacts: Collection, field: str, reason: str, after: tuple[Any, str] | None, wanted: int
) -> list[dict[str, Any]]:
    """Up to `wanted` pairs sharing `field`, after the pair `after` (value, duplicate id)."""
    values_from: dict[str, Any] = {"count": {"$gt": 1}}
    if after is not None:
        values_from["_id"] = {"$gte": after[0]}
    shared = [
        group["_id"]
        for group in contacts.aggregate(
            [
                {"$match": {"status": "active", field: {"$ne": None}}},
                {"$group": {"_id": f"${field}", "count": {"$sum": 1}}},
                {"$match": values_from},
                {"$sort": {"_id": 1}},
                {"$limit": wanted + 1},  # every group gives a pair, and the first may be spent already
            ]
        )
    ]
    groups: dict[Any, list[str]] = {}
    for doc in contacts.find({"status": "active", field: {"$in": shared}}, {"_id": 1, field: 1}).sort("_id", ASCENDING):
        groups.setdefault(doc[field], []).append(doc["_id"])
    pairs = [
        {"survivor_id": survivor, "duplicate_id": other, "reason": reason, "matched": value}
        for value in sorted(groups)
        for survivor, *others in [groups[value]]
        for other in others
        if after is None or (value, other) > after
    ]
    return pairs[:wanted]


def search_text(terms: list[str]) -> str:
    """Terms joined into one string, each preceded by a space, so " word" finds a word start.

    One string rather than an array of terms: a regex over array elements is not
    supported by every MongoDB-protocol server (see tests/compat), a regex over a
    string is.
    """
    return "".join(f" {term}" for term in terms)


def projections(db: Database, store: EventStore, topic: str) -> list[ContactsView | CompaniesView]:
    return [
        ContactsView("contacts", db["contacts"], store, topic, derived=db["contact_derived"]),
        CompaniesView("companies", db["companies"], store, topic),
    ]


def search_query(text: str) -> dict[str, Any]:
    """Every word of `text` must start a search term (so "ali rez" finds "Ali Rezaei")."""
    words = normalize.terms(text)
    if not words:
        return {}
    return {"$and": [{"search": {"$regex": " " + re.escape(word)}} for word in words]}


def public(document: dict[str, Any]) -> dict[str, Any]:
    """A read-model document as the API shows it."""
    view = {k: v for k, v in document.items() if k not in ("_id", "search", "name_key") and k not in SEGMENT_KEYS}
    return {"id": document["_id"], **view}
