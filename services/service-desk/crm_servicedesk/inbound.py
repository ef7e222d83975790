"""Tickets from inbound mail and SMS: who wrote, which ticket it belongs to, and recording it once.

`Intake` is called by the SMTP listener (`inbound_smtp`) with a mail it read and by the
inbound-SMS webhook (`inbound_api`); both answer only after what they were handed is in
the event store, so a crash before that loses nothing (the sender retries) and a crash
after it changes nothing on the retry:

- the sender is looked up by address over contacts' gRPC (`FindContacts`); nobody known
  becomes a contact (`CreateContact`, tagged `inbound` with the attribute `source`
  `inbound_email` or `inbound_sms`), the request id derived from the address, so two
  mails from the same stranger make one contact;
- a mail naming a ticket of that contact (subject tag `[#<id>]`, or In-Reply-To/References
  carrying one of our signed Message-IDs) that is not closed becomes a public customer
  comment on it; an SMS does when the contact's latest SMS ticket changed within
  `CRM_SERVICEDESK_INBOUND_SMS_REPLY_HOURS` and is not closed (SMS carries no thread);
  anything else opens a ticket (`channel` email or sms, `type`
  `CRM_SERVICEDESK_INBOUND_TYPE`, priority normal);
- ids are derived from what was delivered (a mail's Message-ID, an SMS's provider id), so
  the same delivery twice is one ticket or one comment;
- a report (bounce, complaint) is one `MailReportReceived` for messaging (`inbound_report`).
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from crm_servicedesk.commands import TicketDesk
from crm_servicedesk.domain import Ticket
from crm_servicedesk.inbound_mail import MAX_SUBJECT, DeliveryReport, InboundMail, Refused, cap, clean_line
from crm_servicedesk.inbound_report import MailReport
from crm_servicedesk.settings import InboundConfig, current
from crmkit import clock
from crmkit.errors import NotFound, ValidationFailed
from crmkit.events import Metadata, rfc3339
from crmkit.repository import Repository
from crmkit.store import ConcurrencyError

log = logging.getLogger(__name__)

NAMESPACE = uuid.UUID("9a4c2e61-0d3b-4f7e-b8a5-6e1f2c7d9b30")
REPLYABLE = ("new", "open", "pending", "on_hold", "solved")  # a closed ticket is final: a new one is opened
CONTACT_TAG = "inbound"


def derived_id(*parts: str) -> str:
    """An id fixed by what was delivered: recording the same delivery again finds it taken."""
    return str(uuid.uuid5(NAMESPACE, "|".join(parts)))


@dataclass(frozen=True)
class Sms:
    """An SMS the gateway received for us: its id at the provider, the sender's number and the text."""

    provider: str
    provider_message_id: str
    sender: str  # as the gateway sent it; contacts normalises it (E.164)
    text: str


@dataclass(frozen=True)
class Outcome:
    """What an inbound delivery became: a new ticket, a comment on one, a report, or nothing (`ignored`)."""

    kind: str  # ticket | comment | report | ignored
    ticket_id: str | None = None
    comment_id: str | None = None
    contact_id: str | None = None
    report_id: str | None = None
    duplicate: bool = False  # recorded by an earlier delivery of the same message
    reason: str | None = None  # why it was ignored

    def view(self) -> dict[str, Any]:
        return {
            "outcome": self.kind,
            "ticket_id": self.ticket_id,
            "comment_id": self.comment_id,
            "contact_id": self.contact_id,
            "duplicate": self.duplicate,
        }


