"""Reading support mail (crm_servicedesk.inbound_mail): no servers, just bytes in and a reading out."""

from __future__ import annotations

from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_servicedesk import inbound_mail
from crm_servicedesk.inbound_mail import DeliveryReport, InboundMail, Refused, read
from crm_servicedesk.inbound_report import redacted


def mail(body: str = "سفارش من نرسیده است", **headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = headers.pop("From", "Sara Ahmadi <Sara@Example.com>")
    message["To"] = "support@crm.local"
    message["Subject"] = headers.pop("Subject", "سفارش نرسیده")
    message["Message-ID"] = headers.pop("Message_ID", "<m-1@example.com>")
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message.as_bytes()


def test_a_plain_mail_in_persian_is_read_with_its_sender_subject_and_text():
    found = read(mail())
    assert isinstance(found, InboundMail)
    assert (found.sender, found.sender_name) == ("sara@example.com", "Sara Ahmadi")
    assert found.subject == "سفارش نرسیده" and found.text == "سفارش من نرسیده است"
    assert found.key == "id:m-1@example.com" and not found.automatic and found.ticket_refs == ()


def test_html_only_becomes_text_without_markup_or_scripts():
    message = MIMEText(
        "<html><head><style>p{}</style><script>alert('x')</script></head><body>"
        "<p>Hello&nbsp;there &amp; <b>thanks</b></p><ul><li>one</li><li>two</li></ul>"
        "<img src=x onerror=alert(1)></body></html>",
        "html",
        "utf-8",
    )
    message["From"], message["Subject"], message["Message-ID"] = "a@b.example", "Hi", "<h@b.example>"
    found = read(message.as_bytes())
    assert "alert" not in found.text and "<" not in found.text and "style" not in found.text
    assert "Hello\xa0there & thanks" in found.text and "- one" in found.text and "- two" in found.text


def test_plain_text_is_preferred_and_attachments_are_kept_by_name_and_size_only():
    message = MIMEMultipart("mixed")
    alternative = MIMEMultipart("alternative")
    alternative.attach(MIMEText("the plain words", "plain", "utf-8"))
    alternative.attach(MIMEText("<p>the html words</p>", "html", "utf-8"))
    message.attach(alternative)
    attachment = MIMEApplication(b"%PDF" + b"x" * 2044, "pdf")
    attachment.add_header("Content-Disposition", "attachment", filename="فاکتور.pdf")
    message.attach(attachment)
    message["From"], message["Subject"], message["Message-ID"] = "a@b.example", "Invoice", "<i@b.example>"
    found = read(message.as_bytes())
    assert found.text == "the plain words"
    assert [(a.name, a.content_type, a.size) for a in found.attachments] == [("فاکتور.pdf", "application/pdf", 2048)]
    assert found.body().endswith("[attachments not kept: فاکتور.pdf (application/pdf, 2.0 KB)]")
    assert "%PDF" not in found.body()


def test_a_subject_tag_and_our_signed_message_id_name_the_ticket(monkeypatch):
    monkeypatch.setenv("CRM_LINK_SECRET", "a-link-secret-for-tests")
    ours = f"<msg-1{inbound_mail.THREAD_MARK}{inbound_mail.thread_token('T-7')}@crm.local>"
    forged = "<msg-2.t.eyJwIjoibWFpbC10aHJlYWQiLCJ4IjpudWxsLCJkIjp7InQiOiJULTgifX0.AAAA@crm.local>"
    found = read(mail(Subject="Re: How did we do? [#T-1]", In_Reply_To=ours, References=f"{forged} {ours}"))
    assert found.ticket_refs == ("T-1", "T-7")  # the tag first, then ours; the forged token names nothing


def test_machines_are_recognised_so_they_open_nothing():
    assert read(mail(Auto_Submitted="auto-replied")).automatic
    assert read(mail(Precedence="bulk")).automatic
    assert read(mail(), envelope_sender="").automatic  # a null sender: a bounce-like message
    assert read(mail(From="MAILER-DAEMON@example.com")).automatic
    assert not read(mail(Auto_Submitted="no")).automatic


def test_a_reply_keeps_its_own_words_not_the_history_it_quotes():
    found = read(mail("Still nothing arrived.\n\nOn Mon, 1 Dec 2026 Support wrote:\n> We shipped it\n> yesterday"))
    assert found.body(reply=True) == "Still nothing arrived."
    assert read(mail("> only a quote\n> nothing else")).body(reply=True) == "> only a quote\n> nothing else"


def test_long_text_is_cut_at_the_ticket_cap_saying_so():
    found = read(mail("x" * 30_000))
    assert len(found.text) == inbound_mail.MAX_TEXT and found.text.endswith(inbound_mail.TRUNCATED)


def test_unreadable_mail_is_refused_with_a_clear_code():
    for raw, code in (
        (b"", 554),
        (b"   \r\n", 554),
        (mail(From="not an address"), 550),
        (b"just some bytes without headers", 554),
    ):
        with pytest.raises(Refused) as refused:
            read(raw)
        assert refused.value.code == code, raw
        assert refused.value.reply.startswith(f"{code} 5.")


DSN = b"""From: Mail Delivery System <MAILER-DAEMON@mx.example.com>
To: support@crm.local
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-1@mx.example.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com
Arrival-Date: Mon, 1 Dec 2026 10:00:00 +0000

Final-Recipient: rfc822; ali@example.com
Original-Recipient: rfc822;ali@example.com
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <ali@example.com>: Recipient address rejected: User unknown

Final-Recipient: rfc822; later@example.com
Action: delayed
Status: 4.4.1

--B
Content-Type: text/rfc822-headers

From: CRM <crm@localhost>
To: ali@example.com
Subject: How did we do? [#T-1]
Message-ID: <0f6e-msg@crm.local>

--B--
"""

ARF = b"""From: feedback@isp.example
To: support@crm.local
Subject: FW: complaint
Message-ID: <arf-1@isp.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: text/plain

This is an email abuse report.

--F
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Rcpt-To: <bahar@example.com>

--F
Content-Type: message/rfc822

From: CRM <crm@localhost>
To: bahar@example.com
Subject: Our offer
Message-ID: <offer-9@crm.local>

Buy now.
--F--
"""


def test_a_delivery_status_notification_names_our_mail_and_its_permanent_failures():
    report = read(DSN, envelope_sender="")
    assert isinstance(report, DeliveryReport) and report.kind == "bounce"
    assert report.original_message_id == "0f6e-msg@crm.local" and report.key == "id:dsn-1@mx.example.com"
    assert [(r.address, r.action, r.status) for r in report.recipients] == [
        ("ali@example.com", "failed", "5.1.1"),
        ("later@example.com", "delayed", "4.4.1"),
    ]
    assert [r.address for r in report.permanent] == ["ali@example.com"]  # a delay suppresses nothing
    assert (
        redacted(report.permanent[0].diagnostic) == "smtp; 550 5.1.1 <<address>>: Recipient address rejected: "
        "User unknown"
    )


def test_a_complaint_names_our_mail_and_the_recipient():
    report = read(ARF)
    assert isinstance(report, DeliveryReport) and report.kind == "complaint" and report.feedback_type == "abuse"
    assert report.original_message_id == "offer-9@crm.local"
    assert [(r.address, r.action) for r in report.permanent] == [("bahar@example.com", "complained")]


def test_a_report_without_its_status_part_is_refused():
    broken = DSN.replace(b"Content-Type: message/delivery-status", b"Content-Type: text/plain")
    with pytest.raises(Refused) as refused:
        read(broken)
    assert refused.value.code == 554


HEADER_NAMES = st.sampled_from(
    [
        "From",
        "Subject",
        "Message-ID",
        "In-Reply-To",
        "References",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "Auto-Submitted",
        "Sender",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(HEADER_NAMES, st.text(max_size=200)), max_size=8), st.binary(max_size=500))
def test_no_header_or_body_makes_reading_raise_anything_but_refused(headers, body):
    """Whatever a client sends (broken encoded words, charsets, parameters, folding), reading it answers a
    reading or a Refused: never another exception, which would be a 451 and a retry forever."""
    raw = b"".join(f"{name}: {value}".encode("utf-8", "surrogatepass") + b"\r\n" for name, value in headers)
    try:
        found = read(raw + b"\r\n" + body)
    except Refused as refused:
        assert 500 <= refused.code < 600
        return
    assert isinstance(found, (InboundMail, DeliveryReport))
    if isinstance(found, InboundMail):
        assert found.sender and "@" in found.sender and found.subject
        assert len(found.subject) <= inbound_mail.MAX_SUBJECT and len(found.text) <= inbound_mail.MAX_TEXT
        assert not any(ord(ch) < 32 for ch in found.subject)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_subjects_in_any_encoding_decode_to_one_clean_line(subject):
    message = EmailMessage()
    message["From"], message["Message-ID"] = "a@b.example", "<s@b.example>"
    try:
        message["Subject"] = subject
    except ValueError:  # the standard library will not write this header at all
        return
    message.set_content("x")
    found = read(message.as_bytes())
    assert "\n" not in found.subject and "\r" not in found.subject
    expected = inbound_mail.clean_line(subject).strip()[: inbound_mail.MAX_SUBJECT].strip() or "(no subject)"
    assert found.subject == expected
