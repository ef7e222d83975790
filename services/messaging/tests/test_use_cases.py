"""Messaging's use cases on the in-memory event store and in-memory views: no server, milliseconds each.

`MessageUseCases` is the code the REST/gRPC edges and the worker call; here it runs on
`crmkit.memstore.InMemoryEventStore` (the store contract, checked against MongoDB's by
libs/crmkit/tests/test_crmkit_store_contract.py) and `Memory`, which keeps the read
models as the projections do (each saved message refolded into its view) and the work
lists as dicts. Sending (the dispatcher's consent check at send time) needs the schedule's
claims and stays tested with servers (test_sending.py, test_consent_proof.py); here a
send is recorded as the dispatcher records it, and what the use cases decide around it is
checked: receipts, suppressions, the consent proof.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import pytest

from crm_messaging.app import SERVICE
from crm_messaging.commands import MessageUseCases, derived_id
from crm_messaging.config import current
from crm_messaging.domain import CHANNELS, Message
from crm_messaging.suppressions import suppression_id
from crm_messaging.views import MESSAGE_FILTERS, MESSAGE_HIDDEN
from crmkit import clock
from crmkit.errors import Conflict, NotFound, PreconditionFailed, ValidationFailed
from crmkit.events import Metadata, RecordedEvent, rfc3339
from crmkit.memstore import InMemoryEventStore

META = Metadata(actor="user:mona")
WELCOME = {
    "name": "Welcome",
    "channel": "email",
    "category": "marketing",
    "default_locale": "en",
    "variants": {
        "en": {"subject": "Hi {{ first_name }}", "body": "Dear {{ name }}"},
        "fa": {"subject": "سلام {{ first_name }}", "body": "{{ name }} عزیز"},
    },
}
GRANTED = {"granted": True, "legal_basis": "consent", "source": "web_form", "checked_at": "2026-12-01T10:00:00.000Z"}


class Memory:
    """`MessagingViews` and `WorkLists` on dicts: message documents refolded from the store on every save."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self.store = store
        self.messages: dict[str, dict[str, Any]] = {}
        self.known_contacts: dict[str, dict[str, Any]] = {}
        self.schedule: dict[str, dict[str, Any]] = {}
        self.trigger_register: list[str] = []

    def project(self, events: Sequence[RecordedEvent]) -> None:
        for stream_id in {e.stream_id for e in events if e.aggregate_type == Message.aggregate_type}:
            stored = self.store.load(stream_id)
            message = Message.from_events(stream_id, stored)
            queued_ms = self.messages.get(stream_id, {}).get("queued_ms", len(self.messages))  # in queuing order
            self.messages[stream_id] = {
                **message.view(),
                "_id": stream_id,
                "queued_ms": queued_ms,
                "consent": message.consent,
            }

    # --- MessagingViews ---------------------------------------------------------------

    def template_page(self, channel: str | None, limit: int, cursor: str | None) -> tuple[list[Any], str | None]:
        raise AssertionError("not used here")

    campaign_page = template_page

    def trigger_page(self, limit: int, cursor: str | None) -> tuple[list[Any], str | None]:
        raise AssertionError("not used here")

    def message_page(
        self, filters: Mapping[str, Any], limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        found = sorted(
            (
                doc
                for doc in self.messages.values()
                if all(doc[key] == filters[key] for key in MESSAGE_FILTERS if filters.get(key))
                and (cursor is None or doc["_id"] > cursor)
            ),
            key=lambda doc: doc["_id"],
        )
        shown = [{k: v for k, v in doc.items() if k not in MESSAGE_HIDDEN} for doc in found[:limit]]
        return shown, found[limit - 1]["_id"] if len(found) > limit else None

    def contact_messages(self, contact_id: str, limit: int, after: tuple[int, str] | None) -> list[dict[str, Any]]:
        mine = sorted(
            (
                doc
                for doc in self.messages.values()
                if doc["contact_id"] == contact_id and (after is None or (doc["queued_ms"], doc["_id"]) < after)
            ),
            key=lambda doc: (doc["queued_ms"], doc["_id"]),
            reverse=True,
        )
        return mine[:limit]

    def message_ids_of(self, contact_id: str) -> set[str]:
        return {doc["_id"] for doc in self.messages.values() if doc["contact_id"] == contact_id}

    def campaign_counts(self, campaign_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for doc in self.messages.values():
            if doc["campaign_id"] == campaign_id:
                counts[doc["status"]] = counts.get(doc["status"], 0) + 1
        return counts

    def consent_report(self, start: date, end: date) -> dict[str, Any]:
        raise AssertionError("not used here")

    def contacts(self, contact_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {cid: self.known_contacts[cid] for cid in contact_ids if cid in self.known_contacts}

    def remember_contacts(self, contacts: Sequence[dict[str, Any]]) -> None:
        self.known_contacts.update({contact["id"]: dict(contact) for contact in contacts})

    # --- WorkLists ----------------------------------------------------------------------

    def schedule_messages(self, entries: Sequence[dict[str, Any]]) -> None:
        for entry in entries:
            self.schedule.setdefault(entry["_id"], dict(entry))

    def schedule_campaign(self, campaign_id: str, due_ms: int) -> None:
        self.schedule.setdefault(
            f"campaign:{campaign_id}",
            {"kind": "campaign", "state": "pending", "due_ms": due_ms, "campaign_id": campaign_id},
        )

    def scheduled_message_ids_of(self, contact_id: str) -> set[str]:
        return {
            key
            for key, entry in self.schedule.items()
            if entry["kind"] == "message" and entry["contact_id"] == contact_id
        }

    def sent_as(self, provider: str, provider_message_id: str) -> str | None:
        return next(
            (
                key
                for key, entry in self.schedule.items()
                if entry.get("provider") == provider and entry.get("provider_message_id") == provider_message_id
            ),
            None,
        )

    def register_trigger(self, trigger_id: str) -> None:
        if trigger_id not in self.trigger_register:
            self.trigger_register.append(trigger_id)

    def trigger_ids(self) -> list[str]:
        return list(self.trigger_register)


class Directory:
    """The contacts service as messaging asks it: contacts in bulk, a segment's members."""

    def __init__(self) -> None:
        self.people: dict[str, dict[str, Any]] = {}
        self.segments: dict[str, list[str]] = {}
        self.asked: list[list[str]] = []

    def add(self, contact_id: str) -> str:
        self.people[contact_id] = {
            "id": contact_id,
            "first_name": contact_id.title(),
            "last_name": "Ahmadi",
            "email": f"{contact_id}@example.com",
        }
        return contact_id

    def many(self, contact_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.asked.append(list(contact_ids))
        return {cid: self.people[cid] for cid in contact_ids if cid in self.people}

    def segment_members(self, segment_id: str) -> Iterator[dict[str, Any]]:
        if segment_id not in self.segments:
            raise NotFound(f"no segment {segment_id}")
        for cid in self.segments[segment_id]:
            yield {"contact_id": cid, "first_name": self.people[cid]["first_name"]}


class World:
    """The use cases and what they run on, with what they published and shredded."""

    def __init__(self) -> None:
        self.store = InMemoryEventStore("messaging", references=SERVICE.references)
        self.memory = Memory(self.store)
        self.directory = Directory()
        self.published: list[RecordedEvent] = []
        self.shredded: list[tuple[list[str], list[str]]] = []
        self.desk = MessageUseCases(
            self.store,
            self.memory,
            self.memory,
            self.publish,
            current(),
            self.directory,
            shred=lambda subjects, paths: self.shredded.append((list(subjects), list(paths))),
        )

    def publish(self, events: list[RecordedEvent]) -> None:
        self.published += events
        self.memory.project(events)

    def types(self, stream_id: str) -> list[str]:
        return [event.type for event in self.store.load(stream_id)]

    def send(self, contact_id: str, **fields: Any) -> Message:
        return self.desk.queue_message({"contact_id": contact_id, "channel": "email", **fields}, META)

    def sent(self, message: Message, provider_message_id: str) -> None:
        """What the dispatcher records once the provider took the message (and notes in the schedule)."""
        self.desk.messages.change(
            message.id,
            lambda m: m.sent(
                "smtp", provider_message_id, f"{m.contact_id}@example.com", "Hi", "Dear", rfc3339(clock.now()), GRANTED
            ),
            META,
        )
        self.memory.schedule[message.id].update(provider="smtp", provider_message_id=provider_message_id)


@pytest.fixture
def world() -> World:
    return World()


def test_a_template_is_checked_defined_and_updated(world: World) -> None:
    with pytest.raises(ValidationFailed) as no_default:
        world.desk.define_template({**WELCOME, "default_locale": "de"}, META)
    assert no_default.value.errors == {"default_locale": ["has no variant"]}
    unsafe = {"en": {"subject": "line\n{{ name }}", "body": "{{ ''.__class__.__mro__ }}"}}
    with pytest.raises(ValidationFailed) as rejected:
        world.desk.define_template({**WELCOME, "variants": unsafe}, META)
    assert set(rejected.value.errors) == {"variants.en.subject", "variants.en.body"}
    assert world.store.count() == 0
    template = world.desk.define_template(WELCOME, META)
    updated = world.desk.update_template(template.id, {"name": "Welcome!", "default_locale": "fa"}, META, if_match=1)
    assert (updated.name, updated.default_locale, updated.version) == ("Welcome!", "fa", 2)
    assert world.desk.update_template(template.id, {"name": "Welcome!"}, META, None).version == 2  # no change
    with pytest.raises(ValidationFailed):
        world.desk.update_template(template.id, {"variants": {"en": WELCOME["variants"]["en"]}}, META, None)  # fa
    with pytest.raises(PreconditionFailed):
        world.desk.update_template(template.id, {"name": "stale"}, META, if_match=1)
    assert world.types(template.id) == ["TemplateDefined", "TemplateUpdated"]
    assert world.desk.preview(template.id, None, "fa-IR", {"name": "Sara"}, None)["body"] == "Sara عزیز"


def test_a_message_is_queued_for_a_known_contact_and_scheduled_before_its_event(world: World) -> None:
    sara = world.directory.add("sara")
    template = world.desk.define_template({**WELCOME, "category": "transactional"}, META)
    message = world.send(sara, template_id=template.id)
    assert (message.status, message.category) == ("queued", "transactional")  # the template's category
    assert world.types(message.id) == ["MessageQueued"]
    entry = world.memory.schedule[message.id]
    assert (entry["state"], entry["due_ms"], entry["contact_id"]) == ("pending", 0, sara)  # due at once
    later = world.send(sara, body="plain text")
    assert world.directory.asked == [[sara]]  # the second look was local: the copy remembered her
    listed, _ = world.desk.list_messages({"limit": 10, "contact_id": sara})
    assert len(listed) == 2 and all("consent" not in doc for doc in listed)
    newest = world.desk.contact_messages(sara, 1)
    assert [m["id"] for m in newest] == [later.id]  # newest first, then on from the last one shown
    assert [m["id"] for m in world.desk.contact_messages(sara, 5, (newest[0]["queued_ms"], later.id))] == [message.id]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"contact_id": "nobody", "body": "hi"}, "contact_id"),
        ({"contact_id": "sara"}, "body"),
        ({"contact_id": "sara", "template_id": "no-such"}, "template_id"),
        ({"contact_id": "sara", "channel": "sms", "template_id": "TEMPLATE"}, "template_id"),  # an email template
    ],
)
def test_a_message_that_cannot_be_queued_is_refused_and_leaves_nothing(
    world: World, fields: dict[str, Any], field: str
) -> None:
    world.directory.add("sara")
    template = world.desk.define_template(WELCOME, META)
    stored = world.store.count()
    body = {"channel": "email", **fields}
    if body.get("template_id") == "TEMPLATE":
        body["template_id"] = template.id
    with pytest.raises(ValidationFailed) as refused:
        world.desk.queue_message(body, META)
    assert list(refused.value.errors) == [field]
    assert world.store.count() == stored and world.memory.schedule == {}


