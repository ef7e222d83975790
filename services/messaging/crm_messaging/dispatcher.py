"""The worker's send loop: due messages (and campaign launches) from the `schedule` collection.

Each pass claims a batch of due entries with a lease (one query, one update), then
decides on the latest state of every message in it — consent over gRPC
(`BatchCheckConsent`, never a projection), quiet hours in the contact's time zone, the
channel's and the campaign's rate, the campaign's status — renders the template in the
sandbox, and hands each message to its channel's provider with the message id as the
idempotency key.

Every provider call's outcome is appended (at the version loaded, so a second worker or a
redelivery can never record a second send) before the next call starts. A message is
*in flight* from the start of its provider call until that append: a worker killed at any
moment has at most one, and only that one can go out again (with the same idempotency
key) when another worker takes its lease over. The decisions that need no provider
(suppressed, failed before sending) are appended together at the end of the
pass; the publisher gets the pass's events in a few hand-overs (every second, and at
the end), not one by one.

One message that cannot be rendered, composed or handed over (a subject a variable broke,
an adapter's bug) fails alone with the reason (`MessageFailed`); the pass goes on. Only the
infrastructure failing (the database, contacts) stops a pass: what it had not recorded is
tried again later, and what it had recorded is not sent again.

The database and contacts see a handful of round trips per batch, plus one append per
provider call: a campaign to 10,000 people is about 50 passes. Time comes from `clock`,
so tests move it instead of waiting.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter, Histogram
from pymongo import UpdateMany, UpdateOne

from crm_messaging import providers, templates
from crm_messaging.commands import MessageDesk
from crm_messaging.domain import FINAL, Campaign, Message, Template, backoff, quiet_until, subject_problem
from crmkit.directory import Consent
from crmkit.errors import NotFound, Unavailable
from crmkit.events import Metadata, RecordedEvent, epoch_ms, new_id, rfc3339
from crmkit.metrics import LATENCY_BUCKETS
from crmkit.repository import Repository
from crmkit.store import Store

log = logging.getLogger(__name__)
TICKET_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,127}$")  # what the service desk reads back from a tag

LEASE = timedelta(seconds=60)
PAUSED_RECHECK = timedelta(seconds=5)
CAMPAIGN_RECHECK = timedelta(seconds=5)
UNBORN_RECHECK = timedelta(seconds=5)  # an entry whose message is not stored yet
UNBORN_GRACE = timedelta(minutes=10)  # ...is given up after this: its writer died before the append
PUBLISH_EVERY = 1.0  # seconds a pass holds appended events back at most (the outbox sweeper takes them after 2 s)

OUTCOMES = Counter(
    "crm_messages_dispatched_total",
    "What the dispatcher decided, by channel and outcome (sent, suppressed, failed, retry, deferred).",
    ["service", "channel", "outcome"],
)
PROVIDER_LATENCY = Histogram(
    "crm_provider_send_duration_seconds",
    "Time a provider took to accept (or refuse) one message.",
    ["service", "provider"],
    buckets=LATENCY_BUCKETS,
)


class Unsendable(Exception):
    """This message cannot go out as it is (its template is gone or broken, its subject is not
    one line): it fails at once, with this as the reason."""


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
    """One batch's work: provider outcomes are appended as they come, the other decisions
    and the schedule are written together at the end."""

    now: datetime
    send_until: float  # time.monotonic() after which no more provider calls start (the lease must outlast them)
    claim: str  # this pass's lease on its entries: schedule writes touch only entries it still holds
    store: InitVar[Store]
    recorder: Repository[Message] = field(init=False)  # appends; their events wait in `published`
    published: list[RecordedEvent] = field(default_factory=list)  # for the publisher, in a few hand-overs
    held_since: float = 0.0  # time.monotonic() of the oldest event in `published`
    decided: list[Message] = field(default_factory=list)  # decided without a provider call: appended at the end
    later: dict[str, datetime] = field(default_factory=dict)  # schedule entry → when to look again
    done: list[str] = field(default_factory=list)  # entries with nothing left to do
    sent_via: dict[str, tuple[str, str]] = field(default_factory=dict)  # message → (provider, provider's id)
    retry_at: dict[str, datetime] = field(default_factory=dict)  # decided messages that try again later
    campaigns: dict[str, Campaign] = field(default_factory=dict)  # of the batch's messages
    provider_calls: int = 0
    overtaken: bool = False  # another worker recorded one of our messages: the batch is theirs now

    def __post_init__(self, store: Store) -> None:
        self.recorder = Repository(store, Message, self.hold)

    def hold(self, events: list[RecordedEvent]) -> None:
        if not self.published:
            self.held_since = time.monotonic()
        self.published.extend(events)

    def record(self, message: Message, outcome: str) -> None:
        """`message` has decided without calling a provider (an event pending): append it with the batch."""
        self.decided.append(message)
        OUTCOMES.labels("messaging", message.channel, outcome).inc()

    def settle(self, message: Message) -> None:
        """Its decision is stored: the entry is done, or due again at its retry time."""
        if message.id in self.retry_at and message.status not in FINAL:
            self.later[message.id] = self.retry_at[message.id]
        else:
            self.done.append(message.id)

    def defer(self, message: Message, until: datetime) -> None:
        self.later[message.id] = until
        OUTCOMES.labels("messaging", message.channel, "deferred").inc()


class Dispatcher:
    def __init__(
        self,
        desk: MessageDesk,
        send_with: dict[str, providers.Provider] | None = None,
        batch: int = 500,
        send_budget: timedelta = LEASE / 2,
    ) -> None:
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
        claim, entries = self._claim_due(now)
        for entry in (e for e in entries if e["kind"] == "campaign"):
            try:
                self._campaign(entry, now)
            except Exception:
                log.exception("campaign pass failed; it will be tried again", extra={"campaign_id": entry["_id"]})
                self._write_schedule([], {entry["_id"]: now + timedelta(seconds=self.config.backoff_base)})
        messages = [e for e in entries if e["kind"] == "message"]
        if messages:
            try:
                self._messages(messages, claim, now)
            except Exception:  # the database or contacts failed: nothing recorded is sent again
                log.exception(
                    "a send batch stopped; its unrecorded messages will be tried again", extra={"count": len(messages)}
                )
                retry = now + timedelta(seconds=self.config.backoff_base)
                self._write_schedule([], {entry["_id"]: retry for entry in messages}, claim)
        return len(entries)

    # --- the schedule -------------------------------------------------------------------

    def _claim_due(self, now: datetime) -> tuple[str, list[dict[str, Any]]]:
        """Lease a batch of due entries: one query, one update, and one more read only when
        another worker took some of them in between. Returns the claim and the entries."""
        now_ms, claim = epoch_ms(now), new_id()
        due = list(
            self.desk.schedule.find({"state": "pending", "due_ms": {"$lte": now_ms}, "lease_ms": {"$lte": now_ms}})
            .sort("due_ms", 1)
            .limit(self.batch)
        )
        if not due:
            return claim, []
        ids = [entry["_id"] for entry in due]
        taken = self.desk.schedule.update_many(
            {"_id": {"$in": ids}, "state": "pending", "lease_ms": {"$lte": now_ms}},
            {"$set": {"lease_ms": epoch_ms(now + LEASE), "claim": claim}},
        )
        if taken.modified_count == len(due):
            return claim, due
        return claim, list(self.desk.schedule.find({"_id": {"$in": ids}, "claim": claim}))

    def _write_schedule(
        self,
        done: Sequence[str],
        later: dict[str, datetime],
        claim: str | None = None,
        sent_via: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        """Entries done or due again, and the provider ids receipts are looked up by, in one
        bulk write. With `claim`, only entries still under that lease: a worker that stalled
        past its lease must not free entries another worker is sending."""
        held: dict[str, Any] = {"claim": claim} if claim else {}
        writes: list[Any] = [
            UpdateOne({"_id": mid, **held}, {"$set": {"provider": name, "provider_message_id": pid}})
            for mid, (name, pid) in (sent_via or {}).items()
        ]
        writes += [
            UpdateOne({"_id": entry_id, **held}, {"$set": {"due_ms": epoch_ms(due), "lease_ms": 0}})
            for entry_id, due in later.items()
        ]
        if done:
            writes.append(UpdateMany({"_id": {"$in": list(done)}, **held}, {"$set": {"state": "done", "lease_ms": 0}}))
        if writes:
            self.desk.schedule.bulk_write(writes, ordered=False)

    # --- a batch of messages ------------------------------------------------------------

    def _messages(self, entries: list[dict[str, Any]], claim: str, now: datetime) -> None:
        work = Pass(now, time.monotonic() + self.send_budget.total_seconds(), claim, self.desk.messages.store)
        try:
            loaded = self.desk.messages.get_many([entry["_id"] for entry in entries])
            queued = []
            for entry in entries:
                message = loaded.get(entry["_id"])
                if message is None:
                    self._unborn(entry, work)
                elif message.status == "queued":
                    queued.append(message)
                else:  # already decided (a redelivery, a second worker, a pass that died after its append)
                    work.done.append(message.id)
                    if message.provider_message_id and "provider_message_id" not in entry:
                        work.sent_via[message.id] = (message.provider or "", message.provider_message_id)
            self._send(self._with_consent(self._campaigns_allow(queued, work), work), work)
            self._commit(work)
        finally:  # what was appended is published, even when the pass stopped half-way
            self._publish(work, at_once=True)

    def _publish(self, work: Pass, at_once: bool = False) -> None:
        """Hand the events appended so far to the publisher: at the end of the pass, and
        during it every `PUBLISH_EVERY`, before the outbox sweeper would send them too."""
        if work.published and (at_once or time.monotonic() - work.held_since >= PUBLISH_EVERY):
            self.desk.runtime.publish(list(work.published))
            work.published.clear()

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
                work.record(message, self._transient(message, str(exc), work))
            return []
        granted = []
        for message, consent in zip(messages, answers, strict=True):
            if consent is None:
                message.suppress("contact_not_found", consent_proof(None, message, work.now))
                work.record(message, "suppressed")
            elif not consent.granted:
                reason = consent.reason or "no_consent"
                message.suppress(reason, consent_proof(consent, message, work.now))
                work.record(message, "suppressed")
            else:
                granted.append((message, consent))
        return self._not_suppressed(granted, work)

    def _not_suppressed(self, granted: list[tuple[Message, Consent]], work: Pass) -> list[tuple[Message, Consent]]:
        """Consent given, but the address bounced or was complained about (suppressions.py): suppressed, with
        the consent proof, reason `address_bounced` / `address_complained`. One event-store read per batch."""
        if not granted:
            return granted
        reasons = self.desk.suppressions.reasons(
            [
                ((message.contact_id, consent.contact_id), message.channel, consent.address)
                for message, consent in granted
            ]
        )
        sendable = []
        for (message, consent), reason in zip(granted, reasons, strict=True):
            if reason is None:
                sendable.append((message, consent))
            else:
                message.suppress(f"address_{reason}", consent_proof(consent, message, work.now))
                work.record(message, "suppressed")
        return sendable

    def _send(self, ready: list[tuple[Message, Consent]], work: Pass) -> None:
        contacts = self.desk.contact_variables_many([consent.contact_id for _, consent in ready])
        template_ids = list({message.template_id for message, _ in ready if message.template_id})
        loaded = self.desk.templates.get_many(template_ids) if template_ids else {}
        for message, consent in ready:
            if work.overtaken:
                return  # another worker holds these entries now: their lease, their sends
            try:
                outgoing = self._prepare(message, consent, contacts[consent.contact_id], loaded, work)
            except Unsendable as exc:
                work.record(message, self._fail(message, str(exc), work))
                continue
            except Exception as exc:  # a bug must not stop (or repeat) the pass: this message fails alone
                log.exception("a message could not be composed; it fails", extra={"message_id": message.id})
                work.record(message, self._fail(message, f"could not be composed: {exc.__class__.__name__}", work))
                continue
            if outgoing is not None:
                self._deliver(message, outgoing, consent, work)

    def _prepare(
        self, message: Message, consent: Consent, contact: dict[str, Any], loaded: dict[str, Template], work: Pass
    ) -> providers.Outgoing | None:
        """The message rendered, ready for its provider; None when it waits (deferred)."""
        quiet = quiet_until(work.now, contact.get("time_zone"), self.config.window(message.channel))
        if quiet is not None:
            work.defer(message, quiet)
            return None
        if self.stopping.is_set() or (work.provider_calls and time.monotonic() > work.send_until):
            # slow providers, or shutting down: hand the rest back, due at once, and record what was sent
            work.defer(message, work.now)
            return None
        wait = self._rate_wait(message, work)
        if wait:
            work.defer(message, work.now + wait)
            return None
        return self._render(message, consent, contact, loaded)

    def _rate_wait(self, message: Message, work: Pass) -> timedelta:
        wait = self.channel_buckets.setdefault(message.channel, Bucket(0)).wait(work.now)
        if message.campaign_id and not wait:
            campaign = work.campaigns.get(message.campaign_id)
            rate = campaign.throttle_per_minute if campaign is not None else 0
            wait = self.campaign_buckets.setdefault(message.campaign_id, Bucket(rate)).wait(work.now)
        return wait

    def _deliver(self, message: Message, outgoing: providers.Outgoing, consent: Consent, work: Pass) -> None:
        """One provider call, its outcome appended before anything else happens; a send
        records the consent decision it went out on."""
        provider = self.providers[message.channel]
        work.provider_calls += 1
        started = time.perf_counter()
        try:
            provider_id = provider.send(outgoing)
        except providers.Transient as exc:
            outcome = self._transient(message, str(exc), work)
        except providers.Permanent as exc:
            outcome = self._fail(message, str(exc), work)
        except Exception as exc:  # an adapter's bug: it may have gone out, so it is not tried again
            log.exception(
                "a provider failed unexpectedly; the message fails",
                extra={"message_id": message.id, "provider": provider.name},
            )
            outcome = self._fail(message, f"{provider.name} failed: {exc.__class__.__name__}", work)
        else:
            work.sent_via[message.id] = (provider.name, provider_id)
            message.sent(
                provider.name,
                provider_id,
                outgoing.to,
                outgoing.subject,
                outgoing.body,
                rfc3339(work.now),
                consent_proof(consent, message, work.now),
            )
            outcome = "sent"
        finally:
            PROVIDER_LATENCY.labels("messaging", provider.name).observe(time.perf_counter() - started)
        self._record_now(message, outcome, work)

    def _record_now(self, message: Message, outcome: str, work: Pass) -> None:
        """Append one provider call's outcome: after this the message is no longer in flight."""
        OUTCOMES.labels("messaging", message.channel, outcome).inc()
        if work.recorder.save_many([message], _meta):
            work.overtaken = True  # a worker that took our lease over recorded it first
            work.sent_via.pop(message.id, None)
            return
        work.settle(message)
        self._publish(work)

    def _render(
        self, message: Message, consent: Consent, contact: dict[str, Any], loaded: dict[str, Template]
    ) -> providers.Outgoing:
        unsubscribe_url = None
        context = {**contact, "survey_url": self.config.survey_url}
        if message.category == "marketing":
            unsubscribe_url = self.desk.unsubscribe_url(consent.contact_id, message.channel)
            context["unsubscribe_url"] = unsubscribe_url
        context.update(message.variables)
        if message.template_id:
            template = loaded.get(message.template_id)
            if template is None:
                raise Unsendable(f"template: no template with id {message.template_id}")
            _, variant = template.variant(contact.get("locale"))
            subject_source, body_source = variant.get("subject"), variant["body"]
        else:
            subject_source, body_source = message.subject, message.body or ""
        try:
            limits = self.config.render_limits  # a cap broken fails this message alone, naming the cap
            subject = templates.render(subject_source, context, limits, "subject") if subject_source else None
            body = templates.render(body_source, context, limits, "body")
        except templates.TemplateRejected as exc:
            raise Unsendable(f"template: {exc}") from None
        if subject and (problem := subject_problem(subject)):  # a variable brought a line break in
            raise Unsendable(f"subject: as rendered, {problem}")
        if unsubscribe_url and message.channel == "email" and unsubscribe_url not in body:
            body = f"{body.rstrip()}\n\n--\nUnsubscribe: {unsubscribe_url}\n"
        thread = _ticket_of(message)
        if thread and subject and f"[#{thread}]" not in subject:  # the tag a reply keeps: its ticket gets it
            subject = f"{subject} [#{thread}]"
        return providers.Outgoing(
            message.id, message.channel, consent.address or "", subject, body, unsubscribe_url, thread
        )

    def _fail(self, message: Message, reason: str, work: Pass) -> str:
        message.fail(reason, rfc3339(work.now))
        return "failed"

    def _transient(self, message: Message, error: str, work: Pass) -> str:
        """Retry later with back-off, or fail at the attempt cap; returns the outcome."""
        attempt = message.attempts + 1
        if attempt >= self.config.max_attempts:
            return self._fail(message, f"gave up after {attempt} attempts: {error}", work)
        retry_at = work.now + backoff(attempt, self.config.backoff_base, self.config.backoff_cap)
        message.retry_later(error, rfc3339(retry_at))
        work.retry_at[message.id] = retry_at
        return "retry"

    def _commit(self, work: Pass) -> None:
        """The decisions taken without a provider in one bulk append, then the schedule (with
        the provider ids receipts are matched by) in one bulk write. A message that lost a
        race to another writer is left to its lease: the next pass looks at its fresh state."""
        lost = work.recorder.save_many(work.decided, _meta) if work.decided else set()
        if lost:
            fresh = self.desk.messages.get_many(list(lost))
            work.done += [mid for mid, message in fresh.items() if message.status != "queued"]
        for message in work.decided:
            if message.id not in lost:
                work.settle(message)
        self._write_schedule(work.done, work.later, work.claim, work.sent_via)

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
        elif (
            campaign.status == "running"
            and self.desk.schedule.find_one(
                {"campaign_id": campaign.id, "kind": "message", "state": "pending"}, {"_id": 1}
            )
            is None
        ):
            self.desk.campaigns.change(campaign.id, lambda c: c.complete(rfc3339(now)), meta)
            self._write_schedule([entry["_id"]], {})
            return
        self._write_schedule([], {entry["_id"]: now + CAMPAIGN_RECHECK})


