"""Bounces and complaints: addresses messaging stops sending to, and why.

A hard bounce or a complaint about a mail we sent means "do not send to this address again".
Each becomes an `AddressSuppressed` event on the contact's suppression stream (one per contact
and channel, its id derived from both: `suppression_id`), holding the suppressed addresses with
the reason (`bounced` or `complained`), what reported it and the message it was about. From
then on the dispatcher suppresses every send to that contact on that channel while the address
contacts gives for it is a suppressed one (`MessageSuppressed`, reason `address_bounced` or
`address_complained`, with the consent proof as any suppression); a contact who changes their
address is mailed at the new one.

Reports reach us two ways:

- a provider's receipt (`POST /v1/providers/{provider}/receipts`) with status `bounced` (the
  message also fails, bounced) or `complained`;
- a delivery status notification (RFC 3464) or complaint (RFC 5965) mailed back to the support
  mailbox: the service desk reads it and records `crm.servicedesk.MailReportReceived` naming our
  mail's Message-ID (`<message id>@domain`, see providers.SmtpProvider), which `ReportReactor`
  follows here (a bounce fails the message too).

Stream ids carry no address, and the address is sealed with the stream's key, which is
forgotten when the contact is erased (`MessageDesk.erase_contact`), like their messages'.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any

from crm_messaging.domain import CHANNELS, Message
from crmkit.aggregate import Aggregate
from crmkit.catalogue import EventType
from crmkit.config import topic_of
from crmkit.domainevents import DomainEvent, spec
from crmkit.errors import Conflict, NotFound
from crmkit.events import Metadata, RecordedEvent, rfc3339
from crmkit.repository import Repository
from crmkit.store import ConcurrencyError

log = logging.getLogger(__name__)

REASONS = ("bounced", "complained")
SOURCES = ("receipt", "mail_report")
REPORTS = "crm.servicedesk.MailReportReceived.v1"  # the service desk's event (crm_servicedesk.inbound_report)
MESSAGE_ID = re.compile(r"^<?([^<>\s]{1,900})>?$")


NAMESPACE = uuid.UUID("c3e8a1f4-7b2d-4e59-a0c6-1d9f3b5e7a28")


def suppression_id(contact_id: str, channel: str) -> str:
    """The contact's suppression stream on a channel (no address in it: contact ids are random)."""
    return str(uuid.uuid5(NAMESPACE, f"{contact_id}|{channel}"))