def test_a_bounce_receipt_fails_the_message_and_suppresses_the_address(world: World) -> None:
    sara = world.directory.add("sara")
    message = world.send(sara, body="hello")
    world.sent(message, "<m1@mail>")
    with pytest.raises(NotFound):
        world.desk.receipt("smtp", {"provider_message_id": "<other@mail>", "status": "bounced"}, META)
    bounced = world.desk.receipt(
        "smtp", {"provider_message_id": "<m1@mail>", "status": "bounced", "reason": "550 user unknown"}, META
    )
    assert bounced.status == "bounced"
    assert world.types(message.id)[-1] == "MessageFailed"
    assert world.types(suppression_id(sara, "email")) == ["AddressSuppressed"]
    # what the dispatcher asks before the next send: this address is out, another of hers is not
    assert world.desk.suppressions.reasons(
        [((sara,), "email", "SARA@example.com"), ((sara,), "email", "sara@work.example")]
    ) == ["bounced", None]
    world.desk.receipt("smtp", {"message_id": message.id, "status": "bounced"}, META)  # delivered again
    assert world.types(suppression_id(sara, "email")) == ["AddressSuppressed"]  # nothing new
    assert world.desk.message_consent(message.id)["consent"] == GRANTED  # the proof it went out on
    with pytest.raises(NotFound):
        world.desk.receipt("sms-gateway", {"message_id": message.id, "status": "delivered"}, META)


