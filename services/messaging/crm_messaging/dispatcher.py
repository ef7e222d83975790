"""The worker's send loop: due messages (and campaign launches) from the `schedule` collection.

Each pass claims a batch of due entries with a lease (one query, one update), then
decides on the latest state of every message in it — consent over gRPC
(`BatchCheckConsent`, never a projection), quiet hours in the contact's time zone, the
channel's and the campaign's rate, the campaign's status — renders the template in the
sandbox, hands each message to its channel's provider with the message id as the
idempotency key, and records the outcomes in one bulk append at the versions loaded
(so a second worker or a redelivery can never record a second send). The database and
contacts see a handful of round trips per batch, not per message: a campaign to 10,000
people is about 50 passes. Time comes from `clock`, so tests move it instead of waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter, Histogram
from pymongo import UpdateMany, UpdateOne

from crm_messaging import providers, templates
from crm_messaging.commands import MessageDesk
from crm_messaging.domain import FINAL, Campaign, Message, Template, backoff, quiet_until
from crmkit.directory import Consent
from crmkit.errors import NotFound, Unavailable
from crmkit.events import Metadata, new_id, rfc3339
from crmkit.eventstore import epoch_ms
from crmkit.metrics import LATENCY_BUCKETS

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
PAUSED_RECHECK = timedelta(seconds=5)
CAMPAIGN_RECHECK = timedelta(seconds=5)
UNBORN_RECHECK = timedelta(seconds=5)  # an entry whose message is not stored yet
UNBORN_GRACE = timedelta(minutes=10)  # ...is given up after this: its writer died before the append

OUTCOMES = Counter("crm_messages_dispatched_total", "What the dispatcher decided, by channel and outcome "
                   "(sent, suppressed, failed, retry, deferred).", ["service", "channel", "outcome"])
PROVIDER_LATENCY = Histogram("crm_provider_send_duration_seconds", "Time a provider took to accept (or refuse) "
                             "one message.", ["service", "provider"], buckets=LATENCY_BUCKETS)


class Bucket:
    """A token bucket on the dispatcher's clock: `per_minute` sends, bursts up to one second's worth.

    A send refused now is given the next free slot after the ones already handed out, so
    a backlog comes back spread at the rate instead of all at once.
    """

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.last: datetime | None = None
        self.next_slot: datetime | None = None

    def wait(self, now: datetime) -> timedelta:
        """Zero (and a token taken) when a send may go now, else how long until its slot."""
        if self.rate <= 0:
            return timedelta(0)
        if self.last is not None and now < self.last:  # the clock was set back: start afresh
            self.tokens, self.next_slot = self.capacity, None
        elif self.last is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.last).total_seconds() * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return timedelta(0)
        slot = now + timedelta(seconds=(1 - self.tokens) / self.rate)
        if self.next_slot is not None and self.next_slot > slot:
            slot = self.next_slot
        self.next_slot = slot + timedelta(seconds=1 / self.rate)
        return slot - now


@dataclass
class Pass:
    """One batch's decisions, written together once the providers have been called."""

    now: datetime
    send_until: float  # time.monotonic() after which no more provider calls start (the lease must outlast them)
    decided: list[Message] = field(default_factory=list)  # messages with a new event to append
    later: dict[str, datetime] = field(default_factory=dict)  # schedule entry → when to look again
    done: list[str] = field(default_factory=list)  # entries with nothing left to do
    sent_via: dict[str, tuple[str, str]] = field(default_factory=dict)  # message → (provider, provider's id)
    retry_at: dict[str, datetime] = field(default_factory=dict)  # decided messages that try again later
    campaigns: dict[str, Campaign] = field(default_factory=dict)  # of the batch's messages
    provider_calls: int = 0

    def record(self, message: Message, outcome: str) -> None:
        """`message` has decided (an event pending): append it with the batch."""
        self.decided.append(message)
        OUTCOMES.labels("messaging", message.channel, outcome).inc()

    def defer(self, message: Message, until: datetime) -> None:
        self.later[message.id] = until
        OUTCOMES.labels("messaging", message.channel, "deferred").inc()


