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

All are `StreamProjection`s. `insight_stages` follows our own streams: it keeps the last
applied stream version and fills a gap from the event store. Other services' streams
cannot be gap-filled from our store, and although their publishers keep each stream's
order on the topic (crmkit.publisher), a late event (v1 after v2) must still come out
right: the foreign projections (`_ForeignStreams`) apply an event in its place rather
than dropping it. Deals and tickets keep, per field, the stream version that set it
(`stamps`), so an older event never overwrites a newer value; tiers keep each change
with its version. The result is the same in any delivery order, and a repeat changes
nothing. Times are integer epoch milliseconds (the stand-in compares datetimes at whole
seconds), money integer minor units (no Decimal128).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from pymongo import ASCENDING, ReplaceOne
from pymongo.database import Database

from crm_contacts.insights.figures import CUSTOMER_STAGES, Deal, Period, StageChange, Ticket, TierChange, Timeline
from crmkit.config import topic_of
from crmkit.events import RecordedEvent, epoch_ms, parse_time
from crmkit.eventstore import EventStore
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
    scale = max(0, -int(value.as_tuple().exponent))
    return int(value.scaleb(scale)), scale


def _amount(amount: Any) -> dict[str, int]:
    """The fields an amount sets: integer minor units and their scale."""
    minor, scale = minor_units(amount)
    return {"amount_minor": minor, "scale": scale}


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
                changes.append(
                    {"at_ms": at, "from": None, "to": event.data.get("lifecycle_stage") or "lead", "cause": "created"}
                )
            elif event.type == "ContactLifecycleStageChanged":
                changes.append(
                    {
                        "at_ms": at,
                        "from": event.data.get("from"),
                        "to": event.data.get("to"),
                        "cause": _cause(event.data),
                    }
                )
            elif event.type in ("ContactMerged", "ContactErased") and doc["removed_ms"] is None:
                doc["removed_ms"] = at
                doc["status"] = "merged" if event.type == "ContactMerged" else "erased"
            elif event.type == "ContactUnmerged" and doc["status"] == "merged":  # counted again
                doc["removed_ms"], doc["status"] = None, "active"
        if doc["created_ms"] is None:
            return None  # a stream that does not start with ContactCreated is not a contact we can count
        doc["changes"] = changes
        doc["customer_since_ms"] = min((c["at_ms"] for c in changes if c["to"] in CUSTOMER_STAGES), default=NEVER_MS)
        return doc

    def ensure_indexes(self) -> None:
        for key in ("created_ms", "customer_since_ms"):
            self.collection.create_index([(key, ASCENDING)])


class _ForeignStreams(StreamProjection):
    """A projection of another service's streams (`service` says whose events count), one
    document per stream, that takes the stream's events in any order.

    Subclasses list the document's fields with their values before any event (`blank`)
    and say which fields an event sets (`sets`). Each field remembers the version that
    set it (`stamps`) and takes a value only from a newer version.
    """

    service = ""
    blank: dict[str, Any] = {}

    def sets(self, event: RecordedEvent) -> dict[str, Any]:
        raise NotImplementedError

    def handle(self, events: Sequence[RecordedEvent]) -> None:
        by_stream: dict[str, list[RecordedEvent]] = defaultdict(list)
        for event in events:
            if event.service == self.service and event.aggregate_type in self.aggregate_types:
                by_stream[event.stream_id].append(event)
        if not by_stream:
            return
        current = {doc["_id"]: doc for doc in self.collection.find({"_id": {"$in": list(by_stream)}})}
        writes = []
        for stream_id, stream_events in by_stream.items():
            merged = self.merge(current.get(stream_id), stream_id, stream_events)
            if merged != current.get(stream_id):
                writes.append(ReplaceOne({"_id": stream_id}, merged, upsert=True))
        if writes:
            self.collection.bulk_write(writes, ordered=False)

    def merge(self, document: dict[str, Any] | None, stream_id: str, events: Sequence[RecordedEvent]) -> dict[str, Any]:
        """The document with `events` applied, each field taking the value of its newest version."""
        doc = {**self.blank, **(document or {}), "_id": stream_id}
        # a document written before stamps existed was folded in order up to its version
        stamps = dict(doc.pop("stamps", None) or {field: doc.get("version", 0) for field in self.blank})
        for event in events:
            for field, value in self.sets(event).items():
                if event.version > stamps.get(field, 0):
                    doc[field], stamps[field] = value, event.version
        doc["stamps"] = stamps
        doc["version"] = max([doc.get("version", 0), *(event.version for event in events)])
        return doc


