"""The worker's send loop: due messages (and campaign launches) from the `schedule` collection.

For each due message: claim it with a lease, then decide on the latest state —
consent over gRPC (`CheckConsent`, never a projection), quiet hours in the contact's
time zone, the channel's and the campaign's rate, the campaign's status — render the
template in the sandbox, hand it to the channel's provider with the message id as the
idempotency key, and record the outcome on the message (expected-version append, so a
second worker or a redelivery can never record a second send). Time comes from `clock`,
so tests move it instead of waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from crm_messaging import providers, templates
from crm_messaging.commands import MessageDesk
from crm_messaging.domain import FINAL, Campaign, Message, backoff, quiet_until
from crmkit.errors import Conflict, NotFound, Unavailable
from crmkit.events import Metadata, new_id, rfc3339
from crmkit.eventstore import epoch_ms

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
PAUSED_RECHECK = timedelta(seconds=5)
CAMPAIGN_RECHECK = timedelta(seconds=5)


class Bucket:
    """A token bucket on the dispatcher's clock: `per_minute` sends, bursts up to one second's worth."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.last: datetime | None = None

    def wait(self, now: datetime) -> timedelta:
        """Zero (and a token taken) when a send may go now, else how long until one may."""
        if self.rate <= 0:
            return timedelta(0)
        if self.last is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.last).total_seconds() * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return timedelta(0)
        return timedelta(seconds=(1 - self.tokens) / self.rate)


