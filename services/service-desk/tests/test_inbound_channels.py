"""The support mailbox and the inbound-SMS webhook on the test servers: real SMTP (smtplib) to the listener,
a fake contacts directory that can find and create contacts."""

from __future__ import annotations

import smtplib
import uuid
from collections.abc import Iterator
from email.message import EmailMessage

import grpc
import pytest
from google.protobuf import json_format

from crm.contacts.v1 import contacts_pb2
from crm_servicedesk import inbound_mail
from crm_servicedesk.app import SERVICE
from crm_servicedesk.commands import TicketDesk
from crm_servicedesk.inbound import InboundConfig, Intake
from crm_servicedesk.inbound_api import secret
from crm_servicedesk.inbound_smtp import InboundSmtp
from crmkit import rpc, stack
from crmkit.testing import ServiceHarness, harness, stored_events

from .conftest import FakeDirectory, serving
from .test_inbound_mail import DSN


class FindingDirectory(FakeDirectory):
    """The fake directory plus FindContacts and CreateContact, as the contacts service answers them."""

    def __init__(self) -> None:
        super().__init__()
        self.created: dict[str, str] = {}  # request id → contact id
        self.down = False

    @rpc.access("read")
    def FindContacts(self, request, context):  # noqa: N802
        if self.down:
            context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        return contacts_pb2.FindContactsResponse(
            contacts=[
                c
                for c in self.contacts.values()
                if c.status == "active"
                and (
                    (request.email and c.email == request.email.lower()) or (request.phone and c.phone == request.phone)
                )
            ]
        )

    @rpc.access("write")
    def CreateContact(self, request, context):  # noqa: N802
        if request.request_id not in self.created:
            contact_id = str(uuid.uuid4())
            self.contacts[contact_id] = contacts_pb2.Contact(
                id=contact_id,
                version=1,
                first_name=request.first_name,
                last_name=request.last_name,
                email=request.email.lower(),
                phone=request.phone,
                status="active",
                tags=list(request.tags),
                attributes=request.attributes,
            )
            self.created[request.request_id] = contact_id
        return self.contacts[self.created[request.request_id]]

    def known(self, contact_id: str, email: str = "", phone: str = "") -> str:
        self.contacts[contact_id] = contacts_pb2.Contact(
            id=contact_id, version=1, first_name="Sara", last_name="Ahmadi", status="active", email=email, phone=phone
        )
        return contact_id


@pytest.fixture
def directory(monkeypatch: pytest.MonkeyPatch) -> Iterator[FindingDirectory]:
    yield from serving(FindingDirectory(), monkeypatch)


@pytest.fixture
def desk(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, directory: FindingDirectory
) -> Iterator[ServiceHarness]:
    monkeypatch.setenv("CRM_LINK_SECRET", "link-secret-" + service_env["CRM_TEST_SUFFIX"])
    with harness(SERVICE, monkeypatch, service_env) as subject:
        yield subject


@pytest.fixture
def mailbox(desk: ServiceHarness, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, Intake]]:
    """The listener on a free port, with a 64 KiB cap."""
    port = stack.free_port()
    monkeypatch.setenv("CRM_SERVICEDESK_INBOUND_SMTP_PORT", str(port))
    monkeypatch.setenv("CRM_SERVICEDESK_INBOUND_MAX_BYTES", str(64 * 1024))
    config = InboundConfig.from_env()
    intake = Intake(TicketDesk(desk.runtime), config)
    with InboundSmtp(intake, config):
        yield port, intake


def compose(
    sender: str = "sara@example.com",
    subject: str = "سفارش نرسیده",
    body: str = "سفارش من نرسیده است",
    message_id: str | None = None,
    **headers: str,
) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, "support@crm.local", subject
    message["Message-ID"] = message_id or f"<{uuid.uuid4()}@example.com>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message


