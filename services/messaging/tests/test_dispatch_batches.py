"""The dispatcher decides a whole batch at once: every message gets the answer for its own
contact, and a worker whose lease ran out while another took over records nothing twice
and stops calling providers."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from crm_messaging.dispatcher import LEASE, Dispatcher
from crm_messaging.providers import Outgoing
from crmkit.testing import stored_events

from .conftest import World


def outcome(world: World, message_id: str) -> tuple[str, str | None]:
    found = world.get(f"/v1/messages/{message_id}").get_json()
    return found["status"], found["reason"]


def test_one_pass_gives_each_message_its_own_contacts_answer(world: World) -> None:
    contacts_headers = world.contacts.headers()
    granted = world.contact(first_name="Sara", email="sara@example.com")
    never = world.contact(consents=(), first_name="Ali", email="ali@example.com")
    withdrawn = world.contact(first_name="Reza", email="reza@example.com")
    no_address = world.contact(consents=(), first_name="Mina", phone="+989121234567")
    world.contacts.client.put(
        f"/v1/contacts/{no_address['id']}/consents/email", json={"status": "granted"}, headers=contacts_headers
    )
    erased = world.contact(first_name="Omid", email="omid@example.com")
    survivor = world.contact(first_name="Lila", email="lila@example.com")
    duplicate = world.contact(first_name="Lila", email="lila.old@example.com")

    queued = {
        name: world.send(
            contact_id=person["id"], channel="email", body="Hello {{ first_name }}", category="transactional"
        ).get_json()["id"]
        for name, person in [
            ("granted", granted),
            ("never", never),
            ("withdrawn", withdrawn),
            ("no_address", no_address),
            ("erased", erased),
            ("merged", duplicate),
        ]
    }
    world.contacts.client.put(
        f"/v1/contacts/{withdrawn['id']}/consents/email", json={"status": "withdrawn"}, headers=contacts_headers
    )
    assert (
        world.contacts.client.post(
            f"/v1/contacts/{erased['id']}/erasure", json={"reason": "request"}, headers=contacts_headers
        ).status_code
        < 300
    )
    assert (
        world.contacts.client.post(
            f"/v1/contacts/{survivor['id']}/merge", json={"duplicate_id": duplicate["id"]}, headers=contacts_headers
        ).status_code
        == 200
    )

    assert world.dispatcher.run_once() == len(queued)  # one pass, one batch
    assert {name: outcome(world, mid) for name, mid in queued.items()} == {
        "granted": ("sent", None),
        "never": ("suppressed", "no_consent_recorded"),
        "withdrawn": ("suppressed", "consent_withdrawn"),
        "no_address": ("suppressed", "no_address"),
        "erased": ("suppressed", "contact_erased"),
        "merged": ("sent", None),
    }
    recipients = sorted(
        path.read_text(encoding="utf-8").split("To: ", 1)[1].split("\n", 1)[0] for path in world.mails()
    )
    assert recipients == ["lila@example.com", "sara@example.com"]  # the merged id reached the survivor's address
    schedule = world.messaging.runtime.db["schedule"]
    assert {entry["state"] for entry in schedule.find({"_id": {"$in": list(queued.values())}})} == {"done"}


def test_a_worker_whose_lease_ran_out_mid_batch_records_each_message_once(world: World) -> None:
    people = [world.contact(first_name=f"P{i}", email=f"p{i}@example.com") for i in range(6)]
    ids = [
        world.send(contact_id=p["id"], channel="email", body="hi", category="transactional").get_json()["id"]
        for p in people
    ]
    calls: Counter[str] = Counter()
    second = Dispatcher(world.desk)

    class SlowThenOvertaken:
        """The first send takes longer than the lease: meanwhile a second worker takes the batch over."""

        name = "slow"

        def send(self, message: Outgoing) -> str:
            calls[message.key] += 1
            if sum(calls.values()) == 1:
                world.clock.advance(seconds=LEASE.total_seconds() + 1)
                assert second.run_once() == len(ids)  # every lease has run out: the second worker sends all
            return f"slow-{message.key}"

        def close(self) -> None:
            pass

    world.dispatcher.providers["email"] = SlowThenOvertaken()
    second.providers["email"] = SlowThenOvertaken()
    world.dispatcher.run_once()

    events = world.messaging.runtime.db["events"]
    sent = Counter(e["stream_id"] for e in stored_events(events, {"stream_id": {"$in": ids}}, type="MessageSent"))
    assert sent == dict.fromkeys(ids, 1)  # one MessageSent each, though both workers called the provider
    assert set(calls) == set(ids) and max(calls.values()) == 2  # same key both times: the provider dedupes
    assert sorted(calls.values()) == [1] * 5 + [2]  # overtaken, the first worker called no provider again
    schedule = world.messaging.runtime.db["schedule"]
    assert {entry["state"] for entry in schedule.find({"_id": {"$in": ids}})} == {"done"}
    assert world.dispatcher.run_once() == 0 and second.run_once() == 0


def test_a_pass_hands_back_what_it_cannot_send_before_its_lease_would_run_out(world: World) -> None:
    people = [world.contact(first_name=f"P{i}", email=f"p{i}@example.com") for i in range(3)]
    ids = [
        world.send(contact_id=p["id"], channel="email", body="hi", category="transactional").get_json()["id"]
        for p in people
    ]
    slow = Dispatcher(world.desk, send_budget=timedelta(0))  # as if every provider call took the whole budget
    assert slow.run_once() == 3
    assert len(world.mails()) == 1  # one call per pass, the others are due again at once
    schedule = world.messaging.runtime.db["schedule"]
    assert sorted(e["state"] for e in schedule.find({"_id": {"$in": ids}})) == ["done", "pending", "pending"]
    assert all(e["lease_ms"] == 0 for e in schedule.find({"_id": {"$in": ids}}))  # free for any worker
    assert slow.run_once() == 2 and slow.run_once() == 1 and slow.run_once() == 0
    assert len(world.mails()) == 3


def test_on_shutdown_the_pass_records_what_it_sent_and_hands_back_the_rest(world: World) -> None:
    people = [world.contact(first_name=f"P{i}", email=f"p{i}@example.com") for i in range(3)]
    ids = [
        world.send(contact_id=p["id"], channel="email", body="hi", category="transactional").get_json()["id"]
        for p in people
    ]
    sent: list[str] = []

    class StopsDuringTheFirstSend:
        name = "stopping"

        def send(self, message: Outgoing) -> str:
            sent.append(message.key)
            world.dispatcher.stopping.set()  # SIGTERM arrives while a mail is in flight
            return f"s-{message.key}"

        def close(self) -> None:
            pass

    world.dispatcher.providers["email"] = StopsDuringTheFirstSend()
    assert world.dispatcher.run_once() == 3
    assert len(sent) == 1 and world.desk.messages.get(sent[0]).status == "sent"  # the one in flight is recorded
    schedule = world.messaging.runtime.db["schedule"]
    assert {e["_id"]: (e["state"], e["lease_ms"]) for e in schedule.find({"_id": {"$in": ids}})} == {
        i: ("done", 0) if i == sent[0] else ("pending", 0) for i in ids
    }  # the rest: free for the next worker


def test_a_message_queued_on_a_clock_that_is_then_set_back_is_still_sent_at_once(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    world.clock.advance(days=457)  # a drill moved time ahead; this process has not seen it move back yet
    queued = world.send(contact_id=sara["id"], channel="email", body="hi", category="transactional").get_json()
    world.clock.advance(days=-457)
    assert world.dispatch() == 1
    assert world.desk.messages.get(queued["id"]).status == "sent" and len(world.mails()) == 1
