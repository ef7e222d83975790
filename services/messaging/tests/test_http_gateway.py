"""The SMS HTTP gateway adapter against a real local HTTP server playing the provider:
what the gateway receives, 5xx/429 back-off to the cap, 4xx at once, timeouts, and
repeated delivery receipts. Time is the world's clock; nothing here waits for it."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from crm_messaging.config import MessagingConfig

from .conftest import World


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # JSON; None: {"id": "gw-<n>"}
    delay: float = 0.0  # seconds to sleep before answering (a slow gateway)


@dataclass
class Gateway:
    """A JSON SMS gateway on a free port: records every request, answers from `script` in order."""

    script: list[Answer] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Gateway:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                gateway.requests.append(
                    {"path": self.path, "headers": dict(self.headers.items()), "body": json.loads(raw)}
                )
                answer = gateway.script.pop(0) if gateway.script else Answer()
                time.sleep(answer.delay)
                body = answer.body if answer.body is not None else {"id": f"gw-{len(gateway.requests)}"}
                payload = json.dumps(body).encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up waiting (the timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v2"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def gateway(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """The world's SMS channel configured (through the environment) to go to the local gateway."""
    fake = Gateway().start()
    for key, value in {
        "SMS_PROVIDER": "http",
        "SMS_URL": fake.url,
        "SMS_USERNAME": "crm",
        "SMS_PASSWORD": "s3cret",
        "SMS_FROM": "Acme",
        "SMS_TIMEOUT_SECONDS": "0.5",
    }.items():
        monkeypatch.setenv(f"CRM_MESSAGING_{key}", value)
    world.dispatcher.providers["sms"] = MessagingConfig.from_env().providers()["sms"]
    try:
        yield fake
    finally:
        fake.stop()


def sms(world: World) -> dict:
    reza = world.contact(consents=("sms",), first_name="Reza", phone="+989121234567")
    queued = world.send(contact_id=reza["id"], channel="sms", body="سلام {{ first_name }}", category="transactional")
    assert queued.status_code == 202
    return queued.get_json()


def events(world: World, message_id: str) -> list[str]:
    return [e.type for e in world.messaging.runtime.store.load(message_id)]


def test_a_sent_sms_reaches_the_gateway_with_auth_idempotency_key_and_body(world: World, gateway: Gateway) -> None:
    message = sms(world)
    assert world.dispatch() == 1
    [request] = gateway.requests
    assert request["path"] == "/api/v2/messages"
    assert request["headers"]["Authorization"] == "Basic " + base64.b64encode(b"crm:s3cret").decode()
    assert request["headers"]["Idempotency-Key"] == message["id"]
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == {"to": "+989121234567", "from": "Acme", "text": "سلام Reza", "reference": message["id"]}
    sent = world.get(f"/v1/messages/{message['id']}").get_json()
    assert sent["status"] == "sent" and sent["provider"] == "http-sms" and sent["provider_message_id"] == "gw-1"
    assert sent["attempts"] == 1 and sent["address"] == "+989121234567"


def test_a_delivery_receipt_posted_twice_records_one_delivery(world: World, gateway: Gateway) -> None:
    message = sms(world)
    world.dispatch()
    secret = {"X-Receipt-Secret": world.desk.receipt_secret()}
    receipt = {"provider_message_id": "gw-1", "status": "delivered", "at": "2026-03-02T10:00:05Z"}
    first = world.messaging.client.post("/v1/providers/http-sms/receipts", json=receipt, headers=secret)
    again = world.messaging.client.post("/v1/providers/http-sms/receipts", json=receipt, headers=secret)
    by_ours = world.messaging.client.post(
        "/v1/providers/http-sms/receipts", headers=secret, json={"message_id": message["id"], "status": "delivered"}
    )
    assert first.status_code == again.status_code == by_ours.status_code == 200
    assert first.get_json()["status"] == again.get_json()["status"] == "delivered"
    assert again.get_json()["version"] == first.get_json()["version"] == 3
    assert events(world, message["id"]) == ["MessageQueued", "MessageSent", "MessageDelivered"]
    other = world.messaging.client.post(
        "/v1/providers/smtp/receipts", headers=secret, json={"message_id": message["id"], "status": "delivered"}
    )
    assert other.status_code == 404  # not sent through that provider