def test_a_campaign_launch_schedules_it_once_and_its_expansion_queues_each_member_once(world: World) -> None:
    members = [world.directory.add(name) for name in ("ali", "sara", "reza")]
    world.directory.segments["seg-1"] = members
    template = world.desk.define_template(WELCOME, META)
    with pytest.raises(ValidationFailed):
        world.desk.create_campaign(
            {
                "name": "Yalda",
                "segment_id": "seg-1",
                "template_id": template.id,
                "channel": "sms",
                "throttle_per_minute": 60,
            },
            META,
        )
    campaign = world.desk.create_campaign(
        {
            "name": "Yalda",
            "segment_id": "seg-1",
            "template_id": template.id,
            "channel": "email",
            "throttle_per_minute": 60,
        },
        META,
    )
    at = clock.now() + timedelta(days=1)
    launched = world.desk.launch_campaign(campaign.id, at, META, if_match=1)
    assert launched.status == "running" and launched.scheduled_at == rfc3339(at)
    entry = world.memory.schedule[f"campaign:{campaign.id}"]
    assert entry["due_ms"] == int(at.timestamp() * 1000)  # expanded when it is due, not now
    with pytest.raises(Conflict):
        world.desk.launch_campaign(campaign.id, None, META, None)  # a draft only
    assert world.desk.expand_campaign(launched, META) == 3
    assert world.desk.expand_campaign(launched, META) == 3  # repeated (a worker restarted): ids are derived
    ids = {derived_id("campaign", campaign.id, cid) for cid in members}
    assert {doc["_id"] for doc in world.memory.messages.values()} == ids
    assert all(world.types(i) == ["MessageQueued"] for i in ids)
    assert set(world.memory.known_contacts) == set(members)  # remembered for rendering
    stats = world.desk.campaign(campaign.id)["stats"]
    assert (stats["queued"], stats["sent"], stats["progress"]) == (3, 0, 0.0)
    assert world.desk.campaign_action(campaign.id, "pause", META, None).status == "paused"
    with pytest.raises(Conflict):
        world.desk.campaign_action(campaign.id, "pause", META, None)


