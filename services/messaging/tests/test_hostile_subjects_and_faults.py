"""Hostile input and faults in the send pipeline: a subject is one line (refused with a 422
when given, a message failing alone when a variable breaks it); one message that cannot be
composed or handed over fails alone, and the pass goes on without sending anything twice
(deliveries counted per message id at the SMTP sink)."""

from __future__ import annotations

from typing import Any

import pytest

from crm_messaging.domain import Message
from crm_messaging.providers import Outgoing, Provider
from crmkit.testing import stored_events

from .conftest import World

BROKEN = [
    "Bad\nsubject",
    "carriage\rreturn",
    "tab\there",
    "nul\x00",
    "line\u2028separator",
    "para\u2029graph",
    "next\x85line",
]


def problems(response) -> dict:
    assert response.status_code == 422, response.get_json()
    return response.get_json()["errors"]


def email_template(world: World, subject: str) -> dict:
    response = world.messaging.client.post(
        "/v1/templates",
        json={
            "name": "t",
            "channel": "email",
            "default_locale": "en",
            "category": "transactional",
            "variants": {"en": {"subject": subject, "body": "Dear {{ first_name }}"}},
        },
        headers=world.messaging.headers(),
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_a_subject_that_is_not_one_line_is_refused_naming_the_field(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    h = world.messaging.headers()
    saved = email_template(world, "fine")
    for subject in BROKEN:
        message = world.send(contact_id=sara["id"], channel="email", subject=subject, body="hi")
        assert set(problems(message)) == {"subject"}, subject
        template = {
            "name": "t",
            "channel": "email",
            "default_locale": "en",
            "variants": {"en": {"subject": "fine", "body": "hi"}, "fa": {"subject": subject, "body": "hi"}},
        }
        created = world.messaging.client.post("/v1/templates", json=template, headers=h)
        assert set(problems(created)) == {"variants.fa.subject"}, subject
        patch = {"variants": {"en": {"subject": subject, "body": "hi"}}}
        changed = world.messaging.client.patch(f"/v1/templates/{saved['id']}", json=patch, headers=h)
        assert set(problems(changed)) == {"variants.en.subject"}, subject
        preview = world.messaging.client.post(
            "/v1/templates/preview", json={"subject": subject, "body": "hi"}, headers=h
        )
        assert set(problems(preview)) == {"subject"}, subject
    assert world.messaging.runtime.db["schedule"].count_documents({}) == 0  # nothing was queued
    assert world.desk.template(saved["id"]).version == 1  # nor changed


def test_a_subject_broken_by_a_variable_is_a_422_at_preview_and_fails_alone_at_send(world: World) -> None:
    people = [world.contact(first_name=name, email=f"{name}@example.com") for name in ("ann", "bob", "cy")]
    template = email_template(world, "News for {{ who }}")
    injected = {"who": "you\r\nBcc: everyone@example.com"}
    preview = world.messaging.client.post(
        "/v1/templates/preview",
        json={"template_id": template["id"], "variables": injected},
        headers=world.messaging.headers(),
    )
    assert set(problems(preview)) == {"subject"}

    ids = [
        world.send(
            contact_id=person["id"],
            channel="email",
            template_id=template["id"],
            variables=injected if person is people[1] else {"who": person["first_name"]},
        ).get_json()["id"]
        for person in people
    ]
    good = [ids[0], ids[2]]
    assert world.dispatcher.run_once() == 3  # one pass
    bad = world.get(f"/v1/messages/{ids[1]}").get_json()
    assert bad["status"] == "failed" and bad["reason"].startswith("subject: ") and "U+000A" in bad["reason"]
    assert all(world.get(f"/v1/messages/{mid}").get_json()["status"] == "sent" for mid in good)

    world.clock.advance(minutes=30)  # anything put back would be due again by now
    world.dispatch()
    assert world.deliveries() == dict.fromkeys(good, 1)  # the others exactly once, the bad one never
    assert "everyone@example.com" not in "".join(path.read_text() for path in world.mails())
    events = world.messaging.runtime.db["events"]
    assert [e["type"] for e in stored_events(events, {"stream_id": ids[1]})] == ["MessageQueued", "MessageFailed"]


def test_a_message_that_cannot_be_composed_or_handed_over_fails_alone_and_the_pass_goes_on(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = [world.contact(first_name=f"P{i}", email=f"p{i}@example.com") for i in range(5)]
    ids = [
        world.send(contact_id=p["id"], channel="email", body=f"hi {i}", category="transactional").get_json()["id"]
        for i, p in enumerate(people)
    ]
    smtp: Provider = world.dispatcher.providers["email"]

    class Buggy:
        """An adapter with a bug that shows for one message; a message nothing can encode for another."""

        name = "smtp"

        def send(self, message: Outgoing) -> str:
            if message.key == ids[1]:
                raise RuntimeError("adapter bug")
            if message.key == ids[3]:
                message = Outgoing(
                    message.key, message.channel, message.to, message.subject, "lone \ud800", message.unsubscribe_url
                )
            return smtp.send(message)

        def close(self) -> None:
            smtp.close()

    world.dispatcher.providers["email"] = Buggy()
    real_render = world.dispatcher._render

    def render(message: Message, *args: Any) -> Outgoing:
        if message.id == ids[2]:  # this one breaks the renderer itself
            raise RecursionError("maximum recursion depth exceeded")
        return real_render(message, *args)

    monkeypatch.setattr(world.dispatcher, "_render", render)
    assert world.dispatcher.run_once() == 5
    world.clock.advance(minutes=30)
    world.dispatch()

    status = {mid: world.get(f"/v1/messages/{mid}").get_json() for mid in ids}
    failed = {mid: m["reason"] for mid, m in status.items() if m["status"] == "failed"}
    sent = {mid for mid, m in status.items() if m["status"] == "sent"}
    assert failed[ids[1]] == "smtp failed: RuntimeError"
    assert failed[ids[3]] == "the mail could not be composed: UnicodeEncodeError"
    assert failed[ids[2]] == "could not be composed: RecursionError"
    assert len(failed) == 3 and len(sent) == 2
    assert world.deliveries() == dict.fromkeys(sent, 1)  # each sent once, the failed never