class Intake:
    def __init__(self, desk: TicketDesk, config: InboundConfig | None = None) -> None:
        self.desk = desk
        self.config = config or current().inbound
        self.reports: Repository[MailReport] = Repository(desk.runtime.store, MailReport, desk.runtime.publish)

    # --- mail ---------------------------------------------------------------------------

    def mail(self, mail: InboundMail | DeliveryReport) -> Outcome:
        """Record what a mail says. Refused for a sender contacts will not take; Unavailable (try again)
        when contacts or the database is down."""
        if isinstance(mail, DeliveryReport):
            return self.report(mail)
        if mail.automatic:
            return Outcome("ignored", reason="sent by a machine (auto-reply, bulk or a null sender)")
        contact = self.contact("email", mail.sender, mail.sender_name)
        meta = Metadata(actor=f"contact:{contact['id']}", correlation_id=derived_id("email", mail.key))
        comment_id = derived_id("email", mail.key, "comment")
        for ticket_id in mail.ticket_refs:
            ticket = self._replyable(ticket_id, contact["id"], comment_id)
            if ticket is not None:
                return self._comment(ticket, mail.body(reply=True), comment_id, contact["id"], meta)
        fields = {
            "subject": mail.subject,
            "description": mail.body(),
            "contact_id": contact["id"],
            "channel": "email",
            "type": self.config.ticket_type,
            "priority": "normal",
            "tags": [],
        }
        return self._open(derived_id("email", mail.key), fields, contact["id"], meta)

    def report(self, report: DeliveryReport) -> Outcome:
        """A bounce or complaint: one MailReportReceived for messaging, when it names a mail and someone to stop
        mailing; otherwise nothing (a delay, a success, a report about a mail we cannot name)."""
        if report.original_message_id is None or not report.permanent:
            return Outcome("ignored", reason="a report naming no mail of ours, or no permanent failure")
        report_id = derived_id("report", report.key)
        try:
            self.reports.save(
                MailReport.receive(report_id, report, rfc3339(clock.now())),
                Metadata(actor="system:inbound-email", correlation_id=report_id),
            )
        except ConcurrencyError:
            return Outcome("report", report_id=report_id, duplicate=True)
        return Outcome("report", report_id=report_id)

    # --- SMS --------------------------------------------------------------------------

    def sms(self, sms: Sms) -> Outcome:
        """An SMS: a comment on the contact's latest SMS ticket still open to replies within the window, else a
        new ticket. The same provider id again is the same outcome, recorded once."""
        key = derived_id("sms", sms.provider, sms.provider_message_id)
        contact = self.contact("sms", sms.sender, None)
        meta = Metadata(actor=f"contact:{contact['id']}", correlation_id=key)
        text = cap(sms.text)
        earlier = self._ticket_of_delivery(key)
        if earlier is not None:
            return Outcome("ticket", earlier.id, contact_id=earlier.contact_id, duplicate=True)
        latest = self._latest_sms_ticket(contact["id"])
        if latest is not None:
            return self._comment(latest, text, derived_id(key, "comment"), contact["id"], meta)
        subject = clean_line(text)[:80].strip() or "SMS"
        fields = {
            "subject": subject[:MAX_SUBJECT],
            "description": text,
            "contact_id": contact["id"],
            "channel": "sms",
            "type": self.config.ticket_type,
            "priority": "normal",
            "tags": [],
        }
        return self._open(key, fields, contact["id"], meta)

    # --- the parts ----------------------------------------------------------------------

    def contact(self, channel: str, address: str, name: str | None) -> dict[str, Any]:
        """The active contact with this address, or a new one marked as made by this channel."""
        field = "email" if channel == "email" else "phone"
        found = self.desk.directory.find(**{field: address})
        if found:
            return found[0]
        first, _, last = (name or "").partition(" ")
        fields = {
            field: address,
            "first_name": first or None,
            "last_name": last or None,
            "tags": [CONTACT_TAG],
            "attributes": {"source": f"inbound_{channel}"},
        }
        request = f"inbound:{channel}:{address if channel == 'email' else re.sub(r'[^0-9+]', '', address)}"
        contact = self._create(request, fields)
        if contact.get("status") != "active":  # the contact made for this address once was erased
            contact = self._create(f"{request}:{clock.now().timestamp()}", fields)
        log.info("a contact was made for an inbound sender", extra={"contact_id": contact["id"], "channel": channel})
        return contact

    def _create(self, request: str, fields: dict[str, Any]) -> dict[str, Any]:
        """CreateContact; a display name contacts will not take is left out rather than the mail refused."""
        try:
            return self.desk.directory.create(request, fields)
        except NotFound:  # INVALID_ARGUMENT: try once more with the address alone
            pass
        try:
            return self.desk.directory.create(request, {**fields, "first_name": None, "last_name": None})
        except NotFound as exc:  # contacts refused the address itself
            raise Refused(550, "5.1.7", f"the sender could not be recorded as a contact ({exc})") from None

    def _replyable(self, ticket_id: str, contact_id: str, comment_id: str) -> Ticket | None:
        """The ticket a mail names, if it is this contact's and open to replies (or already holds this
        mail's comment: a repeat); a reference to anyone else's ticket is not followed (a tag is easy to type)."""
        try:
            ticket = self.desk.ticket(ticket_id)
        except NotFound:
            return None
        if ticket.contact_id != contact_id:
            return None
        return ticket if ticket.status in REPLYABLE or _has_comment(ticket, comment_id) else None

    def _ticket_of_delivery(self, ticket_id: str) -> Ticket | None:
        try:
            return self.desk.ticket(ticket_id)
        except NotFound:
            return None

    def _latest_sms_ticket(self, contact_id: str) -> Ticket | None:
        """The contact's SMS ticket changed last, if within the reply window and open to replies; read from the
        event store (not the read model), so an SMS right after the first finds the ticket it opened."""
        found = self.desk.tickets.get_many(self.desk._tickets_of(contact_id))
        since = clock.now() - timedelta(hours=self.config.sms_reply_hours)
        candidates = [
            (t.updated_at, t)
            for t in found.values()
            if t.channel == "sms"
            and t.status in REPLYABLE
            and t.contact_id == contact_id
            and t.updated_at is not None
            and t.updated_at >= since
        ]
        return max(candidates, key=lambda changed: changed[0], default=(since, None))[1]

    def _comment(self, ticket: Ticket, body: str, comment_id: str, contact_id: str, meta: Metadata) -> Outcome:
        if _has_comment(ticket, comment_id):
            return Outcome("comment", ticket.id, comment_id, contact_id, duplicate=True)
        self.desk.tickets.change(
            ticket.id,
            lambda t: t.comment(body, True, "customer", f"contact:{contact_id}", clock.now(), comment_id=comment_id),
            meta,
        )
        return Outcome("comment", ticket.id, comment_id, contact_id)

    def _open(self, ticket_id: str, fields: dict[str, Any], contact_id: str, meta: Metadata) -> Outcome:
        try:
            self.desk.open_ticket(fields, meta, ticket_id=ticket_id)
        except ConcurrencyError:
            return Outcome("ticket", ticket_id, contact_id=contact_id, duplicate=True)
        except ValidationFailed as exc:  # the contact vanished (erased, merged away) between the two calls
            raise Refused(451, "4.7.0", f"the ticket could not be opened now ({exc}); try again") from None
        return Outcome("ticket", ticket_id, contact_id=contact_id)


def _has_comment(ticket: Ticket, comment_id: str) -> bool:
    return any(comment["id"] == comment_id for comment in ticket.comments)