class InsightDeals(_ForeignStreams):
    service = "sales"
    aggregate_types = ("deal",)
    blank = {
        "contact_id": None,
        "amount_minor": 0,
        "scale": 0,
        "currency": None,
        "status": "open",
        "created_ms": None,
        "won_ms": None,
        "lost_ms": None,
    }

    def sets(self, event: RecordedEvent) -> dict[str, Any]:
        data = event.data
        if event.type == "DealCreated":
            return {
                "contact_id": data.get("contact_id"),
                "currency": data.get("currency"),
                "created_ms": _ms(data.get("at"), event),
                **_amount(data.get("amount")),
            }
        if event.type == "DealUpdated":
            changes = data.get("changes") or {}
            return {
                **(_amount(changes["amount"]) if "amount" in changes else {}),
                **({"currency": changes["currency"]} if "currency" in changes else {}),
            }
        if event.type == "DealWon":
            return {
                "status": "won",
                "won_ms": _ms(data.get("at"), event),
                "lost_ms": None,
                **_amount(data.get("amount")),
                **{field: data[field] for field in ("currency", "contact_id") if data.get(field)},
            }
        if event.type == "DealLost":
            return {"status": "lost", "lost_ms": _ms(data.get("at"), event), "won_ms": None}
        if event.type == "DealReopened":
            return {"status": "open", "won_ms": None, "lost_ms": None}
        if event.type == "DealContactChanged":
            return {"contact_id": data.get("to")}
        return {}

    def ensure_indexes(self) -> None:
        for key in ("contact_id", "won_ms", "status"):
            self.collection.create_index([(key, ASCENDING)])


class InsightTickets(_ForeignStreams):
    service = "servicedesk"
    aggregate_types = ("ticket",)
    blank = {
        "contact_id": None,
        "type": None,
        "opened_ms": None,
        "solved_ms": None,
        "csat": None,
        "nps": None,
        "rated_ms": None,
        "tier_at_open": None,
    }

    def sets(self, event: RecordedEvent) -> dict[str, Any]:
        data = event.data
        if event.type == "TicketOpened":
            return {
                "contact_id": data.get("contact_id"),
                "type": data.get("type"),
                "tier_at_open": data.get("customer_tier"),
                "opened_ms": _ms(data.get("opened_at"), event),
            }
        if event.type == "TicketSolved":
            return {"solved_ms": _ms(data.get("at"), event)}
        if event.type == "TicketStatusChanged" and data.get("from") == "solved" and data.get("to") == "open":
            return {"solved_ms": None}
        if event.type == "SatisfactionRated":
            return {"csat": data.get("csat"), "nps": data.get("nps"), "rated_ms": _ms(data.get("at"), event)}
        if event.type == "TicketContactChanged":
            return {"contact_id": data.get("contact_id")}
        return {}

    def ensure_indexes(self) -> None:
        for key in ("contact_id", "opened_ms", "rated_ms"):
            self.collection.create_index([(key, ASCENDING)])


class InsightTiers(_ForeignStreams):
    """Sales' customer streams (id = contact id): every tier change with its time and version."""

    service = "sales"
    aggregate_types = ("customer",)

    def merge(self, document: dict[str, Any] | None, stream_id: str, events: Sequence[RecordedEvent]) -> dict[str, Any]:
        """Every change once, by version, whatever order they came in."""
        changes = list((document or {}).get("changes") or [])
        # changes stored before versions were kept were applied in order up to the document's version
        floor = (document or {}).get("version", 0) if any("version" not in c for c in changes) else 0
        seen = {c.get("version") for c in changes}
        for event in events:
            if (
                event.type == "CustomerTierChanged"
                and event.data.get("tier")
                and event.version > floor
                and event.version not in seen
            ):
                changes.append({"version": event.version, "at_ms": epoch_ms(event.time), "tier": event.data["tier"]})
                seen.add(event.version)
        changes.sort(key=lambda c: c.get("version", 0))
        version = max([(document or {}).get("version", 0), *(event.version for event in events)])
        return {"_id": stream_id, "changes": changes, "version": version}

    def ensure_indexes(self) -> None:
        pass