def consent_proof(consent: Consent | None, message: Message, checked_at: datetime) -> dict[str, Any]:
    """The consent decision a send or suppression relied on, as MessageSent/MessageSuppressed
    record it: what contacts answered at `checked_at` (None: no such contact), down to the
    ContactConsentChanged event, so an audit can show why each message went out or did not."""
    if consent is None:
        return {
            "contact_id": message.contact_id,
            "granted": False,
            "reason": "contact_not_found",
            "status": None,
            "legal_basis": None,
            "source": None,
            "decided_at": None,
            "event_id": None,
            "event_version": None,
            "checked_at": rfc3339(checked_at),
        }
    return {
        "contact_id": consent.contact_id,
        "granted": consent.granted,
        "reason": consent.reason or None,
        "status": consent.status,
        "legal_basis": consent.legal_basis,
        "source": consent.source,
        "decided_at": consent.decided_at,
        "event_id": consent.event_id,
        "event_version": consent.event_version,
        "checked_at": rfc3339(checked_at),
    }


def _ticket_of(message: Message) -> str | None:
    """The service desk ticket an email is about (a trigger on a ticket event passes its `ticket_id`): its
    subject carries the `[#<ticket id>]` tag and its Message-ID a token naming it, so the customer's reply
    becomes a comment on that ticket (docs/service-desk.md, "Tickets from mail and SMS")."""
    ticket_id = message.variables.get("ticket_id")
    if message.channel != "email" or not isinstance(ticket_id, str) or not TICKET_REF.match(ticket_id):
        return None
    return ticket_id


def _meta(message: Message) -> Metadata:
    return Metadata(actor="service:messaging-worker", correlation_id=message.id, causation_id=message.id)