def test_gateway_5xx_and_429_are_retried_with_back_off_then_failed_at_the_cap(world: World, gateway: Gateway) -> None:
    gateway.script = [Answer(503, {"error": "down"}), Answer(429, {"error": "slow down"}), Answer(500, {})]
    message = sms(world)  # the world: 3 attempts, back-off 10 s, 20 s
    world.dispatch()
    world.dispatch()  # not due yet
    world.clock.advance(seconds=9)
    world.dispatch()
    assert len(gateway.requests) == 1
    retrying = world.get(f"/v1/messages/{message['id']}").get_json()
    assert retrying["status"] == "queued" and retrying["attempts"] == 1 and retrying["reason"] == "gateway answered 503"
    world.clock.advance(seconds=1)
    world.dispatch()
    world.clock.advance(seconds=19)
    world.dispatch()
    assert len(gateway.requests) == 2
    world.clock.advance(seconds=1)
    world.dispatch()
    assert [r["headers"]["Idempotency-Key"] for r in gateway.requests] == [message["id"]] * 3
    failed = world.get(f"/v1/messages/{message['id']}").get_json()
    assert failed["status"] == "failed" and failed["reason"] == "gave up after 3 attempts: gateway answered 500"
    assert events(world, message["id"]) == [
        "MessageQueued",
        "MessageRetryScheduled",
        "MessageRetryScheduled",
        "MessageFailed",
    ]
    world.clock.advance(hours=2)
    world.dispatch()
    assert len(gateway.requests) == 3  # failed is final


def test_gateway_4xx_fails_at_once_with_the_reason(world: World, gateway: Gateway) -> None:
    gateway.script = [Answer(400, {"error": "invalid destination"})]
    message = sms(world)
    world.dispatch()
    world.clock.advance(hours=1)
    world.dispatch()
    assert len(gateway.requests) == 1
    failed = world.get(f"/v1/messages/{message['id']}").get_json()
    assert failed["status"] == "failed" and failed["reason"] == "gateway rejected the message (400)"
    assert events(world, message["id"]) == ["MessageQueued", "MessageFailed"]


def test_a_gateway_slower_than_the_timeout_is_transient_and_retried_with_the_same_key(
    world: World, gateway: Gateway
) -> None:
    gateway.script = [Answer(200, {"id": "late"}, delay=2.0)]  # the adapter gives up after 0.5 s
    message = sms(world)
    started = time.monotonic()
    world.dispatch()
    assert time.monotonic() - started < 1.9  # the adapter's timeout, not the gateway, ended the wait
    retrying = world.get(f"/v1/messages/{message['id']}").get_json()
    assert retrying["status"] == "queued" and retrying["attempts"] == 1
    assert retrying["reason"] == "gateway unavailable: TimeoutError"
    world.clock.advance(seconds=10)
    world.dispatch()
    assert [r["headers"]["Idempotency-Key"] for r in gateway.requests] == [message["id"]] * 2
    sent = world.get(f"/v1/messages/{message['id']}").get_json()
    assert sent["status"] == "sent" and sent["provider_message_id"] == "gw-2" and sent["attempts"] == 2
    assert events(world, message["id"]) == ["MessageQueued", "MessageRetryScheduled", "MessageSent"]


def test_a_2xx_without_a_readable_answer_is_sent_not_retried(world: World, gateway: Gateway) -> None:
    gateway.script = [Answer(202, "queued")]  # JSON, but not an object with an id
    message = sms(world)
    world.dispatch()
    world.clock.advance(minutes=5)
    world.dispatch()
    assert len(gateway.requests) == 1
    sent = world.get(f"/v1/messages/{message['id']}").get_json()
    assert sent["status"] == "sent" and sent["provider_message_id"] == message["id"]


def test_consent_withdrawn_between_queue_and_send_is_suppressed_and_nothing_is_sent(
    world: World, gateway: Gateway
) -> None:
    sara = world.contact(consents=("email", "sms"), first_name="Sara", email="sara@example.com", phone="+989121234567")
    assert world.desk.directory.consent(sara["id"], "sms").granted
    mail = world.send(contact_id=sara["id"], channel="email", body="news").get_json()
    text = world.send(contact_id=sara["id"], channel="sms", body="news").get_json()
    assert mail["status"] == text["status"] == "queued"
    # withdrawn in contacts after queuing: email through its REST API, sms through its gRPC RecordConsent
    withdrawn = world.contacts.client.put(
        f"/v1/contacts/{sara['id']}/consents/email", json={"status": "withdrawn"}, headers=world.contacts.headers()
    )
    assert withdrawn.status_code == 200
    assert (
        world.desk.directory.record_consent(sara["id"], "sms", "withdrawn", "call_centre").reason == "consent_withdrawn"
    )
    world.dispatch()
    for queued in (mail, text):
        message = world.get(f"/v1/messages/{queued['id']}").get_json()
        assert message["status"] == "suppressed" and message["reason"] == "consent_withdrawn"
        assert events(world, queued["id"]) == ["MessageQueued", "MessageSuppressed"]
    assert gateway.requests == [] and world.mails() == []
