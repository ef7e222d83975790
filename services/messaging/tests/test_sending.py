"""The send pipeline end to end: REST → MessageQueued → the dispatcher (consent over the real
contacts gRPC, quiet hours, rendering) → a real SMTP server / the file sink → receipts."""

from __future__ import annotations

import email
import json
from email import policy

import grpc

from crm.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from crm_messaging.grpc_api import register
from crm_messaging.providers import Outgoing, Transient
from crmkit import rpc, stack
from crmkit.testing import stored_events

from .conftest import World


def template(world: World, channel: str = "email", **extra: object) -> dict:
    body = {
        "name": "Hello",
        "channel": channel,
        "default_locale": "en",
        "variants": {
            "en": {"subject": "Hi {{ first_name }}", "body": "Dear {{ name }} of {{ company }}, ref {{ ref }}."},
            "fa": {"subject": "سلام {{ first_name }}", "body": "{{ name }} عزیز، کد {{ ref }}"},
        },
        **extra,
    }
    response = world.messaging.client.post("/v1/templates", json=body, headers=world.messaging.headers())
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_an_email_goes_through_smtp_in_the_contacts_language_and_is_tracked(world: World) -> None:
    sara = world.contact(first_name="سارا", last_name="رضایی", email="sara@example.com", locale="fa-IR")
    tpl = template(world)
    queued = world.send(
        contact_id=sara["id"], channel="email", template_id=tpl["id"], variables={"ref": "A-7", "company": "Acme"}
    )
    assert queued.status_code == 202 and queued.get_json()["status"] == "queued"
    assert queued.headers["Location"] == f"/v1/messages/{queued.get_json()['id']}"
    assert world.dispatch() == 1

    [eml] = world.mails()
    mail = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert mail["To"] == "sara@example.com" and mail["Subject"] == "سلام سارا"
    assert "سارا رضایی عزیز، کد A-7" in mail.get_content()
    assert "http://crm.test/v1/unsubscribe/" in mail.get_content() and mail["List-Unsubscribe"]

    message = world.get(f"/v1/messages/{queued.get_json()['id']}").get_json()
    assert message["status"] == "sent" and message["provider"] == "smtp" and message["address"] == "sara@example.com"
    receipt = world.messaging.client.post(
        "/v1/providers/smtp/receipts",
        json={"message_id": message["id"], "status": "delivered"},
        headers={"X-Receipt-Secret": world.desk.receipt_secret()},
    )
    assert receipt.status_code == 200 and receipt.get_json()["status"] == "delivered"
    events = [e.type for e in world.messaging.runtime.store.load(message["id"])]
    assert events == ["MessageQueued", "MessageSent", "MessageDelivered"]


def test_no_consent_is_suppressed_with_the_reason_never_dropped(world: World) -> None:
    ali = world.contact(consents=(), first_name="Ali", email="ali@example.com", phone="+989121234567")
    one = world.send(contact_id=ali["id"], channel="email", body="hello").get_json()
    world.contacts.client.put(
        f"/v1/contacts/{ali['id']}/consents/sms", json={"status": "withdrawn"}, headers=world.contacts.headers()
    )
    two = world.send(contact_id=ali["id"], channel="sms", body="hello").get_json()
    world.dispatch()
    assert world.get(f"/v1/messages/{one['id']}").get_json()["reason"] == "no_consent_recorded"
    suppressed = world.get(f"/v1/messages/{two['id']}").get_json()
    assert suppressed["status"] == "suppressed" and suppressed["reason"] == "consent_withdrawn"
    assert world.mails() == [] and not world.outbox_dir.exists()


def test_sms_waits_for_the_end_of_quiet_hours_in_the_contacts_time_zone(world: World) -> None:
    reza = world.contact(consents=("sms",), first_name="Reza", phone="+989121234567", time_zone="Asia/Tehran")
    world.clock.now = world.clock.now.replace(hour=19)  # 22:30 in Tehran
    sms = world.send(contact_id=reza["id"], channel="sms", body="سلام {{ first_name }}").get_json()
    world.dispatch()
    assert world.get(f"/v1/messages/{sms['id']}").get_json()["status"] == "queued"
    world.clock.advance(hours=9, minutes=29)  # 07:59 in Tehran
    world.dispatch()
    assert world.get(f"/v1/messages/{sms['id']}").get_json()["status"] == "queued"
    world.clock.advance(minutes=1)
    world.dispatch()
    sent = json.loads((world.outbox_dir / "sms" / f"{sms['id']}.json").read_text(encoding="utf-8"))
    assert sent == {"id": sms["id"], "channel": "sms", "to": "+989121234567", "subject": None, "text": "سلام Reza"}


