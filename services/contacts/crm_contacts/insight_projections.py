"""Insight read models: the facts the insight reports count, and the queries that load them.

- `insight_stages` (own topic): one document per contact: `created_ms`, every lifecycle
  stage change with its time and cause, `removed_ms` (merged or erased),
  `customer_since_ms` (first time in a customer stage; NEVER_MS when never).
- `insight_deals` (crm.sales.events): one per deal: `contact_id`, `amount_minor` +
  `scale` + `currency`, `status`, `created_ms`, `won_ms`, `lost_ms`.
- `insight_tickets` (crm.servicedesk.events): one per ticket: `contact_id`, `type`,
  `opened_ms`, `solved_ms`, `csat`, `nps`, `rated_ms`, `tier_at_open`.
- `insight_tiers` (crm.sales.events): one per contact sales ranks: every
  CustomerTierChanged as `{at_ms, tier}`.

All are `StreamProjection`s: the document keeps the last applied stream version, so a
repeated or stale event changes nothing. Times are integer epoch milliseconds (the
stand-in compares datetimes at whole seconds), money integer minor units (no
Decimal128). Other services' streams cannot be gap-filled from our own event store;
Kafka keeps each stream's order and the publishers send in stream order, so those
projections apply whatever is newer than the stored version.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from crm_contacts.insights import CUSTOMER_STAGES, Deal, Period, StageChange, Ticket, TierChange, Timeline
from crmkit.config import topic_of
from crmkit.events import RecordedEvent, parse_time
from crmkit.eventstore import EventStore, epoch_ms
from crmkit.projector import StreamProjection

NEVER_MS = 2**62  # "not yet": an integer, because the stand-in compares null with numbers


def _ms(text: Any, fallback: RecordedEvent) -> int:
    """An RFC 3339 time from an event's data as epoch ms; the event's own time when absent or bad."""
    if isinstance(text, str) and text:
        try:
            return epoch_ms(parse_time(text))
        except ValueError:
            pass
    return epoch_ms(fallback.time)


def minor_units(amount: Any) -> tuple[int, int]:
    """A decimal string as (integer minor units, digits after the point); 0 for what is not a number."""
    try:
        value = Decimal(str(amount)) if amount is not None else Decimal(0)
    except (InvalidOperation, ValueError):
        return 0, 0
    if not value.is_finite():
        return 0, 0
    scale = max(0, -int(value.as_tuple().exponent))  # type: ignore[arg-type]
    return int(value.scaleb(scale)), scale


def _cause(data: dict[str, Any]) -> str:
    cause = data.get("cause")
    if isinstance(cause, dict):
        return f"{cause.get('kind') or 'unknown'}:{cause.get('by') or 'unknown'}"
    return str(cause or "unknown")


class InsightStages(StreamProjection):
    """Each contact's lifecycle timeline, from the contacts service's own events."""

    aggregate_types = ("contact",)

    def fold(self, document: dict[str, Any] | None, events: Sequence[RecordedEvent]) -> dict[str, Any] | None:
        doc = dict(document or {"created_ms": None, "changes": [], "removed_ms": None, "status": "active"})
        changes = list(doc["changes"])
        for event in events:
            at = epoch_ms(event.time)
            if event.type == "ContactCreated":
                doc["created_ms"] = at
                changes.append({"at_ms": at, "from": None, "to": event.data.get("lifecycle_stage") or "lead",
                                "cause": "created"})
            elif event.type == "ContactLifecycleStageChanged":
                changes.append({"at_ms": at, "from": event.data.get("from"), "to": event.data.get("to"),
                                "cause": _cause(event.data)})
            elif event.type in ("ContactMerged", "ContactErased") and doc["removed_ms"] is None:
                doc["removed_ms"] = at
                doc["status"] = "merged" if event.type == "ContactMerged" else "erased"
        if doc["created_ms"] is None:
            return None  # a stream that does not start with ContactCreated is not a contact we can count
        doc["changes"] = changes
        doc["customer_since_ms"] = min((c["at_ms"] for c in changes if c["to"] in CUSTOMER_STAGES),
                                       default=NEVER_MS)
        return doc

    def ensure_indexes(self) -> None:
        for key in ("created_ms", "customer_since_ms"):
            self.collection.create_index([(key, ASCENDING)])


class _ForeignStreams(StreamProjection):
    """A stream projection over another service's topic: `service` says whose events count."""

    service = ""

    def handle(self, events: Sequence[RecordedEvent]) -> None:
        super().handle([e for e in events if e.service == self.service])

    def _contiguous(self, stream_id: str, seen: int, events: list[RecordedEvent]) -> list[RecordedEvent]:
        return sorted({e.version: e for e in events if e.version > seen}.values(), key=lambda e: e.version)


