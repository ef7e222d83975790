"""Channel adapters: how a rendered message leaves the building.

Every adapter takes an `Outgoing` (with `key`, the message id, as the idempotency key)
and returns the provider's message id, or raises `Transient` (retry with back-off) or
`Permanent` (fail now). Chosen per channel by configuration (`config.Settings`):

- email: `smtp` — smtplib to any SMTP server (TLS none|starttls|ssl, optional login).
  One connection carries the mails of a busy period (the dispatcher closes it when it
  goes idle); a kept connection the server dropped is reopened once.
  The local default points it at the SMTP sink `crm up` starts (`sinks.SmtpSink`), which
  writes each mail as an .eml file under var/messaging/mail/.
- sms, fax: `http` — a JSON API in the common SMS-gateway style
  (`POST {base}/messages` with `{"to", "from", "text", "reference"}`, basic auth, an
  `Idempotency-Key` header, answer `{"id": ...}`), or `file` (the local default): one
  JSON file per message under var/messaging/outbox/<channel>/.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Protocol

from crmkit import signing

THREAD_PURPOSE = "mail-thread"  # the service desk verifies these tokens (crm_servicedesk.inbound_mail)
THREAD_MARK = ".t."


@dataclass(frozen=True)
class Outgoing:
    key: str  # our message id: the idempotency key every provider gets
    channel: str
    to: str
    subject: str | None
    body: str
    unsubscribe_url: str | None = None
    thread: str | None = None  # the ticket a mail is about: its Message-ID leads a reply back to it


class Transient(Exception):
    """Worth retrying: the provider is away, slow, or rate-limiting us."""


class Permanent(Exception):
    """Retrying will not help: a bad address, a rejected message."""


class Provider(Protocol):
    name: str

    def send(self, message: Outgoing) -> str: ...

    def close(self) -> None:
        """Let go of any connection kept between sends (the dispatcher is idle)."""


class SmtpProvider:
    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        tls: str = "none",
        username: str = "",
        password: str = "",
        timeout: float = 10.0,
        domain: str = "crm.local",
    ) -> None:
        self.host, self.port, self.sender, self.tls = host, port, sender, tls
        self.username, self.password, self.timeout, self.domain = username, password, timeout, domain
        self._client: smtplib.SMTP | None = None  # kept open while the dispatcher is busy

    def message_id(self, key: str, thread: str | None = None) -> str:
        """Derived from our id, so a retried send carries the same Message-ID (receivers dedupe on it). A mail
        about a ticket adds a signed token naming it (`<key>.t.<token>@domain`): a reply's In-Reply-To then
        leads the service desk's mailbox back to the ticket (crm_servicedesk.inbound_mail.thread_refs)."""
        if thread:
            return f"<{key}{THREAD_MARK}{signing.sign(THREAD_PURPOSE, {'t': thread})}@{self.domain}>"
        return f"<{key}@{self.domain}>"

    def send(self, message: Outgoing) -> str:
        try:
            mail = self._compose(message)
        except Exception as exc:  # a header the mail format cannot carry, text no encoding writes
            raise Permanent(f"the mail could not be composed: {exc.__class__.__name__}") from None
        try:
            self._transmit(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            raise Permanent(f"recipient refused: {_codes(exc.recipients)}") from None
        except smtplib.SMTPResponseException as exc:
            if 500 <= exc.smtp_code < 600:
                raise Permanent(f"SMTP {exc.smtp_code}") from None
            raise Transient(f"SMTP {exc.smtp_code}") from None
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise Transient(f"SMTP unavailable: {exc.__class__.__name__}") from None
        return mail["Message-ID"]

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()
            client.close()

    def _compose(self, message: Outgoing) -> EmailMessage:
        mail = EmailMessage()
        mail["From"], mail["To"] = self.sender, message.to
        mail["Subject"] = message.subject or ""
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = self.message_id(message.key, message.thread) if message.key else make_msgid()
        if message.unsubscribe_url:  # RFC 2369, and RFC 8058's one-click POST to the same link
            mail["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
            mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        mail.set_content(message.body, charset="utf-8")
        return mail

    def _transmit(self, mail: EmailMessage) -> None:
        """Send on the kept connection; a server that dropped it while we were quiet gets a
        fresh one, once (the Message-ID is the same, should it have kept the first)."""
        reused = self._client is not None
        try:
            self._connection().send_message(mail)
        except smtplib.SMTPServerDisconnected:
            self._drop()
            if not reused:
                raise
            self._transmit(mail)
        except BaseException:
            self._drop()
            raise

    def _connection(self) -> smtplib.SMTP:
        if self._client is None:
            if self.tls == "ssl":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            try:
                if self.tls == "starttls":
                    client.starttls(context=ssl.create_default_context())
                if self.username:
                    client.login(self.username, self.password)
            except BaseException:
                client.close()
                raise
            self._client = client
        return self._client

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _codes(recipients: dict) -> str:
    return ", ".join(str(code) for code, _ in recipients.values())


class HttpGatewayProvider:
    """A JSON SMS/fax gateway: `POST {base_url}/messages`, basic auth, Idempotency-Key."""

    def __init__(
        self, channel: str, base_url: str, username: str, password: str, sender: str, timeout: float = 10.0
    ) -> None:  # timeout: CRM_MESSAGING_<CHANNEL>_TIMEOUT_SECONDS
        self.name = f"http-{channel}"
        self.base_url, self.sender, self.timeout = base_url.rstrip("/"), sender, timeout
        self.auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def send(self, message: Outgoing) -> str:
        body = json.dumps(
            {"to": message.to, "from": self.sender, "text": message.body, "reference": message.key}, ensure_ascii=False
        ).encode()
        request = urllib.request.Request(
            f"{self.base_url}/messages",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": self.auth, "Idempotency-Key": message.key},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (408, 429) or exc.code >= 500:
                raise Transient(f"gateway answered {exc.code}") from None
            raise Permanent(f"gateway rejected the message ({exc.code})") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise Transient(f"gateway unavailable: {exc.__class__.__name__}") from None
        # a 2xx is an acceptance: an answer without a readable id still means "sent" (our key
        # then stands for the provider's id), never a retry of something already accepted
        try:
            answer = json.loads(raw) if raw.strip() else {}
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        return str(answer.get("id") or answer.get("message_id") or message.key)

    def close(self) -> None:
        """Nothing kept: each request is its own connection."""


class FileSink:
    """The local SMS/fax "provider": one JSON file per message, named by our id (so a
    retried send overwrites rather than duplicates)."""

    def __init__(self, channel: str, folder: Path) -> None:
        self.name = f"file-{channel}"
        self.folder = folder

    def send(self, message: Outgoing) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{message.key}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(
            json.dumps(
                {
                    "id": message.key,
                    "channel": message.channel,
                    "to": message.to,
                    "subject": message.subject,
                    "text": message.body,
                },
                ensure_ascii=False,
                indent=2,
            ),
            encoding="utf-8",
        )
        os.replace(temporary, path)
        return message.key

    def close(self) -> None:
        """Nothing kept between files."""
