"""Reading a support mail: the pure part of the inbound channel (no I/O, no clock).

`read(raw)` turns the bytes an SMTP client handed over into one of:

- `InboundMail`: who wrote (the From address), the subject, the text (text/plain
  preferred, HTML turned into text without running or keeping any markup), the ticket it
  refers to (a `[#<ticket id>]` tag in the subject, or a Message-ID of ours in
  In-Reply-To/References: `thread_token`), the attachments' names and sizes (their
  content is dropped), and whether it was sent by a machine (Auto-Submitted, Precedence:
  bulk, a null sender): those open no ticket, which keeps an out-of-office reply to a
  survey mail from opening one and a mail loop from starting.
- `DeliveryReport`: a delivery status notification (RFC 3464, `multipart/report;
  report-type=delivery-status`) or a complaint (RFC 5965 ARF, `report-type=feedback-report`)
  about a mail we sent, with the Message-ID of that mail and each recipient's action and
  status: messaging suppresses the address (docs/messaging.md, "Bounces and complaints").

A mail that cannot be read is `Refused` with the SMTP reply to give (550/554 and an
enhanced status code naming the reason). The parser is the standard library's lenient one
(`compat32`), so no header, however broken, raises past `read`: headers are decoded here,
one by one, each falling back to its raw text (hypothesis-tested in tests/test_inbound_mail.py).
"""

from __future__ import annotations

import email
import email.header
import email.message
import email.utils
import hashlib
import html
import re
import unicodedata
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from crmkit import signing

MAX_SUBJECT = 300  # what TicketInput takes
MAX_TEXT = 20_000  # a ticket's description or a comment's body
TRUNCATED = "\n\n[… the rest of the mail was cut: it was longer than 20,000 characters]"
TAG = re.compile(r"\[#([A-Za-z0-9][A-Za-z0-9:._-]{0,127})\]")
MESSAGE_ID = re.compile(r"<([^<>\s]{1,900})>")
ADDRESS = re.compile(r"^[^@\s\"<>()\[\],;:\\]{1,64}@[^@\s\"<>()\[\],;:\\]{1,190}\.[^@\s\"<>()\[\],;:\\.]{1,63}$")
THREAD_PURPOSE = "mail-thread"  # crmkit.signing purpose of the ticket token our Message-IDs carry
THREAD_MARK = ".t."  # <message key>.t.<token>@domain
AUTOMATIC_PRECEDENCE = ("bulk", "junk", "list", "auto_reply")