class Suppression(Aggregate):
    """The addresses of one contact on one channel that messaging no longer sends to."""

    aggregate_type = "suppression"

    class AddressSuppressed(DomainEvent):
        """An address of the contact is no longer sent to on this channel: a hard bounce (`bounced`) or a
        complaint (`complained`) reported by the provider's receipt (`source` receipt) or by a delivery status
        notification or complaint mailed back to the support mailbox (`mail_report`, via the service desk's
        MailReportReceived). Later sends to the contact on the channel while contacts gives this address are
        suppressed (MessageSuppressed, reason `address_bounced` / `address_complained`). One stream per
        contact and channel; the address and the provider's words are sealed with its key."""

        suppression_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        channel: str = spec(enum=CHANNELS)
        address: str | None = spec(
            personal=True,
            description=("the address suppressed (as the message was sent to it); null once the contact is erased"),
        )
        reason: str = spec(enum=REASONS)
        detail: str | None = spec(
            personal=True,
            maxLength=300,
            description=("the status and diagnostic reported, e.g. 5.1.1 smtp; 550 user unknown"),
        )
        source: str = spec(enum=SOURCES)
        message_id: str | None = spec(description="the message the report was about")
        suppressed_at: str = spec(format="date-time")

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.contact_id = ""
        self.channel = ""
        self.addresses: dict[str, dict[str, Any]] = {}  # address (as sent to) → reason, source, message, when

    def suppress(
        self,
        contact_id: str,
        channel: str,
        address: str,
        reason: str,
        detail: str | None,
        source: str,
        message_id: str | None,
        at: str,
    ) -> bool:
        """Suppress `address`; an address already suppressed records nothing (a report delivered twice)."""
        if address.lower() in self.addresses:
            return False
        self.record(
            self.AddressSuppressed(
                suppression_id=self.id,
                contact_id=contact_id,
                channel=channel,
                address=address,
                reason=reason,
                detail=(detail or None) and detail[:300],
                source=source,
                message_id=message_id,
                suppressed_at=at,
            )
        )
        return True

    def reason_for(self, address: str | None) -> str | None:
        entry = self.addresses.get((address or "").lower())
        return None if entry is None else entry["reason"]

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes a suppression."""

    @apply.register(AddressSuppressed)
    def _on_suppressed(self, event: AddressSuppressed) -> None:
        self.contact_id, self.channel = event.contact_id, event.channel
        if event.address:  # None once the contact is erased (the key is gone)
            self.addresses[event.address.lower()] = {
                "reason": event.reason,
                "source": event.source,
                "message_id": event.message_id,
                "suppressed_at": event.suppressed_at,
            }

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "contact_id": self.contact_id,
            "channel": self.channel,
            "addresses": self.addresses,
        }


PERSONAL = Suppression.AddressSuppressed.personal_paths()  # the address and the provider's words


class Suppressions:
    """Recording suppressions and asking about them, on the event store (never a read model: a bounce
    recorded a moment ago applies to the very next send)."""

    def __init__(self, store: Any, publish: Any) -> None:
        self.repository: Repository[Suppression] = Repository(store, Suppression, publish)

    def suppress(self, message: Message, reason: str, detail: str | None, source: str, meta: Metadata, at: str) -> bool:
        """Suppress the address `message` was sent to, for its contact and channel; False when it already was
        (or the message has no address: never sent, or its contact erased)."""
        if not message.address:
            return False
        stream = suppression_id(message.contact_id, message.channel)
        outcome: dict[str, bool] = {}

        def decide(suppression: Suppression) -> None:
            outcome["new"] = suppression.suppress(
                message.contact_id, message.channel, message.address or "", reason, detail, source, message.id, at
            )

        for _ in range(3):
            try:
                self.repository.change(stream, decide, meta)
                return outcome.get("new", False)
            except NotFound:  # the contact's first suppression on this channel
                suppression = Suppression(stream)
                decide(suppression)
                with contextlib.suppress(ConcurrencyError):  # another report started it first: change that
                    self.repository.save(suppression, meta)
                    return outcome.get("new", False)
        raise Conflict("the suppression was changed concurrently; try again")

    def reasons(self, checks: Sequence[tuple[Sequence[str], str, str | None]]) -> list[str | None]:
        """For each (contact ids, channel, address about to be used): why that address is suppressed
        (bounced, complained), or None. The contact ids are the message's and the one contacts
        answered for (a merge's survivor); one event-store read for the batch."""
        wanted = {suppression_id(cid, channel) for cids, channel, _ in checks for cid in cids}
        found = self.repository.get_many(sorted(wanted)) if wanted else {}
        answers: list[str | None] = []
        for cids, channel, address in checks:
            reasons = [s.reason_for(address) for cid in cids if (s := found.get(suppression_id(cid, channel)))]
            answers.append(next((r for r in reasons if r), None))
        return answers


class ReportReactor:
    """Follows the service desk's topic for `MailReportReceived`: the mail it names (by our Message-ID)
    is found, a bounce fails it, and its address is suppressed. Idempotent: a report seen again
    changes nothing (the address is already suppressed, the message already failed)."""

    name = "mail_reports"

    def __init__(self, desk: Any, topics: Sequence[str] | None = None) -> None:
        self.desk = desk
        self.topics = list(topics or [topic_of("service-desk")])

    def handle(self, events: Sequence[RecordedEvent]) -> None:
        for event in events:
            if event.full_type == REPORTS:
                self.apply(event)

    def apply(self, event: RecordedEvent) -> bool:
        data = event.data
        message = self._message(data.get("original_message_id") or "")
        if message is None:
            log.info(
                "a mail report names no message of ours; nothing to suppress", extra={"report_id": event.stream_id}
            )
            return False
        reason = "complained" if data.get("kind") == "complaint" else "bounced"
        first = (data.get("recipients") or [{}])[0]
        detail = " ".join(str(part) for part in (first.get("status"), first.get("diagnostic")) if part) or None
        meta = Metadata(actor="service:messaging-worker", correlation_id=event.correlation_id, causation_id=event.id)
        at = rfc3339(event.time)
        if reason == "bounced":
            with contextlib.suppress(Conflict):  # still queued, or suppressed: nothing was delivered to fail
                self.desk.messages.change(message.id, lambda m: m.bounced(detail or "bounced", at), meta)
        return self.desk.suppressions.suppress(message, reason, detail, "mail_report", meta, at)

    def _message(self, original_message_id: str) -> Message | None:
        found = MESSAGE_ID.match(original_message_id.strip())
        if not found:
            return None
        entry = self.desk.schedule.find_one({"provider_message_id": f"<{found.group(1)}>"}, {"_id": 1})
        if entry is None:
            return None
        try:
            return self.desk.messages.get(entry["_id"])
        except NotFound:
            return None

    def reset(self) -> None:
        """Nothing to drop: what it decided are events (suppressions, failures), not a read model."""


SUPPRESSION_EVENTS = [
    EventType.of(
        Suppression.AddressSuppressed,
        {
            "suppression_id": "5d1e…",
            "contact_id": "01a2…",
            "channel": "email",
            "address": "ali@example.com",
            "reason": "bounced",
            "detail": "5.1.1 smtp; 550 5.1.1 <address>: User unknown",
            "source": "mail_report",
            "message_id": "01c1…",
            "suppressed_at": "2026-12-20T08:05:00.000Z",
        },
    ),
]
