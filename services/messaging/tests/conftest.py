"""Fixtures: the real contacts service in-process (REST client + gRPC on a free port), the
messaging service wired to it, local sinks in a temp folder, and a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crm_contacts.app import SERVICE as CONTACTS
from crm_contacts.commands import ContactBook
from crm_contacts.grpc_api import register as register_contacts
from crm_contacts.segment_commands import SegmentBook
from crm_messaging import api
from crm_messaging.app import SERVICE as MESSAGING
from crm_messaging.commands import MessageDesk
from crm_messaging.config import MessagingConfig
from crm_messaging.dispatcher import Dispatcher
from crm_messaging.sinks import SmtpSink
from crmkit import rpc, stack
from crmkit.testing import ServiceHarness, isolate
from crmkit.web import create_app


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class World:
    contacts: ServiceHarness
    messaging: ServiceHarness
    desk: MessageDesk
    dispatcher: Dispatcher
    clock: Clock
    mail_dir: Path
    outbox_dir: Path

    def contact(self, consents: tuple[str, ...] = ("email",), **fields: object) -> dict:
        response = self.contacts.client.post("/v1/contacts", json=fields, headers=self.contacts.headers())
        assert response.status_code == 201, response.get_json()
        contact = response.get_json()
        for channel in consents:
            put = self.contacts.client.put(f"/v1/contacts/{contact['id']}/consents/{channel}",
                                           json={"status": "granted"}, headers=self.contacts.headers())
            assert put.status_code == 200
        return contact

    def send(self, key: str | None = None, **body: object):
        headers = self.messaging.headers(**({"Idempotency-Key": key} if key else {}))
        return self.messaging.client.post("/v1/messages", json=body, headers=headers)

    def get(self, path: str):
        return self.messaging.client.get(path, headers=self.messaging.headers())

    def dispatch(self) -> int:
        total = 0
        while handled := self.dispatcher.run_once():
            total += handled
        return total

    def mails(self) -> list[Path]:
        return sorted(self.mail_dir.glob("*.eml")) if self.mail_dir.exists() else []


@pytest.fixture
def world(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    suffix = service_env["CRM_TEST_SUFFIX"]
    isolate(monkeypatch, "contacts", suffix)
    contacts = ServiceHarness(CONTACTS)
    grpc_port, smtp_port = stack.free_port(), stack.free_port()
    server, _ = rpc.build_server("contacts", grpc_port, lambda srv: register_contacts(
        srv, ContactBook(contacts.runtime), SegmentBook(contacts.runtime)))
    server.start()
    env = {"CRM_CONTACTS_GRPC_TARGET": f"127.0.0.1:{grpc_port}", "CRM_MESSAGING_SMTP_PORT": str(smtp_port),
           "CRM_MESSAGING_MAIL_DIR": str(tmp_path / "mail"), "CRM_MESSAGING_OUTBOX_DIR": str(tmp_path / "outbox"),
           "CRM_MESSAGING_PUBLIC_URL": "http://crm.test", "CRM_MESSAGING_BACKOFF_SECONDS": "10",
           "CRM_MESSAGING_MAX_ATTEMPTS": "3"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    isolate(monkeypatch, "messaging", suffix)
    messaging = ServiceHarness(MESSAGING)
    clock = Clock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))  # 13:30 in Tehran: not quiet
    desk = MessageDesk(messaging.runtime, MessagingConfig.from_env(), clock=clock)
    messaging.app = create_app(messaging.runtime, [api.blueprint(desk)], title="t", description="d")
    messaging.client = messaging.app.test_client()  # the api on the test's clock too
    sink = SmtpSink(tmp_path / "mail", smtp_port).start()
    try:
        yield World(contacts, messaging, desk, Dispatcher(desk), clock, tmp_path / "mail", tmp_path / "outbox")
    finally:
        sink.stop()
        server.stop(grace=None)
        messaging.close()
        contacts.close()
