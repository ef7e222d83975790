"""Fixtures: the real contacts service in-process (REST client + gRPC on a free port), the
messaging service wired to it, local sinks in a temp folder, and a clock the test moves."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crm_contacts.app import SERVICE as CONTACTS
from crm_contacts.grpc_api import register as register_contacts
from crm_contacts.records.commands import ContactBook
from crm_contacts.records.domain import Contact
from crm_contacts.records.projections import projections as contact_projections
from crm_contacts.segments.commands import SegmentBook
from crm_messaging import api
from crm_messaging.app import SERVICE as MESSAGING
from crm_messaging.commands import MessageDesk
from crm_messaging.config import MessagingConfig
from crm_messaging.dispatcher import Dispatcher
from crm_messaging.sinks import DELIVERIES, SmtpSink
from crmkit import rpc, stack
from crmkit.events import Metadata, new_id, rfc3339
from crmkit.testing import ServiceHarness, isolate, start_service_process, stored_events
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
            put = self.contacts.client.put(
                f"/v1/contacts/{contact['id']}/consents/{channel}",
                json={"status": "granted"},
                headers=self.contacts.headers(),
            )
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

    def deliveries(self) -> Counter[str]:
        """How many times the SMTP sink accepted a mail for each message id (a retried send
        overwrites its .eml file, but is counted here)."""
        log = self.mail_dir / DELIVERIES
        lines = log.read_text(encoding="ascii").split() if log.exists() else []
        return Counter(line.removesuffix("_crm.local") for line in lines)


@dataclass
class Audience:
    members: set[str]  # contact ids in the segment
    without_consent: set[str]  # members without email consent: their messages are suppressed


def bulk_audience(world: World, size: int, tag: str, batch: int = 1000) -> Audience:
    """`size` contacts tagged `tag` (every 7th without email consent) plus a few outside,
    written the way the bulk import writes them: real ContactCreated/ContactConsentChanged
    events in one `start_streams` insert per batch; then the contacts projections applied."""
    store = world.contacts.runtime.store
    meta = Metadata(actor="test:bulk", correlation_id=new_id())
    at = rfc3339(world.clock())
    audience = Audience(set(), set())
    streams = []
    for i in range(size + 5):
        contact = Contact.create(
            new_id(),
            {"first_name": f"Person{i}", "email": f"p{i}@example.com", "tags": [tag] if i < size else ["other"]},
        )
        if i % 7 == 3 and i < size:
            audience.without_consent.add(contact.id)
        else:
            contact.set_consent(
                "email", {"status": "granted", "source": "web_form", "legal_basis": "consent", "at": at}
            )
        if i < size:
            audience.members.add(contact.id)
        streams.append((contact.id, Contact.aggregate_type, contact.pending))
        if len(streams) == batch:
            store.start_streams(streams, meta)
            streams = []
    if streams:
        store.start_streams(streams, meta)
    runtime = world.contacts.runtime
    views = contact_projections(runtime.db, store, runtime.settings.topic)
    for events in store.scan(batch_size=batch):
        for view in views:
            view.handle(events)
    return audience


def launch_campaign(world: World, tag: str, throttle_per_minute: int) -> str:
    """An email campaign to the segment of contacts tagged `tag`, launched now over REST."""
    segment = world.contacts.client.post(
        "/v1/segments",
        json={"name": tag, "rules": {"all": [{"field": "tags", "op": "contains", "value": tag}]}},
        headers=world.contacts.headers(),
    ).get_json()
    h = world.messaging.headers()
    template = world.messaging.client.post(
        "/v1/templates",
        json={
            "name": tag,
            "channel": "email",
            "default_locale": "en",
            "variants": {"en": {"subject": "News for {{ first_name }}", "body": "It is here."}},
        },
        headers=h,
    ).get_json()
    campaign = world.messaging.client.post(
        "/v1/campaigns",
        json={
            "name": tag,
            "segment_id": segment["id"],
            "template_id": template["id"],
            "channel": "email",
            "throttle_per_minute": throttle_per_minute,
        },
        headers=h,
    ).get_json()
    assert world.messaging.client.post(f"/v1/campaigns/{campaign['id']}/launch", json={}, headers=h).status_code == 200
    return campaign["id"]


def every_member_accounted_for_once(world: World, campaign_id: str, audience: Audience) -> set[str]:
    """Check from the events: one message per member, one outcome per message (sent, or
    suppressed exactly for those without consent), nothing failed; returns the sent ids."""
    size = len(audience.members)
    events = world.messaging.runtime.db["events"]
    [targeted] = [
        e["data"]["targeted"] for e in stored_events(events, {"stream_id": campaign_id}, type="CampaignTargeted")
    ]
    assert targeted == size
    queued = stored_events(events, type="MessageQueued")
    assert all(e["data"]["campaign_id"] == campaign_id for e in queued)
    assert len(queued) == len({e["stream_id"] for e in queued}) == size
    assert {e["data"]["contact_id"] for e in queued} == audience.members
    contact_of = {e["stream_id"]: e["data"]["contact_id"] for e in queued}

    outcomes = [e for e in stored_events(events) if e["type"] in ("MessageSent", "MessageSuppressed", "MessageFailed")]
    by_type = Counter(e["type"] for e in outcomes)
    assert by_type["MessageSent"] + by_type["MessageSuppressed"] == size and not by_type["MessageFailed"]
    assert len({e["stream_id"] for e in outcomes}) == size  # one outcome per message
    assert len({contact_of[e["stream_id"]] for e in outcomes}) == size  # one per contact
    suppressed = {contact_of[e["stream_id"]] for e in outcomes if e["type"] == "MessageSuppressed"}
    assert suppressed == audience.without_consent
    assert {e["data"]["reason"] for e in outcomes if e["type"] == "MessageSuppressed"} == {"no_consent_recorded"}
    return {e["stream_id"] for e in outcomes if e["type"] == "MessageSent"}


class Worker:
    """The real messaging worker process (`crm serve messaging worker`), started and killed at will."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = start_service_process("messaging", "worker", self.env)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def world(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    suffix = service_env["CRM_TEST_SUFFIX"]
    isolate(monkeypatch, "contacts", suffix)
    contacts = ServiceHarness(CONTACTS)
    grpc_port, smtp_port = stack.free_port(), stack.free_port()
    server, _ = rpc.build_server(
        "contacts",
        grpc_port,
        lambda srv: register_contacts(srv, ContactBook(contacts.runtime), SegmentBook(contacts.runtime)),
    )
    server.start()
    env = {
        "CRM_CONTACTS_GRPC_TARGET": f"127.0.0.1:{grpc_port}",
        "CRM_MESSAGING_SMTP_PORT": str(smtp_port),
        "CRM_MESSAGING_MAIL_DIR": str(tmp_path / "mail"),
        "CRM_MESSAGING_OUTBOX_DIR": str(tmp_path / "outbox"),
        "CRM_MESSAGING_PUBLIC_URL": "http://crm.test",
        "CRM_MESSAGING_BACKOFF_SECONDS": "10",
        "CRM_MESSAGING_MAX_ATTEMPTS": "3",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    isolate(monkeypatch, "messaging", suffix)
    monkeypatch.setenv("CRM_SERVICE_NAME", "messaging")  # its calls to contacts speak for messaging
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