def test_a_trigger_is_registered_before_its_first_event(world: World) -> None:
    template = world.desk.define_template(WELCOME, META)
    trigger = world.desk.define_trigger(
        {
            "name": "Solved",
            "event_type": "crm.servicedesk.TicketSolved.v1",
            "filter": {},
            "template_id": template.id,
            "channel": "email",
            "variables": {},
            "enabled": True,
        },
        META,
    )
    assert world.desk.trigger_ids() == [trigger.id]
    assert world.desk.set_trigger_enabled(trigger.id, False, META, None).enabled is False
    assert world.types(trigger.id) == ["TriggerDefined", "TriggerDisabled"]


def test_erasure_shreds_every_message_and_suppression_of_the_person(world: World) -> None:
    sara, ali = world.directory.add("sara"), world.directory.add("ali")
    mine = {world.send(sara, body="one").id, world.send(sara, body="two").id}
    world.send(ali, body="not hers")
    world.desk.erase_contact(sara)
    [(subjects, paths)] = world.shredded
    assert set(subjects) == mine | {suppression_id(sara, channel) for channel in CHANNELS}
    assert set(paths) == {f"/v1/messages/{message_id}" for message_id in mine}


def test_a_merge_moves_the_messages_and_its_unmerge_moves_them_back(world: World) -> None:
    dup, survivor = world.directory.add("dup"), world.directory.add("survivor")
    message = world.send(dup, body="hello")
    world.desk.contact_merged(dup, survivor, "merge-1")
    assert world.desk.message(message.id).contact_id == survivor
    world.desk.contact_unmerged(dup, survivor, "another-merge")  # not the merge that moved it
    assert world.desk.message(message.id).contact_id == survivor
    world.desk.contact_unmerged(dup, survivor, "merge-1")
    assert world.desk.message(message.id).contact_id == dup
    assert world.types(message.id) == ["MessageQueued", "MessageContactChanged", "MessageContactChanged"]
