"""The desk's use cases on the in-memory event store and in-memory views: no server, milliseconds each.

`TicketUseCases` is the code the REST/gRPC edges and the worker call; here it runs on
`crmkit.memstore.InMemoryEventStore` (the store contract, checked against MongoDB's by
libs/crmkit/tests/test_crmkit_store_contract.py) and `MemoryViews`, which keeps the
read models as the projections do: each saved stream is folded again into the same
documents (`ticket_document`). The edges' contracts stay tested by test_api.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest

from crm_servicedesk.app import SERVICE
from crm_servicedesk.commands import TicketUseCases
from crm_servicedesk.domain import SlaPolicy, Ticket, due_ms
from crm_servicedesk.projections import ticket_document
from crm_servicedesk.views import EXACT_FILTERS, SUMMARY_FIELDS
from crmkit import clock
from crmkit.errors import Conflict, NotFound, PreconditionFailed, ValidationFailed
from crmkit.events import Metadata, RecordedEvent
from crmkit.memstore import InMemoryEventStore

AGENT = Metadata(actor="user:ana")
POLICY = {
    "name": "Standard",
    "targets": {
        "normal": {"first_response": 60, "next_response": 120, "resolution": 480},
        "urgent": {"first_response": 15, "resolution": 120},
    },
    "escalation": {"action": "raise_priority"},
    "enabled": True,  # as the edge's schema hands it over
}


class MemoryViews:
    """`DeskViews` on dicts: ticket and policy documents refolded from the store on every save."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self.store = store
        self.tickets: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.customer_tiers: dict[str, str | None] = {}
        self.known_contacts: dict[str, dict[str, Any]] = {}

    def project(self, events: Sequence[RecordedEvent]) -> None:
        """What the worker's projections do, at once: the documents of the streams just saved."""
        for stream_id in {event.stream_id for event in events}:
            stored = self.store.load(stream_id)
            if stored[0].aggregate_type == Ticket.aggregate_type:
                ticket = Ticket.from_events(stream_id, stored)
                self.tickets[stream_id] = {"_id": stream_id, "version": ticket.version, **ticket_document(ticket)}
            elif stored[0].aggregate_type == SlaPolicy.aggregate_type:
                view = SlaPolicy.from_events(stream_id, stored).view()
                self.policies[stream_id] = {"_id": view.pop("id"), **view}

    def policy_ids(self) -> list[str]:
        return sorted(self.policies)

    def tier(self, contact_id: str) -> str | None:
        return self.customer_tiers.get(contact_id)

    def tiers(self, contact_ids: Sequence[str]) -> dict[str, str | None]:
        return {cid: self.customer_tiers[cid] for cid in contact_ids if cid in self.customer_tiers}

    def contacts(self, contact_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {cid: self.known_contacts[cid] for cid in contact_ids if cid in self.known_contacts}

    def remember_contact(self, contact: dict[str, Any]) -> None:
        self.known_contacts[contact["id"]] = dict(contact)

    def ticket_page(
        self, filters: Mapping[str, Any], limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        def matches(doc: dict[str, Any]) -> bool:
            return (
                all(doc[name] == filters[name] for name in EXACT_FILTERS if filters.get(name))
                and (not filters.get("tag") or filters["tag"] in doc["tags"])
                and (filters.get("breached") is None or doc["breached"] == filters["breached"])
            )

        return self._page([doc for doc in self.tickets.values() if matches(doc)], limit, cursor)

    def policy_page(self, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        return self._page(list(self.policies.values()), limit, cursor)

    def due_tickets(self, now_ms: int, limit: int, skip: set[str]) -> list[str]:
        due = sorted(
            (
                doc
                for doc in self.tickets.values()
                if doc["next_due_ms"] <= now_ms and doc["status"] in ("new", "open") and doc["_id"] not in skip
            ),
            key=lambda doc: doc["next_due_ms"],
        )
        return [doc["_id"] for doc in due[:limit]]

    def tickets_of_contacts(self, contact_ids: Sequence[str]) -> list[dict[str, Any]]:
        return [
            {"_id": doc["_id"], **{key: doc[key] for key in SUMMARY_FIELDS}}
            for doc in self.tickets.values()
            if doc["contact_id"] in contact_ids
        ]

    @staticmethod
    def _page(docs: list[dict[str, Any]], limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        rest = sorted((doc for doc in docs if cursor is None or doc["_id"] > cursor), key=lambda doc: doc["_id"])
        return rest[:limit], rest[limit - 1]["_id"] if len(rest) > limit else None


class Directory:
    """The contacts service as the desk asks it: a contact by id, or NotFound."""

    def __init__(self) -> None:
        self.people: dict[str, dict[str, Any]] = {}

    def add(self, contact_id: str, status: str = "active") -> str:
        self.people[contact_id] = {"id": contact_id, "first_name": "Sara", "last_name": contact_id, "status": status}
        return contact_id

    def get(self, contact_id: str) -> dict[str, Any]:
        if contact_id not in self.people:
            raise NotFound(f"no contact with id {contact_id}")
        return self.people[contact_id]


class World:
    """The desk and what it runs on, with what it published and shredded."""

    def __init__(self) -> None:
        self.store = InMemoryEventStore("service-desk", references=SERVICE.references)  # as the service runs
        self.views = MemoryViews(self.store)
        self.directory = Directory()
        self.published: list[RecordedEvent] = []
        self.shredded: list[tuple[list[str], list[str]]] = []
        self.desk = TicketUseCases(
            self.store,
            self.views,
            self.publish,
            self.directory,
            lambda ids, paths: self.shredded.append((list(ids), list(paths))),
        )

    def publish(self, events: list[RecordedEvent]) -> None:
        self.published += events
        self.views.project(events)

    def types(self, stream_id: str) -> list[str]:
        return [event.type for event in self.store.load(stream_id)]

    def open(self, contact_id: str, **fields: Any) -> Ticket:
        body = {
            "subject": "Order missing",
            "description": "It has not arrived",
            "contact_id": contact_id,
            "channel": "email",
            "type": "complaint",
            **fields,
        }
        return self.desk.open_ticket(body, AGENT)


@pytest.fixture
def world() -> World:
    return World()


def later(monkeypatch: pytest.MonkeyPatch, hours: float) -> None:
    monkeypatch.setenv(clock.OFFSET_VARIABLE, str(timedelta(hours=hours).total_seconds()))


def test_a_ticket_opens_under_the_policy_for_its_customers_tier(world: World) -> None:
    general = world.desk.define_policy(POLICY, AGENT)
    strategic = world.desk.define_policy(
        {
            "name": "Strategic",
            "customer_tiers": ["strategic"],
            "targets": {"normal": {"first_response": 15, "resolution": 240}},
            "enabled": True,
        },
        AGENT,
    )
    vip, regular = world.directory.add("vip"), world.directory.add("regular")
    world.views.customer_tiers[vip] = "strategic"
    first, second = world.open(vip), world.open(regular)
    assert (first.policy or {})["id"] == strategic.id and first.customer_tier == "strategic"
    assert (second.policy or {})["id"] == general.id and second.customer_tier is None
    assert world.types(first.id) == ["TicketOpened"]
    view = world.desk.ticket_view(world.desk.ticket(first.id))
    assert view["contact"] == {"id": vip, "name": "Sara vip", "status": "active", "tier": "strategic"}
    assert {t["target"]: t["due_at"] is not None for t in view["sla"]} == {"first_response": True, "resolution": True}
    assert [e.type for e in world.published].count("TicketOpened") == 2


def test_an_unknown_or_erased_contact_opens_nothing(world: World) -> None:
    world.directory.add("gone", status="erased")
    for contact_id, message in (("nobody", "no contact with id nobody"), ("gone", "this contact has been erased")):
        with pytest.raises(ValidationFailed) as refused:
            world.open(contact_id)
        assert refused.value.errors == {"contact_id": [message]}
    assert world.store.count() == 0


def test_status_moves_through_the_sla_and_a_rating_comes_once_after_solving(world: World) -> None:
    world.desk.define_policy(POLICY, AGENT)
    tid = world.open(world.directory.add("c1")).id
    reply = {"body": "On its way", "public": True, "author_type": "agent"}
    ticket = world.desk.comment(tid, reply, AGENT, None)
    assert ticket.status == "open" and ticket.first_response_at is not None  # a public reply opens it
    assert ticket.comments[0]["author"] == "ana"  # the caller, when the body names no author
    sla = {t["target"]: t["status"] for t in world.desk.ticket_view(ticket)["sla"]}
    assert sla["first_response"] == "met"
    with pytest.raises(Conflict):
        world.desk.rate(tid, {"csat": 5}, AGENT, None)  # not solved yet
    with pytest.raises(Conflict):
        world.desk.change_status(tid, "closed", AGENT, None)  # open → closed is not a move
    assert world.desk.change_status(tid, "solved", AGENT, None).status == "solved"
    assert world.desk.rate(tid, {"csat": 4, "nps": 9}, AGENT, None).satisfaction["csat"] == 4
    with pytest.raises(Conflict):
        world.desk.rate(tid, {"csat": 1}, AGENT, None)
    assert world.types(tid) == [
        "TicketOpened",
        "TicketCommented",
        "TicketStatusChanged",
        "TicketStatusChanged",
        "TicketSolved",
        "SatisfactionRated",
    ]
    with pytest.raises(PreconditionFailed):
        world.desk.assign(tid, {"assignee": "bo"}, AGENT, if_match=2)  # the caller saw an old version
    assert [entry["version"] for entry in world.desk.history(tid)] == [1, 2, 3, 4, 5, 6]


def test_the_sweep_records_a_breach_once_and_escalates(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.desk.define_policy(POLICY, AGENT)
    tid = world.open(world.directory.add("c1")).id
    assert world.desk.sweep() == {"due": 0, "breaches": 0}
    later(monkeypatch, 2)  # the first response (60 minutes) is past due
    assert world.desk.sweep() == {"due": 1, "breaches": 1}
    ticket = world.desk.ticket(tid)
    assert list(ticket.breaches) == ["first_response"] and ticket.priority == "high"  # raised one step
    assert world.types(tid)[1:] == ["SlaBreached", "TicketEscalated"]
    assert world.desk.sweep() == {"due": 0, "breaches": 0}  # nothing else due until the resolution target
    assert world.views.tickets[tid]["next_due_ms"] > due_ms(clock.now())


def test_the_list_filters_pages_and_names_the_contacts(world: World) -> None:
    a, b = world.directory.add("a"), world.directory.add("b")
    world.views.customer_tiers[a] = "key"
    ids = [
        world.open(a if i % 2 else b, priority="high" if i < 2 else "low", tags=["vip"] if i == 4 else []).id
        for i in range(5)
    ]
    first, cursor = world.desk.list_tickets({"limit": 2})
    second, _ = world.desk.list_tickets({"limit": 2, "cursor": cursor})
    assert [t["id"] for t in first + second] == sorted(ids)[:4]
    assert len(world.desk.list_tickets({"limit": 10, "priority": "high"})[0]) == 2
    mine, end = world.desk.list_tickets({"limit": 10, "contact_id": a})
    assert end is None and {t["id"] for t in mine} == {ids[1], ids[3]}
    assert {(t["contact"]["name"], t["contact"]["tier"]) for t in mine} == {("Sara a", "key")}
    assert [t["id"] for t in world.desk.list_tickets({"limit": 10, "tag": "vip"})[0]] == [ids[4]]


def test_erasure_scrubs_every_ticket_of_the_contact_once(world: World) -> None:
    gone, other = world.directory.add("gone"), world.directory.add("other")
    theirs = [world.open(gone).id, world.open(gone).id]
    world.open(other)
    assert world.desk.erase_contact(gone) == 2
    [(subjects, paths)] = world.shredded
    assert sorted(subjects) == sorted(theirs) and paths == [f"/v1/tickets/{tid}" for tid in subjects]
    assert all(world.types(tid)[-1] == "TicketCustomerDataErased" for tid in theirs)
    before = world.store.count()
    world.desk.erase_contact(gone)  # redelivered: nothing new recorded
    assert world.store.count() == before


def test_a_merge_moves_the_tickets_and_its_unmerge_moves_them_back(world: World) -> None:
    dup, survivor = world.directory.add("dup"), world.directory.add("survivor")
    tid = world.open(dup).id
    assert world.desk.repoint_contact(dup, survivor, "merge-1") == 1
    assert world.desk.ticket(tid).contact_id == survivor
    assert world.desk.contact_unmerged(dup, survivor, "another-merge") == 0  # not the merge that moved it
    assert world.desk.contact_unmerged(dup, survivor, "merge-1") == 1
    assert world.desk.ticket(tid).contact_id == dup
    assert world.types(tid).count("TicketContactChanged") == 2


def test_the_support_summary_counts_a_contacts_tickets(world: World) -> None:
    cid = world.directory.add("c1")
    complaint, question = world.open(cid).id, world.open(cid, type="question").id
    world.desk.change_status(question, "solved", AGENT, None)
    world.desk.rate(question, {"csat": 3, "nps": 7}, AGENT, None)
    summary = world.desk.support_summary([cid])
    assert summary["open_tickets"] == 1 and summary["total_tickets"] == 2 and summary["complaints"] == 1
    assert summary["last_satisfaction"]["ticket_id"] == question and summary["last_satisfaction"]["csat"] == 3
    assert world.desk.support_summary(["nobody"])["total_tickets"] == 0
    assert complaint in world.views.tickets


def test_a_policy_revision_is_a_new_version_and_the_list_shows_it(world: World) -> None:
    policy = world.desk.define_policy(POLICY, AGENT)
    revised = world.desk.revise_policy(policy.id, {"name": "Standard v2"}, (), clock.now(), AGENT, if_match=1)
    assert revised.version == 2 and world.types(policy.id) == ["SlaPolicyDefined", "SlaPolicyRevised"]
    with pytest.raises(PreconditionFailed):
        world.desk.revise_policy(policy.id, {"name": "v3"}, (), clock.now(), AGENT, if_match=1)
    listed, _ = world.desk.list_policies({"limit": 10})
    assert [(p["id"], p["name"]) for p in listed] == [(policy.id, "Standard v2")]