class Dispatcher:
    def __init__(self, desk: MessageDesk, send_with: dict[str, providers.Provider] | None = None,
                 batch: int = 200) -> None:
        self.desk = desk
        self.config = desk.config
        self.providers = send_with or self.config.providers()
        self.batch = batch
        self.owner = new_id()
        self.channel_buckets = {ch: Bucket(rate) for ch, rate in self.config.rate_per_minute.items()}
        self.campaign_buckets: dict[str, Bucket] = {}

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.desk.clock

    def run(self, stop: threading.Event, idle: float = 0.2) -> None:
        while not stop.is_set():
            try:
                worked = self.run_once()
            except Exception:
                log.exception("dispatch pass failed; retrying")
                worked = 0
            if not worked:
                stop.wait(idle)

    def run_once(self) -> int:
        """Work on every entry due now (one batch); returns how many were handled."""
        now = self.clock()
        due = list(self.desk.schedule.find({"state": "pending", "due_ms": {"$lte": epoch_ms(now)}})
                   .sort("due_ms", 1).limit(self.batch))
        campaigns: dict[str, Campaign | None] = {}
        handled = 0
        for entry in due:
            if not self._claim(entry, now):
                continue
            handled += 1
            try:
                if entry["kind"] == "campaign":
                    self._campaign(entry, now)
                else:
                    self._message(entry, now, campaigns)
            except Exception:
                log.exception("dispatching failed; it will be tried again", extra={"message_id": entry["_id"]})
                self._reschedule(entry["_id"], now + timedelta(seconds=self.config.backoff_base))
        return handled

    def _claim(self, entry: dict[str, Any], now: datetime) -> bool:
        result = self.desk.schedule.update_one(
            {"_id": entry["_id"], "state": "pending", "lease_ms": {"$lte": epoch_ms(now)}},
            {"$set": {"lease_ms": epoch_ms(now + LEASE), "owner": self.owner}})
        return result.modified_count == 1

    def _reschedule(self, entry_id: str, due: datetime) -> None:
        self.desk.schedule.update_one({"_id": entry_id}, {"$set": {"due_ms": epoch_ms(due), "lease_ms": 0}})

    def _done(self, entry_id: str, **extra: Any) -> None:
        self.desk.schedule.update_one({"_id": entry_id}, {"$set": {"state": "done", "lease_ms": 0, **extra}})

    # --- one message ----------------------------------------------------------------------

    def _message(self, entry: dict[str, Any], now: datetime, campaigns: dict[str, Campaign | None]) -> None:
        message = self.desk.messages.get(entry["_id"])
        if message.status != "queued":
            self._done(message.id)  # already decided (a redelivery, a second worker): nothing to send
            return
        meta = Metadata(actor="service:messaging-worker", correlation_id=message.id, causation_id=message.id)
        if message.campaign_id:
            campaign = self._campaign_state(message.campaign_id, campaigns)
            if campaign is not None and campaign.status == "cancelled":
                self._record(message, lambda m: m.suppress("campaign_cancelled"), meta)
                return
            if campaign is not None and campaign.status == "paused":
                self._reschedule(message.id, now + PAUSED_RECHECK)
                return
        try:
            consent = self.desk.directory.consent(message.contact_id, message.channel)
        except NotFound:
            self._record(message, lambda m: m.suppress("contact_not_found"), meta)
            return
        except Unavailable as exc:
            self._transient(message, str(exc.detail), now, meta)
            return
        if not consent.granted:
            self._record(message, lambda m: m.suppress(consent.reason or "no_consent"), meta)
            return
        contact = self.desk.contact_variables(consent.contact_id)
        quiet = quiet_until(now, contact.get("time_zone"), self.config.window(message.channel))
        if quiet is not None:
            self._reschedule(message.id, quiet)
            return
        wait = self.channel_buckets.setdefault(message.channel, Bucket(0)).wait(now)
        if message.campaign_id and not wait:
            campaign = campaigns.get(message.campaign_id)
            rate = campaign.throttle_per_minute if campaign is not None else 0
            wait = self.campaign_buckets.setdefault(message.campaign_id, Bucket(rate)).wait(now)
        if wait:
            self._reschedule(message.id, now + wait)
            return
        try:
            subject, body, unsubscribe_url = self._render(message, consent.contact_id, contact)
        except (templates.TemplateRejected, NotFound) as exc:
            reason = f"template: {exc}"
            self._record(message, lambda m: m.fail(reason, rfc3339(now)), meta)
            return
        provider = self.providers[message.channel]
        outgoing = providers.Outgoing(message.id, message.channel, consent.address or "", subject, body,
                                      unsubscribe_url)
        try:
            provider_id = provider.send(outgoing)
        except providers.Transient as exc:
            self._transient(message, str(exc), now, meta)
            return
        except providers.Permanent as exc:
            reason = str(exc)
            self._record(message, lambda m: m.fail(reason, rfc3339(now)), meta)
            return
        self.desk.schedule.update_one({"_id": message.id}, {"$set": {"provider": provider.name,
                                                                     "provider_message_id": provider_id}})
        self._record(message, lambda m: m.sent(provider.name, provider_id, outgoing.to, subject, body,
                                               rfc3339(now)), meta)

    def _render(self, message: Message, contact_id: str, contact: dict[str, Any]
                ) -> tuple[str | None, str, str | None]:
        unsubscribe_url = None
        context = {**contact, "survey_url": self.config.survey_url}
        if message.category == "marketing":
            unsubscribe_url = self.desk.unsubscribe_url(contact_id, message.channel)
            context["unsubscribe_url"] = unsubscribe_url
        context.update(message.variables)
        if message.template_id:
            _, variant = self.desk.template(message.template_id).variant(contact.get("locale"))
            subject_source, body_source = variant.get("subject"), variant["body"]
        else:
            subject_source, body_source = message.subject, message.body or ""
        subject = templates.render(subject_source, context) if subject_source else None
        body = templates.render(body_source, context)
        if unsubscribe_url and message.channel == "email" and unsubscribe_url not in body:
            body = f"{body.rstrip()}\n\n--\nUnsubscribe: {unsubscribe_url}\n"
        return subject, body, unsubscribe_url

    def _transient(self, message: Message, error: str, now: datetime, meta: Metadata) -> None:
        attempt = message.attempts + 1
        if attempt >= self.config.max_attempts:
            self._record(message, lambda m: m.fail(f"gave up after {attempt} attempts: {error}", rfc3339(now)), meta)
            return
        retry_at = now + backoff(attempt, self.config.backoff_base, self.config.backoff_cap)
        if self._record(message, lambda m: m.retry_later(error, rfc3339(retry_at)), meta, final=False):
            self._reschedule(message.id, retry_at)

    def _record(self, message: Message, decide: Callable[[Message], None], meta: Metadata,
                final: bool = True) -> bool:
        """Append the decision at the version we loaded; someone else deciding first wins."""
        try:
            decide(message)
            self.desk.messages.save(message, meta)
        except Conflict:
            self._done(message.id)
            return False
        except Exception as exc:
            from crmkit.eventstore import ConcurrencyError

            if not isinstance(exc, ConcurrencyError):
                raise
            fresh = self.desk.messages.get(message.id)
            if fresh.status != "queued":
                self._done(message.id)
            return False
        if final or message.status in FINAL:
            self._done(message.id)
        return True

    # --- campaigns --------------------------------------------------------------------

    def _campaign_state(self, campaign_id: str, cache: dict[str, Campaign | None]) -> Campaign | None:
        if campaign_id not in cache:
            try:
                cache[campaign_id] = self.desk.campaigns.get(campaign_id)
            except NotFound:
                cache[campaign_id] = None
        return cache[campaign_id]

    def _campaign(self, entry: dict[str, Any], now: datetime) -> None:
        campaign = self.desk.campaigns.get(entry["campaign_id"])
        meta = Metadata(actor="service:messaging-worker", correlation_id=campaign.id, causation_id=campaign.id)
        if campaign.status in ("cancelled", "completed"):
            self._done(entry["_id"])
            return
        if campaign.targeted is None:
            try:
                count = self.desk.expand_campaign(campaign, meta)
            except (Unavailable, NotFound) as exc:
                log.warning("campaign expansion deferred", extra={"error": str(exc)})
                self._reschedule(entry["_id"], now + CAMPAIGN_RECHECK)
                return
            self.desk.campaigns.change(campaign.id, lambda c: c.targeted_members(count), meta)
        elif campaign.status == "running" and not self.desk.schedule.count_documents(
                {"campaign_id": campaign.id, "kind": "message", "state": "pending"}):
            self.desk.campaigns.change(campaign.id, lambda c: c.complete(rfc3339(now)), meta)
            self._done(entry["_id"])
            return
        self._reschedule(entry["_id"], now + CAMPAIGN_RECHECK)
