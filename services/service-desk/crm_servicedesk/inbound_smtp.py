"""The support mailbox: an SMTP server (`crm serve service-desk inbound-smtp`, started by `crm up`)
on CRM_SERVICEDESK_INBOUND_SMTP_PORT (2525) that turns each mail into a ticket, a comment, or a
report for messaging (`inbound.Intake`).

A mail is answered only after what it says is in the event store:

- 250: recorded (or recorded before: the same Message-ID again, as SMTP retries do, records nothing),
  or deliberately ignored (an auto-reply);
- 451 (4.x.x, "try again later"): contacts or the database could not be reached, or something
  failed unexpectedly; nothing was recorded and the sending server retries, so a crash or an
  outage loses no mail;
- 552: larger than CRM_SERVICEDESK_INBOUND_MAX_BYTES (aiosmtpd refuses it while it arrives);
- 550/554 with an enhanced code and the reason: a mail we will never take (no valid From, not
  a message at all).

Reading and recording run on a thread pool (the event store and gRPC are blocking), so a slow
mail holds up no other session; nothing a client sends can stop the listener.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from crm_servicedesk import inbound_mail, settings
from crm_servicedesk.commands import TicketDesk
from crm_servicedesk.inbound import InboundConfig, Intake
from crm_servicedesk.inbound_mail import Refused
from crmkit import stack
from crmkit.errors import Unavailable

log = logging.getLogger(__name__)
logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every sender and recipient at info
TRY_AGAIN = "451 4.3.0 the mail could not be recorded now; please try again later"


class InboundHandler:
    """aiosmtpd's handler: DATA is read and recorded on a worker thread, then answered."""

    def __init__(self, intake: Intake, workers: int = 4) -> None:
        self.intake = intake
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inbound-mail")

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        sender = envelope.mail_from if envelope.mail_from not in (None, "<>") else ""
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.receive, raw, sender)

    def receive(self, raw: bytes, envelope_sender: str) -> str:
        """The SMTP reply to one mail, after recording it (never raises)."""
        try:
            outcome = self.intake.mail(inbound_mail.read(raw, envelope_sender))
        except Refused as refused:
            log.info("inbound mail refused", extra={"code": refused.code, "reason": refused.reason})
            return refused.reply
        except Unavailable as exc:
            log.warning("inbound mail deferred: contacts unavailable", extra={"error": str(exc)})
            return TRY_AGAIN
        except Exception:  # the database, a bug: the sender keeps the mail and tries again
            log.exception("inbound mail could not be recorded; the sender will retry")
            return TRY_AGAIN
        log.info(
            "inbound mail recorded",
            extra={"outcome": outcome.kind, "ticket_id": outcome.ticket_id, "duplicate": outcome.duplicate},
        )
        if outcome.kind == "ignored":
            return f"250 2.0.0 accepted, nothing to record: {outcome.reason}"
        return f"250 2.0.0 recorded as {outcome.kind} {outcome.ticket_id or outcome.report_id}"

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class InboundSmtp:
    """The listener: `start()`/`stop()`, or a context manager (tests start it on a free port)."""

    def __init__(self, intake: Intake, config: InboundConfig) -> None:
        self.handler = InboundHandler(intake)
        self.controller = Controller(
            self.handler,
            hostname=config.smtp_host,
            port=config.smtp_port,
            data_size_limit=config.max_bytes,
            enable_SMTPUTF8=True,
            ident="CRM service desk",
            timeout=120,
        )

    def start(self) -> InboundSmtp:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
        self.handler.close()

    def __enter__(self) -> InboundSmtp:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def serve(service: str) -> None:
    """The `inbound-smtp` process: listen until SIGTERM/SIGINT, then finish the mails in hand."""
    from crmkit.service import boot

    _, runtime = boot(service, "inbound-smtp")
    config = settings.current().inbound
    stop = stack.stop_on_signals()
    try:
        with InboundSmtp(Intake(TicketDesk(runtime), config), config):
            log.info("inbound SMTP listening", extra={"url": f"smtp://{config.smtp_host}:{config.smtp_port}"})
            stop.wait()
    finally:
        runtime.close()
