"""A bounce or a complaint that reached the support mailbox, recorded for messaging.

The mail provider sends delivery status notifications (RFC 3464) and complaints (RFC 5965)
about the mails messaging sent to the address they came from; the inbound listener reads
them (`inbound_mail.DeliveryReport`) and records one `MailReportReceived` per report,
keyed by the report's own Message-ID (the same report delivered twice is one event).
Messaging follows this topic and suppresses the address the reported mail went to
(docs/messaging.md, "Bounces and complaints").

The event holds no personal data, so it needs no key and outlives any erasure: the
reported mail by its Message-ID (messaging's, derived from its own message id), each
recipient's action and status, and the diagnostic with every address in it replaced by
`<address>`. The address itself is never written here: messaging knows where its message went.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from crm_servicedesk.inbound_mail import DeliveryReport
from crmkit.aggregate import Aggregate
from crmkit.catalogue import EventType
from crmkit.domainevents import DomainEvent, spec

AN_ADDRESS = re.compile(r"[^\s<>()\[\],;:\"']+@[^\s<>()\[\],;:\"']+")


def redacted(text: str | None) -> str | None:
    return AN_ADDRESS.sub("<address>", text)[:300] if text else None


class MailReport(Aggregate):
    aggregate_type = "mail_report"

    @dataclass(frozen=True)
    class Recipient:
        """One recipient the report is about: what happened, and the remote server's words."""

        action: str = spec(description="failed, or complained")
        status: str | None = spec(
            pattern=r"^[245]\.\d{1,3}\.\d{1,3}$", description="the enhanced status code, e.g. 5.1.1"
        )
        diagnostic: str | None = spec(maxLength=300, description="the remote server's words, addresses redacted")

    class MailReportReceived(DomainEvent):
        """The support mailbox received a bounce (a delivery status notification, RFC 3464, with a permanent
        failure: action `failed`, status 5.x.x) or a complaint (an RFC 5965 feedback report) about a mail
        messaging sent, named by its Message-ID. Messaging suppresses later sends to the address that mail went
        to. The subject is a report id derived from the report's own Message-ID (a report delivered twice is one
        event). No personal data: addresses in a diagnostic are replaced by `<address>`."""

        report_id: str = spec(minLength=1)
        kind: str = spec(enum=("bounce", "complaint"))
        original_message_id: str = spec(
            minLength=1,
            description=(
                "the reported mail's Message-ID without the angle brackets (messaging's `<message id>@domain`)"
            ),
        )
        feedback_type: str | None = spec(
            description="a complaint's ARF feedback type (abuse, fraud, …); null for a bounce"
        )
        recipients: list[MailReport.Recipient]
        received_at: str = spec(format="date-time")

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.kind = ""
        self.original_message_id: str | None = None
        self.recipients: list[dict[str, Any]] = []
        self.received_at: str | None = None

    @classmethod
    def receive(cls, report_id: str, report: DeliveryReport, at: str) -> MailReport:
        """A report that tells messaging to stop mailing someone: permanent failures, or a complaint
        (one naming the reported mail: the caller drops the others)."""
        recorded = cls(report_id)
        recorded.record(
            cls.MailReportReceived(
                report_id=report_id,
                kind=report.kind,
                original_message_id=report.original_message_id or "",
                feedback_type=report.feedback_type,
                recipients=[cls.Recipient(r.action, r.status, redacted(r.diagnostic)) for r in report.permanent],
                received_at=at,
            )
        )
        return recorded

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes a report."""

    @apply.register(MailReportReceived)
    def _on_received(self, event: MailReportReceived) -> None:
        self.kind, self.original_message_id, self.received_at = event.kind, event.original_message_id, event.received_at
        self.recipients = event.data()["recipients"]  # plain JSON, as the read model keeps it

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "kind": self.kind,
            "original_message_id": self.original_message_id,
            "recipients": self.recipients,
            "received_at": self.received_at,
        }


REPORT_EVENTS = [
    EventType.of(
        MailReport.MailReportReceived,
        {
            "report_id": "4f0c…",
            "kind": "bounce",
            "original_message_id": "01c1…@crm.local",
            "feedback_type": None,
            "recipients": [
                {
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnostic": "smtp; 550 5.1.1 <address>: Recipient address rejected: User unknown",
                }
            ],
            "received_at": "2026-12-20T08:05:00.000Z",
        },
    ),
]
