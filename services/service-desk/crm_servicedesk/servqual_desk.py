"""SERVQUAL's use cases: configure the instrument and the policy, send, answer, and the worker's pass.

Sending is recording `ServqualSurveySent`: messaging's default trigger on that event emails
the contact the survey's signed link (`crm_messaging.triggers`, as for the CSAT survey on
`TicketSolved`), so consent, locale, suppression and delivery tracking are messaging's, as
for every message. A survey the desk sends by itself has an id derived from what caused it
(the ticket, or the contact and quarter), so a pass repeated, or run by two workers at
once, sends it once: the event store keeps one first event per stream.

`ServqualUseCases` is all of it on any event store: whom the pass picks comes from the
desk's `views.ServqualViews` (solved tickets, tier members, surveys already recorded),
its checkpoint from a `PassCheckpoint`, so the use-case tests run the pass on the
in-memory store. `ServqualDesk` is it wired to a process's runtime (MongoDB), with the
survey list and the report's collection.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from crm_servicedesk.commands import TicketDesk, TicketUseCases
from crm_servicedesk.servqual import (
    INSTRUMENT_ID,
    POLICY_ID,
    ServqualInstrument,
    ServqualPolicy,
    ServqualSurvey,
)
from crm_servicedesk.views import ServqualViews
from crmkit import clock
from crmkit.aggregate import Aggregate, changes_by_event
from crmkit.errors import Conflict, NotFound, ValidationFailed
from crmkit.events import Metadata, RecordedEvent, epoch_ms, new_id, text_ms
from crmkit.eventstore import EventStore
from crmkit.periodic import PeriodicJob
from crmkit.projector import AggregateView
from crmkit.repository import Repository
from crmkit.runtime import Runtime
from crmkit.store import ConcurrencyError

log = logging.getLogger(__name__)

NAMESPACE = uuid.UUID("6f1c3b52-6d8e-4c47-9a53-5e7d1f0a2b91")
PASS_SECONDS = 15.0  # how often the worker applies the policy
SETTLE_MS = 5_000  # a ticket solved this recently is counted next pass (the read model may still be catching up)
MARGIN_MS = 3_600_000  # each pass looks again at the last hour's solves (one the read model saw late is counted)
SCHEDULER = Metadata(actor="system:servqual-policy")
A = TypeVar("A", bound=Aggregate)


def derived_id(*parts: str) -> str:
    """A survey id fixed by its cause: sending it twice records it once."""
    return str(uuid.uuid5(NAMESPACE, "|".join(parts)))


def quarter_of(moment: datetime) -> str:
    """The calendar quarter (UTC) a moment is in: 2026-Q4."""
    return f"{moment.year}-Q{(moment.month - 1) // 3 + 1}"


def survey_document(survey: ServqualSurvey) -> dict[str, Any]:
    """The read-model document of a survey (its id is the document's `_id`): its view, plus what lists and
    the report filter on (times as epoch ms)."""
    view = survey.view()
    view.pop("id")
    return {
        **view,
        "sent_ms": text_ms(survey.sent_at),
        "answered_ms": text_ms(survey.answered_at),
        "rule": (survey.trigger or {}).get("rule"),
    }


class SurveysView(AggregateView):
    """One document per survey (`survey_document`)."""

    kind = ServqualSurvey

    def document(self, aggregate: ServqualSurvey) -> dict[str, Any]:
        return survey_document(aggregate)

    def ensure_indexes(self) -> None:
        for key in ("contact_id", "status", "sent_ms", "answered_ms"):
            self.collection.create_index([(key, ASCENDING)])


def surveys_view(db: Database, store: EventStore, topic: str) -> SurveysView:
    return SurveysView("servqual_surveys", db["servqual_surveys"], store, topic)


class PassCheckpoint(Protocol):
    """Up to when the pass has counted solved tickets: the next pass starts there (less MARGIN_MS)."""

    def checked_ms(self) -> int | None:
        """The last pass's upper bound (epoch ms); None before the first pass."""
        ...

    def check(self, upto_ms: int) -> None:
        """Record that the solves up to `upto_ms` are counted."""
        ...


class MongoPassCheckpoint:
    """`PassCheckpoint` as the `solved` document of a collection (`servqual_schedule`)."""

    def __init__(self, collection: Collection[dict[str, Any]]) -> None:
        self.collection = collection

    def checked_ms(self) -> int | None:
        return (self.collection.find_one({"_id": "solved"}) or {}).get("checked_ms")

    def check(self, upto_ms: int) -> None:
        self.collection.update_one({"_id": "solved"}, {"$set": {"checked_ms": upto_ms}}, upsert=True)


class ServqualUseCases:
    """SERVQUAL's use cases on the desk's use cases (contacts, tickets, tiers), any event store,
    any `ServqualViews` and `PassCheckpoint`; `publish` as for `TicketUseCases`."""

    def __init__(
        self,
        desk: TicketUseCases,
        views: ServqualViews,
        publish: Callable[[list[RecordedEvent]], None],
        checkpoint: PassCheckpoint,
    ) -> None:
        self.desk = desk
        self.views = views
        self.checkpoint = checkpoint
        self.instruments: Repository[ServqualInstrument] = Repository(desk.store, ServqualInstrument, publish)
        self.policies: Repository[ServqualPolicy] = Repository(desk.store, ServqualPolicy, publish)
        self.surveys: Repository[ServqualSurvey] = Repository(desk.store, ServqualSurvey, publish)

    # --- the instrument and the policy: one of each, folded from the store ------------------------

    def instrument(self, as_of: datetime | None = None) -> ServqualInstrument:
        """The instrument now (or at `as_of`); the standard 22 items, equal weights, until configured."""
        return _singleton(self.instruments, INSTRUMENT_ID, as_of)

    def policy(self, as_of: datetime | None = None) -> ServqualPolicy:
        """The policy now (or at `as_of`); off until configured."""
        return _singleton(self.policies, POLICY_ID, as_of)

    def configure_instrument(
        self, items: Mapping[str, Sequence[str]] | None, weights: Mapping[str, float] | None, meta: Metadata
    ) -> ServqualInstrument:
        return _change_singleton(self.instruments, INSTRUMENT_ID, lambda i: i.configure(items, weights), meta)

    def configure_policy(self, fields: Mapping[str, Any], meta: Metadata) -> ServqualPolicy:
        return _change_singleton(self.policies, POLICY_ID, lambda p: p.configure(fields, clock.now()), meta)

    def history(self, kind: str) -> list[dict[str, Any]]:
        """Every configuration of the instrument or the policy: who, when, before and after."""
        repository, stream, cls = (
            (self.instruments, INSTRUMENT_ID, ServqualInstrument)
            if kind == "instrument"
            else (self.policies, POLICY_ID, ServqualPolicy)
        )
        try:
            events = repository.history(stream)
        except NotFound:
            return []
        return changes_by_event(cls, stream, events)

    # --- surveys ----------------------------------------------------------------------------------

    def send(self, contact_id: str, ticket_id: str | None, meta: Metadata) -> ServqualSurvey:
        """Send a survey to a contact now (staff's choice): the contact must exist (asked over gRPC) and not be
        erased; `ticket_id`, if named, must be one of theirs."""
        try:
            contact = self.desk.directory.get(contact_id)
        except NotFound:
            raise ValidationFailed("unknown contact", {"contact_id": [f"no contact with id {contact_id}"]}) from None
        if contact.get("status") == "erased":
            raise ValidationFailed("erased contact", {"contact_id": ["this contact has been erased"]})
        self.desk.views.remember_contact(contact)
        ticket = None
        if ticket_id is not None:  # from the store: a ticket opened a moment ago counts
            try:
                found = self.desk.ticket(ticket_id)
            except NotFound:
                found = None
            if found is None or found.contact_id != contact["id"]:
                raise ValidationFailed(
                    "not this contact's ticket", {"ticket_id": [f"no ticket {ticket_id} of contact {contact['id']}"]}
                )
            ticket = {"_id": found.id, "group": found.group}
        context = self._context(contact["id"], ticket)
        survey = ServqualSurvey.send(
            new_id(), contact["id"], self.instrument().snapshot(), {"rule": "manual"}, context, clock.now()
        )
        self.surveys.save(survey, meta)
        return survey

    def survey(self, survey_id: str) -> ServqualSurvey:
        return self.surveys.get(survey_id)

    def list_surveys(self, filters: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        docs, cursor = self.views.survey_page(filters, filters["limit"], filters.get("cursor"))
        return [ServqualSurvey.restore({**doc, "id": doc["_id"]}).view() for doc in docs], cursor

    def answer(
        self, survey_id: str, expectations: Mapping[str, Any], perceptions: Mapping[str, Any], meta: Metadata
    ) -> ServqualSurvey:
        """Record the answers once; a concurrent second answer loses (409)."""
        return self.surveys.change(survey_id, lambda s: s.answer(expectations, perceptions, clock.now()), meta)

    def _context(self, contact_id: str, ticket: Mapping[str, Any] | None) -> dict[str, Any]:
        """The survey's ticket (the one it is about, if any), the agent group that served the contact (that
        ticket's, else their latest ticket's) and their customer tier now."""
        return {
            "ticket_id": ticket["_id"] if ticket else None,
            "group": ticket.get("group") if ticket is not None else self.views.latest_group(contact_id),
            "customer_tier": self.desk.views.tier(contact_id),
        }

    # --- the worker's pass --------------------------------------------------------------------------

    def apply_policy(self, now: datetime | None = None) -> dict[str, int]:
        """Send the surveys the policy asks for now (none while it is off); returns how many were sent.

        Every-Nth rules count the tickets first solved since the policy's `counting_since`, in the
        order they were first solved; the Nth, 2Nth, ... one sends its contact a survey, keyed by the
        ticket (so both rules picking one ticket send one survey). Each pass looks at the tickets
        first solved since the last pass (and the hour before: MARGIN_MS); the quarterly rule at every
        contact of the policy's tiers without this quarter's survey.
        """
        now = now or clock.now()
        policy = self.policy()
        if not policy.enabled or policy.counting_since is None:
            return {"sent": 0}
        wanted: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}  # survey id → contact, trigger, ticket
        upto = epoch_ms(now) - SETTLE_MS
        since = text_ms(policy.counting_since) or 0
        checked = self.checkpoint.checked_ms()
        checked = since if checked is None else checked
        start = max(since, checked - MARGIN_MS)
        if (policy.every_nth_solved_per_contact or policy.every_nth_solved_overall) and upto >= start:
            recent = self._solved(start, upto)
            if policy.every_nth_solved_per_contact:
                wanted.update(self._nth_per_contact(recent, policy.every_nth_solved_per_contact, since, upto))
            if policy.every_nth_solved_overall:
                wanted.update(self._nth_overall(recent, policy.every_nth_solved_overall, since, start))
        if policy.quarterly_tiers:
            wanted.update(self._quarterly(policy.quarterly_tiers, now))
        sent = self._send_many(wanted, now)
        if upto >= start:
            self.checkpoint.check(upto)
        return {"sent": sent}

    def _solved(self, start: int, end: int, contact_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Tickets first solved in [start, end] (epoch ms), in the order they were (ties by id)."""
        docs = self.views.solved_tickets(start, end, contact_ids)
        return sorted(docs, key=lambda d: (d["first_solved_ms"], d["_id"]))

    def _nth_per_contact(
        self, recent: list[dict[str, Any]], n: int, since: int, upto: int
    ) -> dict[str, tuple[str, dict[str, Any], dict[str, Any]]]:
        contacts = sorted({doc["contact_id"] for doc in recent})
        theirs = self._solved(since, upto, contacts) if contacts else []
        ordinal: dict[str, int] = {}
        recent_ids = {doc["_id"] for doc in recent}
        wanted = {}
        for doc in theirs:
            ordinal[doc["contact_id"]] = ordinal.get(doc["contact_id"], 0) + 1
            if ordinal[doc["contact_id"]] % n == 0 and doc["_id"] in recent_ids:
                trigger = {"rule": "every_nth_solved", "scope": "contact", "n": n}
                wanted[derived_id("solved", doc["_id"])] = (doc["contact_id"], trigger, doc)
        return wanted

    def _nth_overall(
        self, recent: list[dict[str, Any]], n: int, since: int, start: int
    ) -> dict[str, tuple[str, dict[str, Any], dict[str, Any]]]:
        before = self.views.count_solved(since, start)
        wanted = {}
        for index, doc in enumerate(recent, start=before + 1):
            if index % n == 0:
                trigger = {"rule": "every_nth_solved", "scope": "overall", "n": n}
                wanted[derived_id("solved", doc["_id"])] = (doc["contact_id"], trigger, doc)
        return wanted

    def _quarterly(self, tiers: Sequence[str], now: datetime) -> dict[str, tuple[str, dict[str, Any], dict[str, Any]]]:
        quarter = quarter_of(now)
        wanted: dict[str, tuple[str, dict[str, Any], dict[str, Any]]]
        wanted = {
            derived_id("quarterly", contact_id, quarter): (
                contact_id,
                {"rule": "quarterly", "period": quarter, "tier": tier},
                {},
            )
            for contact_id, tier in self.views.tier_members(tiers).items()
        }
        done = self.views.surveyed(list(wanted))
        return {sid: cause for sid, cause in wanted.items() if sid not in done}

    def _send_many(self, wanted: Mapping[str, tuple[str, dict[str, Any], dict[str, Any]]], now: datetime) -> int:
        """Record the wanted surveys not recorded yet, in one bulk append; erased contacts get none."""
        if not wanted:
            return 0
        known = self.desk.views.contacts(sorted({contact for contact, _, _ in wanted.values()}))
        existing = set(self.surveys.get_many(list(wanted)))
        instrument = self.instrument().snapshot()
        surveys = []
        for survey_id, (contact_id, trigger, ticket) in wanted.items():
            local = known.get(contact_id) or {}
            if survey_id in existing or local.get("status") == "erased":
                continue
            surveys.append(
                ServqualSurvey.send(
                    survey_id,
                    local.get("_id") or contact_id,
                    instrument,
                    trigger,
                    self._context(contact_id, ticket or None),
                    now,
                )
            )
        if not surveys:
            return 0
        taken = self.surveys.save_many(surveys, lambda _: SCHEDULER)  # another worker's pass recorded those
        return len(surveys) - len(taken)


class ServqualDesk(ServqualUseCases):
    """SERVQUAL on a process's runtime: the desk's MongoDB views, the checkpoint in `servqual_schedule`;
    keeps the surveys read model's collection for the report (`servqual_api`)."""

    def __init__(self, desk: TicketDesk) -> None:
        runtime = desk.runtime
        super().__init__(desk, desk.mongo_views, runtime.publish, MongoPassCheckpoint(runtime.db["servqual_schedule"]))
        self.desk: TicketDesk = desk
        self.surveys_view = runtime.db["servqual_surveys"]

    def ensure_indexes(self) -> None:
        surveys_view(self.desk.runtime.db, self.desk.runtime.store, self.desk.runtime.settings.topic).ensure_indexes()


def _singleton(repository: Repository[A], stream_id: str, as_of: datetime | None) -> A:
    try:
        return repository.get(stream_id, as_of=as_of)
    except NotFound:
        return repository.kind(stream_id)


def _change_singleton(repository: Repository[A], stream_id: str, decide: Callable[[A], Any], meta: Metadata) -> A:
    """Load (or start) the one aggregate of its kind, decide, save; a concurrent change is decided again."""
    for _ in range(3):
        aggregate = _singleton(repository, stream_id, None)
        decide(aggregate)
        try:
            repository.save(aggregate, meta)
            return aggregate
        except ConcurrencyError:
            continue
    raise Conflict("the configuration was changed concurrently; load it again and retry")


def policy_job(desk: ServqualDesk, interval: float = PASS_SECONDS) -> PeriodicJob:
    """The worker's SERVQUAL job: apply the policy every `interval` seconds (crmkit.periodic)."""

    def sent(outcome: dict[str, Any], seconds: float) -> None:
        if outcome["sent"]:
            log.info("SERVQUAL surveys sent by the policy", extra={**outcome, "seconds": round(seconds, 3)})

    return PeriodicJob(desk.desk.runtime.settings.service, "servqual_policy", desk.apply_policy, interval, sent)


def job(runtime: Runtime) -> PeriodicJob:
    """The worker's SERVQUAL policy job, for the service's spec."""
    return policy_job(ServqualDesk(TicketDesk(runtime)))