def test_transient_failures_back_off_then_fail_at_the_cap(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    attempts: list[str] = []

    class Flaky:
        name = "flaky"

        def send(self, message: Outgoing) -> str:
            attempts.append(message.key)
            raise Transient("try later")

        def close(self) -> None:
            pass

    world.dispatcher.providers["email"] = Flaky()
    queued = world.send(contact_id=sara["id"], channel="email", body="hi", category="transactional").get_json()
    world.dispatch()
    world.dispatch()  # not due again yet
    assert len(attempts) == 1
    world.clock.advance(seconds=10)
    world.dispatch()
    world.clock.advance(seconds=19)  # second back-off is 20 s
    world.dispatch()
    assert len(attempts) == 2
    world.clock.advance(seconds=1)
    world.dispatch()
    assert attempts == [queued["id"]] * 3  # the same idempotency key every time
    message = world.get(f"/v1/messages/{queued['id']}").get_json()
    assert message["status"] == "failed" and "gave up after 3 attempts" in message["reason"]


def test_a_repeated_request_or_dispatch_never_sends_twice(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    first = world.send("key-1", contact_id=sara["id"], channel="email", body="once")
    again = world.send("key-1", contact_id=sara["id"], channel="email", body="once")
    assert first.status_code == again.status_code == 202
    assert again.headers.get("Idempotent-Replayed") == "true" and again.get_json()["id"] == first.get_json()["id"]
    world.dispatch()
    # the job comes back (a lease ran out, another worker, a redelivery): nothing is sent again
    world.messaging.runtime.db["schedule"].update_one(
        {"_id": first.get_json()["id"]}, {"$set": {"state": "pending", "lease_ms": 0}}
    )
    world.dispatch()
    assert len(world.mails()) == 1
    assert [e.type for e in world.messaging.runtime.store.load(first.get_json()["id"])] == [
        "MessageQueued",
        "MessageSent",
    ]


def test_unsubscribe_link_withdraws_consent_in_contacts(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    world.send(contact_id=sara["id"], channel="email", body="news")
    world.dispatch()
    body = email.message_from_bytes(world.mails()[0].read_bytes(), policy=policy.default).get_content()
    path = body.split("http://crm.test", 1)[1].split()[0]
    page = world.messaging.client.get(path)  # the link in the body asks first (test_one_click_unsubscribe.py)
    assert page.status_code == 200 and world.desk.directory.consent(sara["id"], "email").granted
    confirmed = world.messaging.client.post(path, data={"List-Unsubscribe": "One-Click"})  # the page's form
    assert confirmed.status_code == 200 and "no longer receive email" in confirmed.get_data(as_text=True)
    assert world.desk.directory.consent(sara["id"], "email").reason == "consent_withdrawn"
    assert world.messaging.client.get(path[:-3] + "abc").status_code == 404
    after = world.send(contact_id=sara["id"], channel="email", body="more news").get_json()
    world.dispatch()
    assert world.get(f"/v1/messages/{after['id']}").get_json()["status"] == "suppressed"


def test_bad_input_is_a_problem_never_a_500(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    tpl = template(world)
    bad = [
        ("/v1/messages", {"contact_id": sara["id"], "channel": "pigeon", "body": "x"}, 422, {"channel"}),
        ("/v1/messages", {"contact_id": sara["id"], "channel": "email"}, 422, {"body"}),
        ("/v1/messages", {"contact_id": "nobody", "channel": "email", "body": "x"}, 422, {"contact_id"}),
        ("/v1/messages", {"contact_id": sara["id"], "channel": "email", "template_id": "nope"}, 422, {"template_id"}),
        ("/v1/messages", {"contact_id": sara["id"], "channel": "sms", "template_id": tpl["id"]}, 422, {"template_id"}),
        ("/v1/messages", {"contact_id": sara["id"], "channel": "email", "body": "{{ x.__class__ }}"}, 422, None),
        (
            "/v1/messages",
            {"contact_id": sara["id"], "channel": "email", "body": "x", "variables": {"a": {"b": 1}}},
            422,
            {"variables"},
        ),
        (
            "/v1/templates",
            {
                "name": "x",
                "channel": "email",
                "default_locale": "en",
                "variants": {"en": {"body": "{{ ''.__class__.__mro__ }}"}},
            },
            422,
            {"variants.en.body"},
        ),
        (
            "/v1/templates",
            {"name": "x", "channel": "email", "default_locale": "de", "variants": {"en": {"body": "hi"}}},
            422,
            {"default_locale"},
        ),
        ("/v1/templates", {"name": "", "channel": "fax", "variants": {}}, 422, {"name", "default_locale", "variants"}),
        (
            "/v1/triggers",
            {"name": "t", "event_type": "TicketSolved", "template_id": tpl["id"], "channel": "email"},
            422,
            {"event_type"},
        ),
        (
            "/v1/campaigns",
            {"name": "c", "segment_id": "s", "template_id": tpl["id"], "channel": "email", "throttle_per_minute": 0},
            422,
            {"throttle_per_minute"},
        ),
        ("/v1/templates/preview", {"template_id": tpl["id"], "contact_id": "../x"}, 422, {"contact_id"}),
    ]
    for path, body, status, fields in bad:
        response = world.messaging.client.post(path, json=body, headers=world.messaging.headers())
        assert response.status_code == status, (path, body, response.get_json())
        if fields:
            assert set(response.get_json()["errors"]) == fields, (body, response.get_json())
    h = world.messaging.headers()
    assert world.messaging.client.post("/v1/messages", data="{", headers=h).status_code == 400
    assert world.messaging.client.post("/v1/messages", json={}).status_code == 401
    reader = world.messaging.headers("messaging:read")
    assert world.messaging.client.post("/v1/messages", json={}, headers=reader).status_code == 403
    assert world.get("/v1/messages/nope").status_code == 404
    assert world.get("/v1/messages?limit=0").status_code == 422
    assert world.get("/v1/campaigns/nope").status_code == 404
    receipt = {"message_id": "nope", "status": "delivered"}
    assert world.messaging.client.post("/v1/providers/smtp/receipts", json=receipt).status_code == 401
    assert (
        world.messaging.client.post(
            "/v1/providers/smtp/receipts", json=receipt, headers={"X-Receipt-Secret": "wrong"}
        ).status_code
        == 401
    )
    secret = {"X-Receipt-Secret": world.desk.receipt_secret()}
    assert world.messaging.client.post("/v1/providers/smtp/receipts", json=receipt, headers=secret).status_code == 404
    assert (
        world.messaging.client.post("/v1/providers/smtp/receipts", json={"status": "lost"}, headers=secret).status_code
        == 422
    )
    queued = world.send(contact_id=sara["id"], channel="email", body="x").get_json()
    early = world.messaging.client.post(
        "/v1/providers/smtp/receipts", json={"message_id": queued["id"], "status": "delivered"}, headers=secret
    )
    assert early.status_code == 409  # not sent yet


def test_preview_renders_with_a_contacts_data_and_sends_nothing(world: World) -> None:
    sara = world.contact(first_name="سارا", email="sara@example.com", locale="fa")
    tpl = template(world)
    response = world.messaging.client.post(
        "/v1/templates/preview",
        json={"template_id": tpl["id"], "contact_id": sara["id"], "locale": "fa", "variables": {"ref": "۷"}},
        headers=world.messaging.headers(),
    )
    assert response.get_json() == {"locale": "fa", "subject": "سلام سارا", "body": "سارا عزیز، کد ۷"}
    assert world.mails() == []


def test_grpc_message_status_and_erasure_scrubs_what_was_sent(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    queued = world.send("erase-me", contact_id=sara["id"], channel="email", body="Dear {{ first_name }}").get_json()
    world.dispatch()
    world.messaging.project()
    port = stack.free_port()
    server, _ = rpc.build_server("messaging", port, lambda srv: register(srv, world.desk))
    server.start()
    channel = rpc.channel(f"127.0.0.1:{port}", audience="messaging", caller="contacts")  # as the 360 calls
    stub = messaging_pb2_grpc.MessageStatusStub(channel)
    try:
        found = stub.GetMessage(messaging_pb2.GetMessageRequest(message_id=queued["id"]), timeout=5)
        assert found.status == "sent" and found.contact_id == sara["id"] and found.channel == "email"
        listed = stub.ListContactMessages(messaging_pb2.ListContactMessagesRequest(contact_id=sara["id"]), timeout=5)
        assert [m.id for m in listed.messages] == [queued["id"]]
        for bad, code in (
            (messaging_pb2.GetMessageRequest(message_id="nope"), grpc.StatusCode.NOT_FOUND),
            (messaging_pb2.GetMessageRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        ):
            try:
                stub.GetMessage(bad, timeout=5)
                raise AssertionError("expected an error")
            except grpc.RpcError as exc:
                assert exc.code() == code
    finally:
        channel.close()
        server.stop(grace=None)

    stored_responses = world.messaging.runtime.db["idempotency_keys"]
    resource = {"resource": f"/v1/messages/{queued['id']}"}
    assert stored_responses.count_documents(resource) == 1
    before = world.get(f"/v1/messages/{queued['id']}").get_json()
    assert before["body"].startswith("Dear Sara") and before["address"] == "sara@example.com"

    world.desk.erase_contact(sara["id"])  # what LocalContacts does on ContactErased
    scrubbed = world.get(f"/v1/messages/{queued['id']}").get_json()
    assert scrubbed["status"] == "sent" and scrubbed["body"] is None and scrubbed["address"] is None
    assert stored_responses.count_documents(resource) == 0  # the stored 202 (with the queued body) is gone too
    [stored] = stored_events(world.messaging.runtime.db["events"], {"stream_id": queued["id"]}, type="MessageSent")
    assert "sara@example.com" not in json.dumps(stored["data"])  # sealed on the way in, not only after erasure
