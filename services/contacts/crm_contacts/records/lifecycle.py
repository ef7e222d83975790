"""Lifecycle automation: sales events and the passing of time move contacts along their lifecycle.

Rules (the decisions live on the Contact aggregate; this module feeds it):
- `deal-opened`: a deal is created for the contact (sales' DealCreated) → opportunity.
- `deal-won`: a deal of the contact is won (DealWon) → customer; the purchase time is
  kept (`last_purchase_at`, ContactPurchaseRecorded) and an at-risk flag is lifted.
- `at-risk`: a customer with no won deal for `CRM_AT_RISK_AFTER_DAYS` (365) is flagged
  (ContactFlaggedAtRisk).
- `churn`: a customer still at risk `CRM_CHURN_AFTER_DAYS` (90) after the flag → churned.
- `win-back`: a churned contact wins a new deal → customer again (`win_backs` counts it).
Automation only moves forward along subscriber → … → customer and never out of a stage
a person chose off that path (`domain.automation_may_move`); people may set any stage.

Two pieces run in the contacts worker:
- `LifecycleAutomation`, the projection `lifecycle` on the sales topic. It is not a read
  model: it changes contacts through the repository (optimistic concurrency, retried),
  and remembers each applied sales event by (deal stream, version) in
  `lifecycle_applied`, so a re-delivered event does nothing twice. Its `reset` keeps
  that memory: `crm rebuild contacts lifecycle` must not replay old decisions. Events
  are remembered one by one, not by a high-water version, so a late one (DealCreated
  after its DealWon) is still acted on, and the rules only move forward (a purchase
  older than the last one records nothing), so the outcome is that of in-order delivery.
- `LifecycleTimers`, a job scanning the `contacts` read model (integer epoch
  milliseconds, see docs/architecture.md) for the at-risk and churn rules every
  `CRM_CONTACTS_LIFECYCLE_INTERVAL_SECONDS`; each candidate is decided again on the
  aggregate's current state, so a stale read model cannot churn anyone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pymongo.collection import Collection

from crm_contacts import settings
from crm_contacts.records.derived import DerivedValues
from crm_contacts.records.domain import Contact
from crmkit import clock
from crmkit.config import topic_of
from crmkit.errors import NotFound
from crmkit.events import Metadata, RecordedEvent, epoch_ms, utcnow
from crmkit.periodic import PeriodicJob, log_when
from crmkit.repository import Repository
from crmkit.runtime import Runtime

log = logging.getLogger(__name__)

SALES_SERVICE = "sales"
ACTOR = "automation:lifecycle"
MAX_MERGE_HOPS = 10
# the contacts service's "now": real time plus the test-only offset of `crmkit.clock`
# (CRM_CLOCK_OFFSET_SECONDS, CRM_CLOCK_FILE); never moved in production
now = clock.now


def interval_seconds() -> float:
    return settings.current().lifecycle_interval


def decide(event: RecordedEvent) -> Callable[[Contact], Any] | None:
    """What a sales event asks of the contact it names, or None when it asks nothing."""
    deal_id = event.data.get("deal_id") or event.stream_id
    if event.type == "DealCreated":
        return lambda contact: contact.automate_stage("opportunity", "deal-opened", deal_id)
    if event.type == "DealWon" and event.data.get("at"):
        return lambda contact: contact.record_purchase(deal_id, event.data["at"])
    return None


class LifecycleAutomation:
    """Projection `lifecycle` over the sales topic: deal events → contact lifecycle changes."""

    name = "lifecycle"

    def __init__(self, contacts: Repository[Contact], applied: Collection, sales_topic: str) -> None:
        self.contacts = contacts
        self.applied = applied
        self.topics = [sales_topic]

    def handle(self, events: Sequence[RecordedEvent]) -> None:
        relevant = [e for e in events if e.service == SALES_SERVICE and decide(e) is not None]
        if not relevant:
            return
        keys = [self._key(e) for e in relevant]
        done = {doc["_id"] for doc in self.applied.find({"_id": {"$in": keys}}, {"_id": 1})}
        for event, key in zip(relevant, keys, strict=True):
            if key in done:
                continue
            self.apply(event)
            self.applied.update_one({"_id": key}, {"$set": {"at_ms": epoch_ms(utcnow())}}, upsert=True)
            done.add(key)

    def apply(self, event: RecordedEvent) -> None:
        """Decide on the contact (the survivor, if it was merged); unknown or erased contacts are skipped."""
        change = decide(event)
        contact_id = self._target(event.data.get("contact_id"))
        if change is None or contact_id is None:
            return
        meta = Metadata(actor=ACTOR, correlation_id=event.correlation_id, causation_id=event.id)
        # no If-Match: a concurrent write is retried on the fresh state; a Conflict after the
        # retries fails the batch, which the runner reads again
        self.contacts.change(contact_id, change, meta, attempts=5)

    def _target(self, contact_id: str | None) -> str | None:
        for _ in range(MAX_MERGE_HOPS):
            if not contact_id:
                return None
            try:
                contact = self.contacts.get(contact_id)
            except NotFound:
                log.warning("a sales event names an unknown contact", extra={"contact_id": contact_id})
                return None
            if contact.status == "active":
                return contact_id
            if contact.status != "merged":
                return None  # erased: nothing to move
            contact_id = contact.merged_into
        return None

    @staticmethod
    def _key(event: RecordedEvent) -> str:
        return f"{event.stream_id}:{event.version}"

    def reset(self) -> None:
        """Nothing to drop: decisions already taken are recorded on the contacts, and the
        applied-set must survive a rebuild so old deal events are not acted on again."""

    def ensure_indexes(self) -> None:
        """`_id` is the key; nothing else is queried."""


def apply_timer(
    contacts: Repository[Contact], contact_id: str, decision: Callable[[Contact], bool], meta: Metadata
) -> bool:
    """Whether `decision` moved the contact: the read model only proposes candidates, the aggregate
    (loaded fresh, retried on a conflict) decides; a contact gone meanwhile moves nothing."""
    moved: list[bool] = []
    try:
        contacts.change(contact_id, lambda c: moved.append(decision(c)), meta, attempts=5)
    except NotFound:
        return False
    return bool(moved and moved[-1])


class LifecycleTimers:
    """The at-risk and churn rules, applied to every customer the read model says is due."""

    def __init__(
        self, contacts: Repository[Contact], view: Collection, clock: Callable[[], datetime] = now, batch: int = 1000
    ) -> None:
        self.contacts = contacts
        self.view = view
        self.clock = clock
        self.batch = batch

    def step(self, moment: datetime | None = None) -> dict[str, int]:
        """One pass at `moment` (default: the clock); returns how many were flagged and churned."""
        moment = moment or self.clock()
        knobs = settings.current()
        flag_after, churn_wait = knobs.at_risk_after, knobs.churn_after
        now_ms = epoch_ms(moment)
        meta = Metadata(actor=ACTOR)
        flagged = self._each(
            {
                "status": "active",
                "lifecycle_stage": "customer",
                "at_risk": False,
                "last_purchase_ms": {"$lte": now_ms - int(flag_after.total_seconds() * 1000)},
            },
            lambda c: c.flag_at_risk(moment, flag_after),
            meta,
        )
        churned = self._each(
            {
                "status": "active",
                "lifecycle_stage": "customer",
                "at_risk": True,
                "at_risk_since_ms": {"$lte": now_ms - int(churn_wait.total_seconds() * 1000)},
            },
            lambda c: c.churn(moment, churn_wait),
            meta,
        )
        return {"flagged": flagged, "churned": churned}

    def _each(self, query: dict[str, Any], decision: Callable[[Contact], bool], meta: Metadata) -> int:
        return sum(
            apply_timer(self.contacts, doc["_id"], decision, meta)
            for doc in self.view.find(query, {"_id": 1}).limit(self.batch)
        )

    def job(self, service: str) -> PeriodicJob:
        """The worker's job: a pass every CRM_CONTACTS_LIFECYCLE_INTERVAL_SECONDS (crmkit.periodic)."""
        return PeriodicJob(
            service,
            "lifecycle_timers",
            self.step,
            interval_seconds,
            log_when("lifecycle timers moved contacts", lambda result: sum(result.values())),
        )


def projections(runtime: Runtime) -> list[Any]:
    """The contacts worker's projections over the sales topic: lifecycle rules and derived values."""
    contacts: Repository[Contact] = Repository(runtime.store, Contact, runtime.publish)
    return [
        LifecycleAutomation(contacts, runtime.db["lifecycle_applied"], topic_of("sales")),
        DerivedValues(runtime.db["contacts"], runtime.db["contact_derived"], topic_of("sales")),
    ]


def timers(runtime: Runtime) -> LifecycleTimers:
    return LifecycleTimers(Repository(runtime.store, Contact, runtime.publish), runtime.db["contacts"])