def insight_projections(
    db: Database, store: EventStore, topic: str
) -> list[InsightStages | InsightDeals | InsightTickets | InsightTiers]:
    return [
        InsightStages("insight_stages", db["insight_stages"], store, topic),
        InsightDeals("insight_deals", db["insight_deals"], store, topic_of("sales")),
        InsightTickets("insight_tickets", db["insight_tickets"], store, topic_of("service-desk")),
        InsightTiers("insight_tiers", db["insight_tiers"], store, topic_of("sales")),
    ]


# --- loading facts for the calculations -------------------------------------------------


def _within(key: str, members: set[str] | None) -> dict[str, Any]:
    return {} if members is None else {key: {"$in": sorted(members)}}


class InsightFacts:
    """Reads the insight read models into the plain values crm_contacts.insights.figures counts.

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
        return self._timelines(
            {
                "created_ms": {"$gte": period.start_ms, "$lt": period.end_ms},
                "status": {"$in": ["active", "erased"]},
                **_within("_id", members),
            }
        )

    def _timelines(self, query: dict[str, Any]) -> list[Timeline]:
        out = []
        for doc in self.stages.find(query):
            changes = tuple(
                StageChange(c["at_ms"], c.get("from"), c["to"], c.get("cause") or "unknown")
                for c in sorted(doc.get("changes") or [], key=lambda c: c["at_ms"])
            )
            out.append(Timeline(doc["_id"], doc["created_ms"], changes, doc.get("removed_ms")))
        return out

    def won_deals(self, period: Period, members: set[str] | None) -> list[Deal]:
        """Deals won in the period, plus every earlier won deal of the same contacts."""
        in_period = self._deals(
            {
                "status": "won",
                "won_ms": {"$gte": period.start_ms, "$lt": period.end_ms},
                **_within("contact_id", members),
            }
        )
        contacts = sorted({d.contact_id for d in in_period if d.contact_id})
        earlier = (
            self._deals({"status": "won", "won_ms": {"$lt": period.start_ms}, "contact_id": {"$in": contacts}})
            if contacts
            else []
        )
        return in_period + earlier

    def won_deals_before_end(self, period: Period, members: set[str] | None) -> list[Deal]:
        return self._deals({"status": "won", "won_ms": {"$lt": period.end_ms}, **_within("contact_id", members)})

    def _deals(self, query: dict[str, Any]) -> list[Deal]:
        return [
            Deal(
                doc["_id"],
                doc.get("contact_id"),
                int(doc.get("amount_minor") or 0),
                int(doc.get("scale") or 0),
                doc.get("currency") or "XXX",
                doc.get("status") or "open",
                doc.get("created_ms"),
                doc.get("won_ms"),
            )
            for doc in self.deals.find(query)
        ]

    def tickets_opened(self, period: Period, members: set[str] | None) -> list[Ticket]:
        return self._tickets(
            {"opened_ms": {"$gte": period.start_ms, "$lt": period.end_ms}, **_within("contact_id", members)}
        )

    def tickets_rated(self, period: Period, members: set[str] | None) -> list[Ticket]:
        return self._tickets(
            {"rated_ms": {"$gte": period.start_ms, "$lt": period.end_ms}, **_within("contact_id", members)}
        )

    def _tickets(self, query: dict[str, Any]) -> list[Ticket]:
        return [
            Ticket(
                doc["_id"],
                doc.get("contact_id"),
                doc.get("type") or "question",
                doc.get("opened_ms"),
                doc.get("csat"),
                doc.get("nps"),
                doc.get("rated_ms"),
                doc.get("tier_at_open"),
            )
            for doc in self.tickets.find(query)
        ]

    def tier_history(self, contact_ids: Iterable[str | None]) -> dict[str, list[TierChange]]:
        ids = sorted({c for c in contact_ids if c})
        if not ids:
            return {}
        return {
            doc["_id"]: [TierChange(c["at_ms"], c["tier"]) for c in doc.get("changes") or []]
            for doc in self.tiers.find({"_id": {"$in": ids}})
        }

    def current_stages(self, contact_ids: Iterable[str | None]) -> dict[str, str]:
        """Each contact's lifecycle stage now (the `contacts` read model)."""
        ids = sorted({c for c in contact_ids if c})
        if not ids:
            return {}
        return {
            doc["_id"]: doc.get("lifecycle_stage") or "lead"
            for doc in self.contacts.find({"_id": {"$in": ids}}, {"lifecycle_stage": 1})
        }