class InsightDeals(_ForeignStreams):
    service = "sales"
    aggregate_types = ("deal",)

    def fold(self, document: dict[str, Any] | None, events: Sequence[RecordedEvent]) -> dict[str, Any] | None:
        doc = dict(document or {"contact_id": None, "amount_minor": 0, "scale": 0, "currency": None,
                                "status": "open", "created_ms": None, "won_ms": None, "lost_ms": None})
        for event in events:
            data = event.data
            if event.type == "DealCreated":
                doc["contact_id"], doc["currency"] = data.get("contact_id"), data.get("currency")
                doc["amount_minor"], doc["scale"] = minor_units(data.get("amount"))
                doc["created_ms"] = _ms(data.get("at"), event)
            elif event.type == "DealUpdated":
                changes = data.get("changes") or {}
                if "amount" in changes:
                    doc["amount_minor"], doc["scale"] = minor_units(changes["amount"])
                if "currency" in changes:
                    doc["currency"] = changes["currency"]
            elif event.type == "DealWon":
                doc["status"], doc["won_ms"], doc["lost_ms"] = "won", _ms(data.get("at"), event), None
                doc["amount_minor"], doc["scale"] = minor_units(data.get("amount"))
                doc["currency"] = data.get("currency") or doc["currency"]
                doc["contact_id"] = data.get("contact_id") or doc["contact_id"]
            elif event.type == "DealLost":
                doc["status"], doc["lost_ms"], doc["won_ms"] = "lost", _ms(data.get("at"), event), None
            elif event.type == "DealReopened":
                doc["status"], doc["won_ms"], doc["lost_ms"] = "open", None, None
            elif event.type == "DealContactChanged":
                doc["contact_id"] = data.get("to")
        return doc

    def ensure_indexes(self) -> None:
        for key in ("contact_id", "won_ms", "status"):
            self.collection.create_index([(key, ASCENDING)])


class InsightTickets(_ForeignStreams):
    service = "servicedesk"
    aggregate_types = ("ticket",)

    def fold(self, document: dict[str, Any] | None, events: Sequence[RecordedEvent]) -> dict[str, Any] | None:
        doc = dict(document or {"contact_id": None, "type": None, "opened_ms": None, "solved_ms": None,
                                "csat": None, "nps": None, "rated_ms": None, "tier_at_open": None})
        for event in events:
            data = event.data
            if event.type == "TicketOpened":
                doc["contact_id"], doc["type"] = data.get("contact_id"), data.get("type")
                doc["tier_at_open"] = data.get("customer_tier")
                doc["opened_ms"] = _ms(data.get("opened_at"), event)
            elif event.type == "TicketSolved":
                doc["solved_ms"] = _ms(data.get("at"), event)
            elif event.type == "TicketStatusChanged" and data.get("from") == "solved" and data.get("to") == "open":
                doc["solved_ms"] = None
            elif event.type == "SatisfactionRated":
                doc["csat"], doc["nps"] = data.get("csat"), data.get("nps")
                doc["rated_ms"] = _ms(data.get("at"), event)
            elif event.type == "TicketContactChanged":
                doc["contact_id"] = data.get("contact_id")
        return doc

    def ensure_indexes(self) -> None:
        for key in ("contact_id", "opened_ms", "rated_ms"):
            self.collection.create_index([(key, ASCENDING)])


class InsightTiers(_ForeignStreams):
    """Sales' customer streams (id = contact id): every tier change with its time."""

    service = "sales"
    aggregate_types = ("customer",)

    def fold(self, document: dict[str, Any] | None, events: Sequence[RecordedEvent]) -> dict[str, Any] | None:
        changes = list((document or {}).get("changes") or [])
        for event in events:
            if event.type == "CustomerTierChanged" and event.data.get("tier"):
                changes.append({"at_ms": epoch_ms(event.time), "tier": event.data["tier"]})
        return {"changes": changes}

    def ensure_indexes(self) -> None:
        pass


def insight_projections(db: Database, store: EventStore, topic: str) -> list[StreamProjection]:
    return [InsightStages("insight_stages", db["insight_stages"], store, topic),
            InsightDeals("insight_deals", db["insight_deals"], store, topic_of("sales")),
            InsightTickets("insight_tickets", db["insight_tickets"], store, topic_of("service-desk")),
            InsightTiers("insight_tiers", db["insight_tiers"], store, topic_of("sales"))]