class Dispatcher:
    def __init__(self, desk: MessageDesk, send_with: dict[str, providers.Provider] | None = None,
                 batch: int = 500, send_budget: timedelta = LEASE / 2) -> None:
        self.desk = desk
        self.config = desk.config
        self.providers = send_with or self.config.providers()
        self.batch = batch
        self.send_budget = send_budget  # provider calls a pass may start after its claim (slow providers)
        self.stopping = threading.Event()  # set on shutdown: the pass in hand hands back what it has not sent
        self.channel_buckets = {ch: Bucket(rate) for ch, rate in self.config.rate_per_minute.items()}
        self.campaign_buckets: dict[str, Bucket] = {}

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.desk.clock

    def run(self, stop: threading.Event, idle: float = 0.2) -> None:
        self.stopping = stop
        while not stop.is_set():
            try:
                worked = self.run_once()
            except Exception:
                log.exception("dispatch pass failed; retrying")
                worked = 0
            if not worked:
                self.close_connections()
                stop.wait(idle)
        self.close_connections()

    def close_connections(self) -> None:
        """Providers may keep a connection open between sends of a busy period; idle, let it go."""
        for provider in self.providers.values():
            provider.close()

    def run_once(self) -> int:
        """Work on the entries due now (one batch); returns how many were handled."""
        now = self.clock()
        entries = self._claim_due(now)
        for entry in (e for e in entries if e["kind"] == "campaign"):
            try:
                self._campaign(entry, now)
            except Exception:
                log.exception("campaign pass failed; it will be tried again", extra={"campaign_id": entry["_id"]})
                self._write_schedule([], {entry["_id"]: now + timedelta(seconds=self.config.backoff_base)})
        messages = [e for e in entries if e["kind"] == "message"]
        if messages:
            try:
                self._messages(messages, now)
            except Exception:
                log.exception("a send batch failed; its messages will be tried again", extra={
                    "count": len(messages)})
                retry = now + timedelta(seconds=self.config.backoff_base)
                self._write_schedule([], {entry["_id"]: retry for entry in messages})
        return len(entries)

    # --- the schedule -------------------------------------------------------------------

    def _claim_due(self, now: datetime) -> list[dict[str, Any]]:
        """Lease a batch of due entries: one query, one update, and one more read only when
        another worker took some of them in between."""
        now_ms = epoch_ms(now)
        due = list(self.desk.schedule.find({"state": "pending", "due_ms": {"$lte": now_ms},
                                            "lease_ms": {"$lte": now_ms}}).sort("due_ms", 1).limit(self.batch))
        if not due:
            return []
        claim, ids = new_id(), [entry["_id"] for entry in due]
        taken = self.desk.schedule.update_many(
            {"_id": {"$in": ids}, "state": "pending", "lease_ms": {"$lte": now_ms}},
            {"$set": {"lease_ms": epoch_ms(now + LEASE), "claim": claim}})
        if taken.modified_count == len(due):
            return due
        return list(self.desk.schedule.find({"_id": {"$in": ids}, "claim": claim}))

    def _write_schedule(self, done: Sequence[str], later: dict[str, datetime]) -> None:
        writes: list[Any] = [UpdateOne({"_id": entry_id}, {"$set": {"due_ms": epoch_ms(due), "lease_ms": 0}})
                             for entry_id, due in later.items()]
        if done:
            writes.append(UpdateMany({"_id": {"$in": list(done)}}, {"$set": {"state": "done", "lease_ms": 0}}))
        if writes:
            self.desk.schedule.bulk_write(writes, ordered=False)

    # --- a batch of messages ------------------------------------------------------------

    def _messages(self, entries: list[dict[str, Any]], now: datetime) -> None:
        work = Pass(now, time.monotonic() + self.send_budget.total_seconds())
        loaded = self.desk.messages.get_many([entry["_id"] for entry in entries])
        for entry in entries:
            if entry["_id"] not in loaded:
                self._unborn(entry, work)
        queued = []
        for message in loaded.values():
            if message.status == "queued":
                queued.append(message)
            else:
                work.done.append(message.id)  # already decided (a redelivery, a second worker)
        self._send(self._with_consent(self._campaigns_allow(queued, work), work), work)
        self._commit(work)

    def _unborn(self, entry: dict[str, Any], work: Pass) -> None:
        """An entry whose message has no event yet: its writer is between the two writes
        (`MessageDesk.schedule_messages`), or died there. Look again shortly; after
        `UNBORN_GRACE`, there is nothing to send."""
        if epoch_ms(work.now) - entry.get("created_ms", 0) < UNBORN_GRACE.total_seconds() * 1000:
            work.later[entry["_id"]] = work.now + UNBORN_RECHECK
        else:
            work.done.append(entry["_id"])

    def _campaigns_allow(self, messages: list[Message], work: Pass) -> list[Message]:
        """Messages of a cancelled campaign are suppressed; of a paused one, held."""
        work.campaigns = self.desk.campaigns.get_many(list({m.campaign_id for m in messages if m.campaign_id}))
        allowed = []
        for message in messages:
            campaign = work.campaigns.get(message.campaign_id or "")
            if campaign is not None and campaign.status == "cancelled":
                message.suppress("campaign_cancelled")
                work.record(message, "suppressed")
            elif campaign is not None and campaign.status == "paused":
                work.defer(message, work.now + PAUSED_RECHECK)
            else:
                allowed.append(message)
        return allowed

    def _with_consent(self, messages: list[Message], work: Pass) -> list[tuple[Message, Consent]]:
        """Consent and address from contacts at send time, for the whole batch in one call."""
        if not messages:
            return []
        try:
            answers = self.desk.directory.consents([(m.contact_id, m.channel) for m in messages])
        except (Unavailable, NotFound) as exc:
            for message in messages:
                self._transient(message, str(exc), work)
            return []
        granted = []
        for message, consent in zip(messages, answers, strict=True):
            if consent is None:
                message.suppress("contact_not_found")
                work.record(message, "suppressed")
            elif not consent.granted:
                reason = consent.reason or "no_consent"
                message.suppress(reason)
                work.record(message, "suppressed")
            else:
                granted.append((message, consent))
        return granted

    def _send(self, ready: list[tuple[Message, Consent]], work: Pass) -> None:
        contacts = self.desk.contact_variables_many([consent.contact_id for _, consent in ready])
        loaded: dict[str, Template | None] = {}
        for message, consent in ready:
            contact = contacts[consent.contact_id]
            quiet = quiet_until(work.now, contact.get("time_zone"), self.config.window(message.channel))
            if quiet is not None:
                work.defer(message, quiet)
                continue
            if self.stopping.is_set() or (work.provider_calls and time.monotonic() > work.send_until):
                # slow providers, or shutting down: hand the rest back, due at once, and record what was sent
                work.defer(message, work.now)
                continue
            wait = self._rate_wait(message, work)
            if wait:
                work.defer(message, work.now + wait)
                continue
            try:
                outgoing = self._render(message, consent, contact, loaded)
            except (templates.TemplateRejected, NotFound) as exc:
                reason = f"template: {exc}"
                message.fail(reason, rfc3339(work.now))
                work.record(message, "failed")
                continue
            self._deliver(message, outgoing, work)

    def _rate_wait(self, message: Message, work: Pass) -> timedelta:
        wait = self.channel_buckets.setdefault(message.channel, Bucket(0)).wait(work.now)
        if message.campaign_id and not wait:
            campaign = work.campaigns.get(message.campaign_id)
            rate = campaign.throttle_per_minute if campaign is not None else 0
            wait = self.campaign_buckets.setdefault(message.campaign_id, Bucket(rate)).wait(work.now)
        return wait

    def _deliver(self, message: Message, outgoing: providers.Outgoing, work: Pass) -> None:
        provider = self.providers[message.channel]
        work.provider_calls += 1
        started = time.perf_counter()
        try:
            provider_id = provider.send(outgoing)
        except providers.Transient as exc:
            self._transient(message, str(exc), work)
            return
        except providers.Permanent as exc:
            reason = str(exc)
            message.fail(reason, rfc3339(work.now))
            work.record(message, "failed")
            return
        finally:
            PROVIDER_LATENCY.labels("messaging", provider.name).observe(time.perf_counter() - started)
        work.sent_via[message.id] = (provider.name, provider_id)
        message.sent(provider.name, provider_id, outgoing.to, outgoing.subject, outgoing.body, rfc3339(work.now))
        work.record(message, "sent")

    def _render(self, message: Message, consent: Consent, contact: dict[str, Any],
                loaded: dict[str, Template | None]) -> providers.Outgoing:
        unsubscribe_url = None
        context = {**contact, "survey_url": self.config.survey_url}
        if message.category == "marketing":
            unsubscribe_url = self.desk.unsubscribe_url(consent.contact_id, message.channel)
            context["unsubscribe_url"] = unsubscribe_url
        context.update(message.variables)
        if message.template_id:
            if message.template_id not in loaded:
                loaded.update({message.template_id: None, **self.desk.templates.get_many([message.template_id])})
            template = loaded[message.template_id]
            if template is None:
                raise NotFound(f"no template with id {message.template_id}")
            _, variant = template.variant(contact.get("locale"))
            subject_source, body_source = variant.get("subject"), variant["body"]
        else:
            subject_source, body_source = message.subject, message.body or ""
        subject = templates.render(subject_source, context) if subject_source else None
        body = templates.render(body_source, context)
        if unsubscribe_url and message.channel == "email" and unsubscribe_url not in body:
            body = f"{body.rstrip()}\n\n--\nUnsubscribe: {unsubscribe_url}\n"
        return providers.Outgoing(message.id, message.channel, consent.address or "", subject, body, unsubscribe_url)

    def _transient(self, message: Message, error: str, work: Pass) -> None:
        attempt = message.attempts + 1
        if attempt >= self.config.max_attempts:
            reason = f"gave up after {attempt} attempts: {error}"
            message.fail(reason, rfc3339(work.now))
            work.record(message, "failed")
            return
        retry_at = work.now + backoff(attempt, self.config.backoff_base, self.config.backoff_cap)
        message.retry_later(error, rfc3339(retry_at))
        work.record(message, "retry")
        work.retry_at[message.id] = retry_at

    def _commit(self, work: Pass) -> None:
        """Provider ids first (a receipt may arrive at once), then the decisions in one bulk
        append, then the schedule. A message that lost a race to another writer is left
        to its lease: the next pass looks at its fresh state."""
        if work.sent_via:
            self.desk.schedule.bulk_write([
                UpdateOne({"_id": mid}, {"$set": {"provider": name, "provider_message_id": provider_id}})
                for mid, (name, provider_id) in work.sent_via.items()], ordered=False)
        lost = self.desk.messages.save_many(work.decided, _meta) if work.decided else set()
        if lost:
            fresh = self.desk.messages.get_many(list(lost))
            work.done += [mid for mid, message in fresh.items() if message.status != "queued"]
        for message in work.decided:
            if message.id in lost:
                continue
            if message.id in work.retry_at and message.status not in FINAL:
                work.later[message.id] = work.retry_at[message.id]
            else:
                work.done.append(message.id)
        self._write_schedule(work.done, work.later)

    # --- campaigns --------------------------------------------------------------------

    def _campaign(self, entry: dict[str, Any], now: datetime) -> None:
        campaign = self.desk.campaigns.get(entry["campaign_id"])
        meta = Metadata(actor="service:messaging-worker", correlation_id=campaign.id, causation_id=campaign.id)
        if campaign.status in ("cancelled", "completed"):
            self._write_schedule([entry["_id"]], {})
            return
        if campaign.targeted is None:
            try:
                count = self.desk.expand_campaign(campaign, meta)
            except (Unavailable, NotFound) as exc:
                log.warning("campaign expansion deferred", extra={"error": str(exc)})
                self._write_schedule([], {entry["_id"]: now + CAMPAIGN_RECHECK})
                return
            self.desk.campaigns.change(campaign.id, lambda c: c.targeted_members(count), meta)
        elif campaign.status == "running" and self.desk.schedule.find_one(
                {"campaign_id": campaign.id, "kind": "message", "state": "pending"}, {"_id": 1}) is None:
            self.desk.campaigns.change(campaign.id, lambda c: c.complete(rfc3339(now)), meta)
            self._write_schedule([entry["_id"]], {})
            return
        self._write_schedule([], {entry["_id"]: now + CAMPAIGN_RECHECK})


def _meta(message: Message) -> Metadata:
    return Metadata(actor="service:messaging-worker", correlation_id=message.id, causation_id=message.id)