def send(port: int, message: EmailMessage | bytes, sender: str = "sara@example.com") -> tuple[int, str]:
    """Hand a mail over by SMTP; (code, text) of the reply to DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        client.mail(sender)
        client.rcpt("support@crm.local")
        raw = message.as_bytes() if isinstance(message, EmailMessage) else message
        try:  # SMTP lines end in CRLF (smtplib leaves bytes as they are)
            code, text = client.data(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        except smtplib.SMTPDataError as refused:  # smtplib raises for any answer but 250
            code, text = refused.smtp_code, refused.smtp_error
        return code, text.decode()


def tickets(desk: ServiceHarness) -> list[dict]:
    return stored_events(desk.runtime.db["events"], type="TicketOpened")


def test_a_mail_from_a_known_contact_opens_an_email_ticket_once(desk, directory, mailbox):
    port, _ = mailbox
    cid = directory.known("c-sara", email="sara@example.com")
    message = compose(message_id="<first@example.com>")
    code, text = send(port, message)
    assert code == 250, text
    opened = tickets(desk)
    assert len(opened) == 1
    ticket = desk.client.get(f"/v1/tickets/{opened[0]['stream_id']}", headers=desk.headers()).get_json()
    assert (ticket["contact_id"], ticket["channel"], ticket["type"], ticket["priority"]) == (
        cid,
        "email",
        "question",
        "normal",
    )
    assert ticket["subject"] == "سفارش نرسیده" and ticket["description"] == "سفارش من نرسیده است"
    assert send(port, message)[0] == 250  # the sender's retry: the same Message-ID again
    assert len(tickets(desk)) == 1


def test_a_reply_with_the_ticket_tag_or_our_message_id_is_the_contacts_comment(desk, directory, mailbox):
    port, _ = mailbox
    cid = directory.known("c-sara", email="sara@example.com")
    assert send(port, compose())[0] == 250
    ticket_id = tickets(desk)[0]["stream_id"]
    reply = compose(
        subject=f"Re: سفارش نرسیده [#{ticket_id}]",
        body="هنوز نرسیده\n\nOn Mon, 1 Dec 2026 Support wrote:\n> we shipped it",
    )
    assert send(port, reply)[0] == 250
    assert send(port, reply)[0] == 250  # the retry adds nothing
    ours = f"<m-1{inbound_mail.THREAD_MARK}{inbound_mail.thread_token(ticket_id)}@crm.local>"
    assert send(port, compose(subject="Re: your survey", body="again", In_Reply_To=ours))[0] == 250
    view = desk.client.get(f"/v1/tickets/{ticket_id}", headers=desk.headers()).get_json()
    assert [(c["author_type"], c["author"], c["public"], c["body"]) for c in view["comments"]] == [
        ("customer", f"contact:{cid}", True, "هنوز نرسیده"),
        ("customer", f"contact:{cid}", True, "again"),
    ]
    assert len(tickets(desk)) == 1


def test_a_tag_naming_someone_elses_ticket_opens_a_new_ticket(desk, directory, mailbox):
    port, _ = mailbox
    directory.known("c-sara", email="sara@example.com")
    directory.known("c-omid", email="omid@example.com")
    assert send(port, compose())[0] == 250
    saras = tickets(desk)[0]["stream_id"]
    assert (
        send(port, compose(sender="omid@example.com", subject=f"Re: [#{saras}] let me in"), sender="omid@example.com")[
            0
        ]
        == 250
    )
    opened = tickets(desk)
    assert len(opened) == 2
    assert desk.client.get(f"/v1/tickets/{saras}", headers=desk.headers()).get_json()["comments"] == []


def test_an_unknown_sender_becomes_a_contact_marked_as_made_by_inbound_mail(desk, directory, mailbox):
    port, _ = mailbox
    assert send(port, compose(sender="Bahar Karimi <bahar@example.com>"), sender="bahar@example.com")[0] == 250
    assert send(port, compose(sender="bahar@example.com"), sender="bahar@example.com")[0] == 250
    assert list(directory.created) == ["inbound:email:bahar@example.com"]  # two mails, one contact
    made = directory.contacts[directory.created["inbound:email:bahar@example.com"]]
    assert (made.first_name, made.last_name, made.email, list(made.tags)) == (
        "Bahar",
        "Karimi",
        "bahar@example.com",
        ["inbound"],
    )
    assert json_format.MessageToDict(made.attributes) == {"source": "inbound_email"}
    assert {t["data"]["contact_id"] for t in tickets(desk)} == {made.id}


def test_bad_mail_is_refused_with_a_clear_code_and_stores_nothing(desk, directory, mailbox):
    port, _ = mailbox
    directory.known("c-sara", email="sara@example.com")
    code, text = send(port, compose(body=("x" * 70 + "\n") * 1500))  # the cap is announced with SIZE and enforced
    assert code == 552, text
    code, text = send(port, b"Subject: who am I\r\nMessage-ID: <x@y>\r\n\r\nno From here\r\n")
    assert code == 550 and "From" in text
    code, text = send(port, compose(Auto_Submitted="auto-replied"))
    assert code == 250 and "nothing to record" in text
    directory.down = True
    code, text = send(port, compose())
    assert code == 451 and "try again" in text  # contacts unreachable: the sender keeps the mail and retries
    assert tickets(desk) == [] and stored_events(desk.runtime.db["events"]) == []


def test_a_bounce_mailed_back_is_one_report_for_messaging_without_the_address(desk, directory, mailbox):
    port, _ = mailbox
    assert send(port, DSN, sender="")[0] == 250
    assert send(port, DSN, sender="")[0] == 250
    reports = stored_events(desk.runtime.db["events"], type="MailReportReceived")
    assert len(reports) == 1
    data = reports[0]["data"]
    assert (data["kind"], data["original_message_id"]) == ("bounce", "0f6e-msg@crm.local")
    assert data["recipients"] == [
        {
            "action": "failed",
            "status": "5.1.1",
            "diagnostic": ("smtp; 550 5.1.1 <<address>>: Recipient address rejected: User unknown"),
        }
    ]
    assert "ali@example.com" not in str(reports[0])
    assert tickets(desk) == []


def test_the_listener_survives_a_client_that_hangs_up_mid_mail(desk, directory, mailbox):
    port, _ = mailbox
    directory.known("c-sara", email="sara@example.com")
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.ehlo()
    client.mail("sara@example.com")
    client.rcpt("support@crm.local")
    client.putcmd("data")
    client.getreply()
    client.send(b"From: sara@example.com\r\nSubject: half\r\n\r\nhalf a mail")
    client.close()
    assert send(port, compose())[0] == 250
    assert len(tickets(desk)) == 1


# --- SMS ----------------------------------------------------------------------------------------------


def sms(desk: ServiceHarness, body: dict, secret_value: str | None = None):
    headers = {} if secret_value == "" else {"X-Inbound-Secret": secret_value or secret(InboundConfig.from_env())}
    return desk.client.post("/v1/inbound/sms", json=body, headers=headers)


def test_an_sms_opens_an_sms_ticket_and_the_next_one_is_a_comment_on_it(desk, directory):
    cid = directory.known("c-sara", phone="+989121234567")
    first = sms(desk, {"provider_message_id": "sms-1", "from": "+989121234567", "text": "کالا خراب رسید"})
    assert first.status_code == 200, first.get_json()
    answer = first.get_json()
    assert (answer["outcome"], answer["contact_id"], answer["duplicate"]) == ("ticket", cid, False)
    again = sms(desk, {"provider_message_id": "sms-1", "from": "+989121234567", "text": "کالا خراب رسید"})
    assert again.get_json() == {**answer, "duplicate": True}
    reply = sms(desk, {"provider_message_id": "sms-2", "from": "+989121234567", "text": "عکسش را فرستادم"})
    assert reply.get_json()["outcome"] == "comment" and reply.get_json()["ticket_id"] == answer["ticket_id"]
    view = desk.client.get(f"/v1/tickets/{answer['ticket_id']}", headers=desk.headers()).get_json()
    assert (view["channel"], view["subject"], view["description"]) == ("sms", "کالا خراب رسید", "کالا خراب رسید")
    assert [c["body"] for c in view["comments"]] == ["عکسش را فرستادم"]


def test_an_sms_from_a_stranger_makes_a_contact_and_bad_calls_store_nothing(desk, directory):
    made = sms(desk, {"provider_message_id": "sms-9", "from": "+989351112233", "text": "hello"})
    assert made.status_code == 200 and list(directory.created) == ["inbound:sms:+989351112233"]
    before = [e["event_id"] for e in stored_events(desk.runtime.db["events"])]
    call = {"provider_message_id": "sms-10", "from": "+989351112233", "text": "x"}
    assert sms(desk, call, "wrong").status_code == 401 and sms(desk, call, "").status_code == 401
    bad = sms(desk, {"provider_message_id": "", "from": "not a phone", "text": "   ", "extra": 1})
    assert bad.status_code == 422
    assert set(bad.get_json()["errors"]) == {"provider_message_id", "from", "text", "extra"}
    directory.down = True
    assert sms(desk, {"provider_message_id": "sms-11", "from": "+989351112233", "text": "x"}).status_code == 503
    assert [e["event_id"] for e in stored_events(desk.runtime.db["events"])] == before