class Refused(Exception):
    """This mail is not accepted: `reply` is the SMTP answer (code, enhanced status, reason)."""

    def __init__(self, code: int, enhanced: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.enhanced, self.reason = code, enhanced, reason

    @property
    def reply(self) -> str:
        return f"{self.code} {self.enhanced} {self.reason}"


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    size: int  # bytes, decoded


@dataclass(frozen=True)
class InboundMail:
    key: str  # what makes it one mail: its Message-ID, or a digest of it when it has none
    sender: str  # the From address, lower-cased
    sender_name: str | None
    subject: str
    text: str
    ticket_refs: tuple[str, ...]  # ticket ids it names, most trusted first (subject tag, then our Message-IDs)
    attachments: tuple[Attachment, ...] = ()
    automatic: bool = False  # sent by a machine: opens nothing

    def body(self, *, reply: bool = False) -> str:
        """The text to keep: a reply without the history it quotes, the attachments' names and sizes noted."""
        text = strip_quoted(self.text) if reply else self.text
        if self.attachments:
            listed = ", ".join(f"{a.name} ({a.content_type}, {_size(a.size)})" for a in self.attachments)
            text = f"{text}\n\n[attachments not kept: {listed}]".strip()
        return cap(text or "(no text)")


@dataclass(frozen=True)
class Recipient:
    address: str | None
    action: str  # failed | delayed | delivered | relayed | expanded | complained
    status: str | None  # an enhanced status code, e.g. 5.1.1
    diagnostic: str | None


@dataclass(frozen=True)
class DeliveryReport:
    key: str  # the report's own Message-ID (or digest)
    kind: str  # bounce | complaint
    original_message_id: str | None  # the Message-ID of the mail it reports on, without <>
    recipients: tuple[Recipient, ...] = field(default_factory=tuple)
    feedback_type: str | None = None  # ARF: abuse, fraud, ...

    @property
    def permanent(self) -> list[Recipient]:
        """The recipients this report tells us never to mail again: a complaint, or a failure with a 5.x.x status."""
        if self.kind == "complaint":
            return list(self.recipients) or [Recipient(None, "complained", None, None)]
        return [r for r in self.recipients if r.action == "failed" and (r.status or "5").startswith("5")]


# --- the entry point ---------------------------------------------------------------------


def read(raw: bytes, envelope_sender: str | None = None) -> InboundMail | DeliveryReport:
    """The mail handed over in DATA; `envelope_sender` is MAIL FROM (empty for a bounce). Refused if unreadable."""
    if not raw.strip():
        raise Refused(554, "5.6.0", "empty message")
    try:
        message = email.message_from_bytes(raw)
    except Exception:  # the lenient parser does not raise on bad input; should it, the mail is refused, not the server
        raise Refused(554, "5.6.0", "the message could not be parsed") from None
    if not message.keys():
        raise Refused(554, "5.6.0", "no headers: not an RFC 5322 message")
    key = message_key(message, raw)
    if message.get_content_type() == "multipart/report":
        report = _report(message, key)
        if report is not None:
            return report
    return _mail(message, key, envelope_sender)


def message_key(message: email.message.Message, raw: bytes) -> str:
    """The mail's identity for idempotency: its Message-ID (a retried delivery carries the same one),
    else a digest of its bytes (an MTA retrying sends the same bytes)."""
    found = MESSAGE_ID.search(header_text(message, "Message-ID") or "")
    if found:
        return f"id:{found.group(1)}"
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


# --- a person's mail ---------------------------------------------------------------------------


def _mail(message: email.message.Message, key: str, envelope_sender: str | None) -> InboundMail:
    name, sender = sender_of(message)
    if sender is None:
        raise Refused(550, "5.1.7", "no valid From address: we could not tell who wrote")
    text, attachments = _content(message)
    subject = clean_line(header_text(message, "Subject") or "")[:MAX_SUBJECT].strip() or "(no subject)"
    refs = [*tags_in(subject), *thread_refs(message)]
    return InboundMail(
        key=key,
        sender=sender,
        sender_name=name,
        subject=subject,
        text=cap(text),
        ticket_refs=tuple(dict.fromkeys(refs)),
        attachments=tuple(attachments),
        automatic=is_automatic(message, envelope_sender, sender),
    )


def sender_of(message: email.message.Message) -> tuple[str | None, str | None]:
    """(display name, lower-cased address) of From (Sender when From has none); None for a missing or bad one."""
    for header in ("From", "Sender"):
        raw = _raw_header(message, header)
        if raw is None:
            continue
        try:
            name, address = email.utils.parseaddr(raw)
        except Exception:  # parseaddr gives up on some shapes by raising
            continue
        address = unicodedata.normalize("NFKC", address).strip().lower()
        if ADDRESS.match(address) and len(address) <= 254:
            display = clean_line(decode_words(name))[:100].strip() or None
            return display, address
    return None, None


def is_automatic(message: email.message.Message, envelope_sender: str | None, sender: str) -> bool:
    """Sent by a machine (RFC 3834 Auto-Submitted, Precedence: bulk/junk/list, a null envelope sender,
    a mailer daemon): answering it with a ticket could start a loop."""
    submitted = (header_text(message, "Auto-Submitted") or "no").strip().lower()
    precedence = (header_text(message, "Precedence") or "").strip().lower()
    local = sender.split("@", 1)[0]
    return (
        not submitted.startswith("no")
        or precedence in AUTOMATIC_PRECEDENCE
        or envelope_sender == ""
        or local in ("mailer-daemon", "postmaster")
        or message.get("X-Autoreply") is not None
    )


def tags_in(subject: str) -> list[str]:
    """The ticket ids named by `[#<id>]` tags in a subject (the tag our ticket mails carry)."""
    return TAG.findall(subject)


def thread_refs(message: email.message.Message) -> list[str]:
    """Ticket ids from In-Reply-To and References: a Message-ID of ours carries a signed token
    naming its ticket (`thread_token`); forged or foreign ids name nothing."""
    found = []
    for header in ("In-Reply-To", "References"):
        for message_id in MESSAGE_ID.findall(header_text(message, header) or ""):
            ticket_id = ticket_of_message_id(message_id)
            if ticket_id:
                found.append(ticket_id)
    return found


def thread_token(ticket_id: str) -> str:
    """What a Message-ID of a mail about `ticket_id` carries (`<key>.t.<token>@domain`), so a reply's
    In-Reply-To leads back to the ticket: signed (crmkit.signing), so nobody else can make one."""
    return signing.sign(THREAD_PURPOSE, {"t": ticket_id})


def ticket_of_message_id(message_id: str) -> str | None:
    local = message_id.rsplit("@", 1)[0]
    if THREAD_MARK not in local:
        return None
    token = local.rsplit(THREAD_MARK, 1)[1]
    try:
        ticket_id = signing.verify(THREAD_PURPOSE, token).get("t")
    except signing.BadToken:
        return None
    return ticket_id if isinstance(ticket_id, str) and TAG.fullmatch(f"[#{ticket_id}]") else None


def _content(message: email.message.Message) -> tuple[str, list[Attachment]]:
    """The text (the first text/plain part, else the first text/html one as text) and every other part as
    an attachment (name, type, size; the bytes are dropped)."""
    plain: str | None = None
    markup: str | None = None
    attachments: list[Attachment] = []
    for part in _leaves(message):
        content_type = part.get_content_type()
        filename = _filename(part)
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        if filename or disposition == "attachment" or not content_type.startswith("text/"):
            attachments.append(
                Attachment(filename or f"unnamed.{content_type.split('/')[-1][:20]}", content_type, len(_payload(part)))
            )
        elif content_type == "text/plain" and plain is None:
            plain = _decoded(part)
        elif content_type == "text/html" and markup is None:
            markup = _decoded(part)
        else:  # a second text part (an alternative of one we have, a calendar): kept by name only
            attachments.append(
                Attachment(filename or f"part.{content_type.split('/')[-1][:20]}", content_type, len(_payload(part)))
            )
    if plain is None and markup is not None:
        plain = html_to_text(markup)
    return clean_text(plain or ""), attachments


def _leaves(message: email.message.Message) -> list[email.message.Message]:
    """The mail's non-multipart parts in order; a forwarded mail (message/rfc822) is one part, not opened."""
    if message.get_content_maintype() == "multipart" and isinstance(message.get_payload(), list):
        leaves: list[email.message.Message] = []
        for part in message.get_payload():
            if isinstance(part, email.message.Message):
                leaves += _leaves(part)
        return leaves
    return [message]


def _filename(part: email.message.Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # a malformed RFC 2231 parameter
        return "unnamed"
    if not name:
        return None
    return clean_line(decode_words(str(name)))[:200].strip() or "unnamed"


def _payload(part: email.message.Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return b""
    if isinstance(payload, bytes):
        return payload
    inner = part.get_payload()
    return inner.encode("utf-8", "replace") if isinstance(inner, str) else str(inner).encode("utf-8", "replace")


def _decoded(part: email.message.Message) -> str:
    raw = _payload(part)
    try:
        return raw.decode(part.get_content_charset() or "utf-8", "replace")
    except Exception:  # a charset Python does not know, or a parameter it cannot read
        return raw.decode("utf-8", "replace")


# --- reports: bounces and complaints -----------------------------------------------------------------


def _report(message: email.message.Message, key: str) -> DeliveryReport | None:
    report_type = message.get_param("report-type") or ""
    report_type = report_type.lower() if isinstance(report_type, str) else ""
    parts = (
        [p for p in message.get_payload() if isinstance(p, email.message.Message)]
        if isinstance(message.get_payload(), list)
        else []
    )
    original = _original_message_id(parts)
    if report_type == "delivery-status":
        status = next((p for p in parts if p.get_content_type() == "message/delivery-status"), None)
        if status is None:
            raise Refused(554, "5.6.0", "a delivery-status report without its message/delivery-status part")
        return DeliveryReport(key, "bounce", original, tuple(_dsn_recipients(status)))
    if report_type == "feedback-report":
        feedback = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
        fields = _fields(feedback) if feedback is not None else {}
        address = _address_field(fields.get("original-rcpt-to"))
        return DeliveryReport(
            key,
            "complaint",
            original,
            (Recipient(address, "complained", None, None),),
            feedback_type=(fields.get("feedback-type") or "abuse").lower()[:50],
        )
    return None  # another kind of report (e.g. a read receipt): read as a mail


def _dsn_recipients(status: email.message.Message) -> list[Recipient]:
    """The per-recipient blocks of a message/delivery-status part (RFC 3464 §2.3)."""
    blocks = status.get_payload()
    if not isinstance(blocks, list):  # the parser left it as text: split it into blocks ourselves
        text = blocks if isinstance(blocks, str) else ""
        blocks = [email.message_from_string(chunk) for chunk in re.split(r"\r?\n\r?\n", text) if chunk.strip()]
    found = []
    for block in blocks:
        if not isinstance(block, email.message.Message):
            continue
        fields = _fields(block)
        recipient = fields.get("final-recipient") or fields.get("original-recipient")
        if recipient is None or "action" not in fields:
            continue  # the per-message block, or a broken one
        status_code = re.match(r"^\s*([245]\.\d{1,3}\.\d{1,3})", fields.get("status") or "")
        found.append(
            Recipient(
                _address_field(recipient),
                fields["action"].strip().lower()[:20],
                status_code.group(1) if status_code else None,
                clean_line(fields.get("diagnostic-code") or "")[:300].strip() or None,
            )
        )
    return found


def _fields(part: email.message.Message) -> dict[str, str]:
    """A report part's fields, lower-cased names: the parser gives them as headers of the part or its payload."""
    sources = [part]
    payload = part.get_payload()
    if isinstance(payload, list):
        sources += [p for p in payload if isinstance(p, email.message.Message)]
    elif isinstance(payload, str) and ":" in payload:
        sources.append(email.message_from_string(payload))
    found: dict[str, str] = {}
    for source in sources:
        for name, value in source.raw_items():
            found.setdefault(name.lower(), _undecoded(value))
    return found


def _address_field(value: str | None) -> str | None:
    """`rfc822; user@example.com` (a DSN's or ARF's address field) → the address, lower-cased."""
    if not value:
        return None
    address = value.split(";", 1)[-1].strip().strip("<>").strip().lower()
    return address if ADDRESS.match(address) else None


def _original_message_id(parts: list[email.message.Message]) -> str | None:
    """The Message-ID of the mail a report is about: from its returned message or headers part."""
    for part in parts:
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else inner
            headers = inner if isinstance(inner, email.message.Message) else None
        elif content_type in ("text/rfc822-headers", "message/rfc822-headers"):
            headers = email.message_from_string(_decoded(part))
        else:
            continue
        found = MESSAGE_ID.search(header_text(headers, "Message-ID") or "") if headers is not None else None
        if found:
            return found.group(1)
    return None


# --- text --------------------------------------------------------------------------------------------


def header_text(message: email.message.Message, name: str) -> str | None:
    """A header's value with its RFC 2047 words decoded; its raw text when they cannot be."""
    value = _raw_header(message, name)
    return None if value is None else decode_words(value)


def _raw_header(message: email.message.Message, name: str) -> str | None:
    """The first `name` header as it came (UTF-8 bytes, as SMTPUTF8 mail has them, read as text)."""
    wanted = name.lower()
    for key, value in message.raw_items():
        if key.lower() == wanted:
            return _undecoded(value)
    return None


def _undecoded(value: Any) -> str:
    """Text of a raw header value: the bytes the parser kept as surrogate escapes read as UTF-8."""
    text = value if isinstance(value, str) else str(value)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "replace").decode("utf-8", "replace")


def decode_words(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # an unknown charset, a broken encoded word: the text as it came
        return value


def clean_line(text: str) -> str:
    """One line: control characters and line breaks (a folded header's too) become spaces, runs collapsed."""
    return re.sub(r"\s+", " ", "".join(" " if _control(ch) else ch for ch in text))


def clean_text(text: str) -> str:
    """Lines kept (CRLF as LF), tabs kept, other control characters dropped, three or more blank lines as two."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch in "\n\t" or not _control(ch))
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch in "\ufeff\u200b"


def cap(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - len(TRUNCATED)].rstrip() + TRUNCATED


QUOTE_HEADER = re.compile(
    r"^(On .{1,300} wrote:|-{2,} ?Original Message ?-{2,}|در تاریخ .{1,300} نوشت:)\s*$", re.IGNORECASE
)


def strip_quoted(text: str) -> str:
    """A reply's own words: what comes before the quoted history ("On … wrote:" and the `>` lines after it);
    a reply that is only a quote keeps it all."""
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if QUOTE_HEADER.match(line.strip()) or (
            line.startswith(">") and all(not rest.strip() or rest.startswith(">") for rest in lines[index:])
        ):
            own = "\n".join(lines[:index]).strip()
            return own or text
    return text


class _TextOfHtml(HTMLParser):
    """HTML as text: tags dropped (script, style and head with their content), blocks as line breaks,
    entities decoded. Nothing of the markup survives, so nothing can run where the text is shown."""

    SKIP = {"script", "style", "head", "title", "template", "noscript"}
    BLOCKS = {
        "p",
        "div",
        "br",
        "li",
        "tr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "pre",
        "table",
        "ul",
        "ol",
        "hr",
        "section",
        "article",
        "header",
        "footer",
    }

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.out.append("\n")
        if tag == "li":
            self.out.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.out.append(re.sub(r"[ \t\r\n]+", " ", data))


def html_to_text(markup: str) -> str:
    parser = _TextOfHtml()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # HTMLParser is lenient; should it give up, drop every tag we can see
        return html.unescape(re.sub(r"<[^>]*>", " ", markup))
    lines = [line.strip() for line in "".join(parser.out).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"
