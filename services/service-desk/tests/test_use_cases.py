"""The desk's use cases on the in-memory event store and in-memory views: no server, milliseconds each.

`TicketUseCases` is the code the REST/gRPC edges and the worker call; here it runs on
`crmkit.memstore.InMemoryEventStore` (the store contract, checked against MongoDB's by
libs/crmkit/tests/test_crmkit_store_contract.py) and `MemoryViews`, which keeps the
read models as the projections do: each saved stream is folded again into the same
documents (`ticket_document`). The edges' contracts stay tested by test_api.py.
The worker's SERVQUAL pass (`ServqualUseCases`) and SLA recompute (`SlaRecompute`) run
here too, on the same views (`MemoryViews` is also `ServqualViews`) and dict bookkeeping;
test_servqual_api.py and test_sla_recompute_api.py keep them tested on MongoDB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from crm_servicedesk.app import SERVICE
from crm_servicedesk.commands import TicketUseCases
from crm_servicedesk.domain import SlaPolicy, Ticket, due_ms
from crm_servicedesk.projections import ticket_document
from crm_servicedesk.recompute import SlaRecompute
from crm_servicedesk.servqual import ServqualSurvey
from crm_servicedesk.servqual_desk import ServqualUseCases, derived_id, quarter_of, survey_document
from crm_servicedesk.views import EXACT_FILTERS, SUMMARY_FIELDS, SURVEY_FILTERS, PolicyTickets
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
    """`DeskViews` and `ServqualViews` on dicts: ticket and policy documents refolded from the store on
    every save, survey documents too."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self.store = store
        self.tickets: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.customer_tiers: dict[str, str | None] = {}
        self.known_contacts: dict[str, dict[str, Any]] = {}
        self.surveys: dict[str, dict[str, Any]] = {}

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
            elif stored[0].aggregate_type == ServqualSurvey.aggregate_type:
                survey = ServqualSurvey.from_events(stream_id, stored)
                self.surveys[stream_id] = {"_id": stream_id, **survey_document(survey)}

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

    def policy_versions(self) -> dict[str, int]:
        return {policy_id: doc["version"] for policy_id, doc in self.policies.items()}

    def _selected(self, which: PolicyTickets) -> list[dict[str, Any]]:
        def opened_in(ms: int) -> bool:
            return which.opened_from_ms is None or (
                ms >= which.opened_from_ms and (which.opened_to_ms is None or ms < which.opened_to_ms)
            )

        return [
            doc
            for doc in self.tickets.values()
            if doc["has_policy"] and doc["status"] in which.statuses and opened_in(doc["opened_ms"])
        ]

    def count_policy_tickets(self, which: PolicyTickets) -> int:
        return len(self._selected(which))

    def policy_ticket_ids(self, which: PolicyTickets, after: str, limit: int) -> list[str]:
        return sorted(doc["_id"] for doc in self._selected(which) if doc["_id"] > after)[:limit]

    def latest_group(self, contact_id: str) -> str | None:
        theirs = [doc for doc in self.tickets.values() if doc["contact_id"] == contact_id]
        return max(theirs, key=lambda doc: doc["opened_ms"])["group"] if theirs else None

    def solved_tickets(
        self, start_ms: int, end_ms: int, contact_ids: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        return [
            {key: doc[key] for key in ("_id", "contact_id", "group", "first_solved_ms")}
            for doc in self.tickets.values()
            if doc["first_solved_ms"] is not None
            and start_ms <= doc["first_solved_ms"] <= end_ms
            and (contact_ids is None or doc["contact_id"] in contact_ids)
        ]

    def count_solved(self, start_ms: int, before_ms: int) -> int:
        return sum(
            1
            for doc in self.tickets.values()
            if doc["first_solved_ms"] is not None and start_ms <= doc["first_solved_ms"] < before_ms
        )

    def tier_members(self, tiers: Sequence[str]) -> dict[str, str | None]:
        return {cid: tier for cid, tier in self.customer_tiers.items() if tier in tiers}

    def survey_page(
        self, filters: Mapping[str, Any], limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        wanted = {name: filters[name] for name in SURVEY_FILTERS if filters.get(name)}
        docs = [doc for doc in self.surveys.values() if all(doc[name] == value for name, value in wanted.items())]
        return self._page(docs, limit, cursor)

    def surveyed(self, survey_ids: Sequence[str]) -> set[str]:
        return set(self.surveys) & set(survey_ids)

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


class Checkpoint:
    """The SERVQUAL pass's checkpoint in memory."""

    def __init__(self) -> None:
        self.at: int | None = None

    def checked_ms(self) -> int | None:
        return self.at

    def check(self, upto_ms: int) -> None:
        self.at = upto_ms


class Runs:
    """The recompute's run states in memory."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}

    def get(self, run_id: str) -> dict[str, Any]:
        return dict(self.states.get(run_id) or {})

    def put(self, state: dict[str, Any]) -> None:
        self.states[state["_id"]] = dict(state)


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
        self.servqual = ServqualUseCases(self.desk, self.views, self.publish, Checkpoint())
        self.runs = Runs()

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

    def solve(self, contact_id: str, **fields: Any) -> str:
        tid = self.open(contact_id, **fields).id
        self.desk.change_status(tid, "solved", AGENT, None)
        return tid

    def in_solve_order(self, ticket_ids: list[str]) -> list[str]:
        """The tickets in the order the pass counts them: first solved, ties (the same ms) by id."""
        return sorted(ticket_ids, key=lambda tid: (self.views.tickets[tid]["first_solved_ms"], tid))

    def surveys_sent(self) -> list[dict[str, Any]]:
        """The data of each ServqualSurveySent recorded, in the order they were."""
        return [event.data for event in self.published if event.type == "ServqualSurveySent"]


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


# --- the worker's SERVQUAL pass: whom it surveys ------------------------------------------------------


def soon() -> datetime:
    """A pass's time once the solves just made have settled (SETTLE_MS)."""
    return clock.now() + timedelta(seconds=10)


def test_the_servqual_pass_surveys_a_contacts_every_nth_solve_since_the_policy(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = world.directory.add("a"), world.directory.add("b")
    world.solve(a)  # before the policy: not counted
    later(monkeypatch, 0.1)
    world.servqual.configure_policy({"enabled": True, "every_nth_solved_per_contact": 2}, AGENT)
    theirs = world.in_solve_order([world.solve(a, group="billing") for _ in range(3)])
    world.solve(b)
    assert world.servqual.apply_policy() == {"sent": 0}  # solved a moment ago: counted once settled
    assert world.servqual.apply_policy(soon()) == {"sent": 1}
    assert world.servqual.apply_policy(soon()) == {"sent": 0}
    [survey] = world.surveys_sent()
    assert (survey["contact_id"], survey["ticket_id"], survey["group"]) == (a, theirs[1], "billing")
    assert survey["trigger"] == {"rule": "every_nth_solved", "scope": "contact", "n": 2}
    later(monkeypatch, 2)
    assert world.servqual.apply_policy(soon()) == {"sent": 0}  # its window now starts after those solves
    later(monkeypatch, 4)
    theirs.append(world.solve(a))  # their 4th since the policy, counted from `counting_since`
    assert world.servqual.apply_policy(soon()) == {"sent": 1}
    assert [s["ticket_id"] for s in world.surveys_sent()] == [theirs[1], theirs[3]]


def test_the_servqual_pass_counts_every_nth_solve_overall_across_passes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    contacts = [world.directory.add(f"c-{n}") for n in range(3)]
    world.servqual.configure_policy({"enabled": True, "every_nth_solved_overall": 3}, AGENT)
    solved = world.in_solve_order([world.solve(contacts[n % 3]) for n in range(4)])
    assert world.servqual.apply_policy(soon()) == {"sent": 1}
    later(monkeypatch, 2)
    assert world.servqual.apply_policy(soon()) == {"sent": 0}  # its window now starts after the first four
    later(monkeypatch, 4)
    solved += world.in_solve_order([world.solve(contacts[0]) for _ in range(3)])
    assert world.servqual.apply_policy(soon()) == {"sent": 1}
    assert [s["ticket_id"] for s in world.surveys_sent()] == [solved[2], solved[5]]
    assert world.surveys_sent()[1]["contact_id"] == contacts[0]


def test_the_servqual_pass_surveys_the_policys_tiers_once_a_quarter(world: World) -> None:
    big, small, gone = world.directory.add("big"), world.directory.add("small"), world.directory.add("gone")
    world.views.customer_tiers.update({big: "strategic", small: "standard", gone: "strategic"})
    world.open(big, group="key-accounts")
    world.views.remember_contact({**world.directory.people[gone], "status": "erased"})  # erased since
    world.servqual.configure_policy({"enabled": True, "quarterly_tiers": ["strategic"]}, AGENT)
    now = clock.now()
    assert world.servqual.apply_policy(now) == {"sent": 1}
    assert world.views.surveyed([derived_id("quarterly", big, quarter_of(now))])  # what the next pass skips
    appended = world.store.count()
    assert world.servqual.apply_policy(now) == {"sent": 0}  # already surveyed this quarter
    assert world.store.count() == appended
    [survey] = world.surveys_sent()
    assert (survey["contact_id"], survey["customer_tier"], survey["group"], survey["ticket_id"]) == (
        big,
        "strategic",
        "key-accounts",
        None,
    )
    assert survey["trigger"] == {"rule": "quarterly", "period": quarter_of(now), "tier": "strategic"}
    next_quarter = now + timedelta(days=92)
    assert world.servqual.apply_policy(next_quarter) == {"sent": 1}
    assert world.surveys_sent()[-1]["trigger"]["period"] == quarter_of(next_quarter) != quarter_of(now)
    listed, _ = world.servqual.list_surveys({"limit": 10, "rule": "quarterly", "contact_id": big})
    assert sorted(s["trigger"]["period"] for s in listed) == sorted([quarter_of(now), quarter_of(next_quarter)])
    assert world.servqual.list_surveys({"limit": 10, "contact_id": small}) == ([], None)


# --- the SLA recompute: which tickets it re-folds -------------------------------------------------------


def test_the_recompute_refolds_open_tickets_and_the_periods_solved_ones(world: World) -> None:
    cid = world.directory.add("c1")
    unpolicied = world.open(cid).id  # opened before any policy: nothing to follow
    policy = world.desk.define_policy(POLICY, AGENT)
    open_ids = sorted(world.open(cid).id for _ in range(3))
    solved = world.solve(cid)
    yesterday = clock.now() - timedelta(days=1)
    world.desk.revise_policy(policy.id, {"targets": {"normal": {"resolution": 60}}}, (), yesterday, AGENT, None)
    recompute = SlaRecompute(world.desk, world.runs, batch=2)
    marks = recompute.policy_marks()
    assert marks == {policy.id: 2} and not recompute.up_to_date("worker", marks)
    assert recompute.total(None, None) == 3 and recompute.total(yesterday, None) == 4
    assert recompute.total(yesterday, yesterday + timedelta(hours=1)) == 3  # opened today: not in the period

    assert recompute.run("worker", marks=marks) == {"tickets": 3, "changed": 3}
    assert recompute.up_to_date("worker", marks)
    assert [tid for tid in [*open_ids, solved, unpolicied] if "SlaRecomputed" in world.types(tid)] == open_ids
    assert recompute.run("cli", yesterday) == {"tickets": 4, "changed": 1}  # the open ones already follow v2
    assert "SlaRecomputed" in world.types(solved) and "SlaRecomputed" not in world.types(unpolicied)


def test_an_interrupted_recompute_resumes_after_its_last_batch(world: World) -> None:
    cid = world.directory.add("c1")
    policy = world.desk.define_policy(POLICY, AGENT)
    ids = sorted(world.open(cid).id for _ in range(3))
    world.desk.revise_policy(
        policy.id, {"targets": {"normal": {"resolution": 60}}}, (), clock.now() - timedelta(days=1), AGENT, None
    )
    recompute = SlaRecompute(world.desk, world.runs, batch=1)

    def killed(done: int) -> None:
        raise KeyboardInterrupt  # the process dies right after its first batch's checkpoint

    with pytest.raises(KeyboardInterrupt):
        recompute.run("cli", progress=killed)
    state = world.runs.get("cli")
    assert (state["state"], state["cursor"], state["changed"]) == ("running", ids[0], 1)
    assert recompute.run("cli") == {"tickets": 3, "changed": 3}  # resumed: the first ticket not read again
    assert all(world.types(tid).count("SlaRecomputed") == 1 for tid in ids)