# --- loading facts for the calculations -------------------------------------------------


def _within(key: str, members: set[str] | None) -> dict[str, Any]:
    return {} if members is None else {key: {"$in": sorted(members)}}


class InsightFacts:
    """Reads the insight read models into the plain values crm_contacts.insights counts.

    `members` (a segment's contact ids, or None for everyone) narrows every query.
    """

    def __init__(self, db: Database) -> None:
        self.stages = db["insight_stages"]
        self.deals = db["insight_deals"]
        self.tickets = db["insight_tickets"]
        self.tiers = db["insight_tiers"]
        self.contacts = db["contacts"]

    def customer_timelines(self, period: Period, members: set[str] | None) -> list[Timeline]:
        """Every contact that entered a customer stage before the period ended."""
        return self._timelines({"customer_since_ms": {"$lt": period.end_ms}, **_within("_id", members)})

    def created_timelines(self, period: Period, members: set[str] | None) -> list[Timeline]:
        """Contacts created in the period that are not merged duplicates of another contact."""
        return self._timelines({"created_ms": {"$gte": period.start_ms, "$lt": period.end_ms},
                                "status": {"$in": ["active", "erased"]}, **_within("_id", members)})

    def _timelines(self, query: dict[str, Any]) -> list[Timeline]:
        out = []
        for doc in self.stages.find(query):
            changes = tuple(StageChange(c["at_ms"], c.get("from"), c["to"], c.get("cause") or "unknown")
                            for c in sorted(doc.get("changes") or [], key=lambda c: c["at_ms"]))
            out.append(Timeline(doc["_id"], doc["created_ms"], changes, doc.get("removed_ms")))
        return out

    def won_deals(self, period: Period, members: set[str] | None) -> list[Deal]:
        """Deals won in the period, plus every earlier won deal of the same contacts."""
        in_period = self._deals({"status": "won", "won_ms": {"$gte": period.start_ms, "$lt": period.end_ms},
                                 **_within("contact_id", members)})
        contacts = sorted({d.contact_id for d in in_period if d.contact_id})
        earlier = self._deals({"status": "won", "won_ms": {"$lt": period.start_ms},
                               "contact_id": {"$in": contacts}}) if contacts else []
        return in_period + earlier

    def won_deals_before_end(self, period: Period, members: set[str] | None) -> list[Deal]:
        return self._deals({"status": "won", "won_ms": {"$lt": period.end_ms}, **_within("contact_id", members)})

    def _deals(self, query: dict[str, Any]) -> list[Deal]:
        return [Deal(doc["_id"], doc.get("contact_id"), int(doc.get("amount_minor") or 0), int(doc.get("scale") or 0),
                     doc.get("currency") or "XXX", doc.get("status") or "open", doc.get("created_ms"),
                     doc.get("won_ms"))
                for doc in self.deals.find(query)]

    def tickets_opened(self, period: Period, members: set[str] | None) -> list[Ticket]:
        return self._tickets({"opened_ms": {"$gte": period.start_ms, "$lt": period.end_ms},
                              **_within("contact_id", members)})

    def tickets_rated(self, period: Period, members: set[str] | None) -> list[Ticket]:
        return self._tickets({"rated_ms": {"$gte": period.start_ms, "$lt": period.end_ms},
                              **_within("contact_id", members)})

    def _tickets(self, query: dict[str, Any]) -> list[Ticket]:
        return [Ticket(doc["_id"], doc.get("contact_id"), doc.get("type") or "question", doc.get("opened_ms"),
                       doc.get("csat"), doc.get("nps"), doc.get("rated_ms"), doc.get("tier_at_open"))
                for doc in self.tickets.find(query)]

    def tier_history(self, contact_ids: Iterable[str | None]) -> dict[str, list[TierChange]]:
        ids = sorted({c for c in contact_ids if c})
        if not ids:
            return {}
        return {doc["_id"]: [TierChange(c["at_ms"], c["tier"]) for c in doc.get("changes") or []]
                for doc in self.tiers.find({"_id": {"$in": ids}})}

    def current_stages(self, contact_ids: Iterable[str | None]) -> dict[str, str]:
        """Each contact's lifecycle stage now (the `contacts` read model)."""
        ids = sorted({c for c in contact_ids if c})
        if not ids:
            return {}
        return {doc["_id"]: doc.get("lifecycle_stage") or "lead"
                for doc in self.contacts.find({"_id": {"$in": ids}}, {"lifecycle_stage": 1})}
