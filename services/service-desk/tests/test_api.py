"""The service desk's REST API on the real local servers: tickets, workflow, SLA, satisfaction, reports."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from crm_servicedesk.app import SERVICE
from crm_servicedesk.commands import TicketDesk
from crmkit import clock
from crmkit.events import RecordedEvent, new_id, utcnow
from crmkit.stack import free_port
from crmkit.testing import ServiceHarness, harness, stored_events

POLICY = {
    "name": "Standard",
    "targets": {
        "normal": {"first_response": 60, "next_response": 120, "resolution": 480},
        "urgent": {"first_response": 15, "resolution": 120},
    },
    "escalation": {"action": "raise_priority"},
}


def post(desk: ServiceHarness, path: str, body: object, *roles: str, **headers: str):
    return desk.client.post(path, json=body, headers=desk.headers(*(roles or ("servicedesk:write",)), **headers))


def open_ticket(desk: ServiceHarness, contact_id: str, **fields: object) -> dict:
    body = {
        "subject": "سفارش نرسیده",
        "description": "My order has not arrived",
        "contact_id": contact_id,
        "channel": "email",
        "type": "complaint",
        **fields,
    }
    response = post(desk, "/v1/tickets", body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def projection(desk: ServiceHarness, name: str):
    """One of the worker's projections, by name (the list's order is the wiring's, not a contract)."""
    [found] = [p for p in desk.spec.projections(desk.runtime) if p.name == name]
    return found


def define(desk: ServiceHarness, policy: dict) -> dict:
    response = post(desk, "/v1/sla-policies", policy)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_open_ticket_gets_the_policy_due_times_and_contact(desk: ServiceHarness, directory) -> None:
    cid = directory.add("c-1")
    define(desk, POLICY)
    ticket = open_ticket(desk, cid)
    assert ticket["status"] == "new" and ticket["version"] == 1 and ticket["priority"] == "normal"
    assert ticket["subject"] == "سفارش نرسیده"
    targets = {t["target"]: t for t in ticket["sla"]}
    assert set(targets) == {"first_response", "resolution"}
    assert targets["first_response"]["status"] == "active" and targets["first_response"]["due_at"]
    assert 59 <= targets["first_response"]["remaining_minutes"] <= 60
    got = desk.client.get(f"/v1/tickets/{ticket['id']}", headers=desk.headers("servicedesk:read"))
    assert got.status_code == 200 and got.headers["ETag"] == '"1"'
    assert got.get_json()["contact"]["name"] == "Sara Ahmadi"


def test_unknown_contact_is_422_and_contacts_down_is_503(desk: ServiceHarness, directory, monkeypatch) -> None:
    body = {"subject": "x", "contact_id": "nobody", "channel": "web", "type": "question"}
    response = post(desk, "/v1/tickets", body)
    assert response.status_code == 422 and set(response.get_json()["errors"]) == {"contact_id"}
    monkeypatch.setenv("CRM_CONTACTS_GRPC_TARGET", f"127.0.0.1:{free_port()}")  # nobody listens there
    with harness(SERVICE, monkeypatch, {"CRM_TEST_SUFFIX": new_id().replace("-", "")[-12:]}) as down:
        response = post(down, "/v1/tickets", {**body, "contact_id": "c-1"})
        assert response.status_code == 503 and "contacts" in response.get_json()["detail"]
        assert down.runtime.store.count() == 0
    assert desk.runtime.store.count() == 0


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({}, {"subject", "contact_id", "channel", "type"}),
        (
            {
                "subject": "",
                "contact_id": "c-1",
                "channel": "fax",
                "type": "rant",
                "priority": "asap",
                "tags": "x",
                "extra": 1,
            },
            {"subject", "channel", "type", "priority", "tags", "extra"},
        ),
        (
            {"subject": "a\u0000", "contact_id": "bad id!", "channel": "web", "type": "question"},
            {"subject", "contact_id"},
        ),
    ],
)
def test_bad_ticket_input_lists_every_field_and_stores_nothing(
    desk: ServiceHarness, directory, payload: dict, fields: set
) -> None:
    directory.add("c-1")
    response = post(desk, "/v1/tickets", payload)
    assert response.status_code == 422, response.get_json()
    assert response.content_type == "application/problem+json"
    assert set(response.get_json()["errors"]) == fields
    assert desk.runtime.store.count() == 0


def test_malformed_json_auth_and_roles(desk: ServiceHarness, directory) -> None:
    bad = desk.client.post(
        "/v1/tickets", data=b"{nope", headers={**desk.headers("servicedesk:write"), "Content-Type": "application/json"}
    )
    assert bad.status_code == 400
    assert desk.client.get("/v1/tickets").status_code == 401
    assert post(desk, "/v1/tickets", {}, "servicedesk:read").status_code == 403
    assert desk.client.get("/v1/tickets/nope", headers=desk.headers("servicedesk:read")).status_code == 404


def test_workflow_comments_and_illegal_transitions(desk: ServiceHarness, directory) -> None:
    cid = directory.add("c-1")
    define(desk, POLICY)
    ticket = open_ticket(desk, cid, priority="normal")
    tid = ticket["id"]
    assert post(desk, f"/v1/tickets/{tid}/status", {"status": "closed"}).status_code == 409
    assert post(desk, f"/v1/tickets/{tid}/status", {"status": "nonsense"}).status_code == 422
    note = post(desk, f"/v1/tickets/{tid}/comments", {"body": "check the courier", "public": False})
    assert note.status_code == 201 and note.get_json()["status"] == "new"
    reply = post(desk, f"/v1/tickets/{tid}/comments", {"body": "We are on it"}).get_json()
    assert reply["status"] == "open" and reply["first_response_at"]
    first = {t["target"]: t for t in reply["sla"]}["first_response"]
    assert first["status"] == "met"
    assert (
        post(desk, f"/v1/tickets/{tid}/comments", {"body": "x", "public": False, "author_type": "customer"}).status_code
        == 422
    )
    customer = post(desk, f"/v1/tickets/{tid}/comments", {"body": "Still waiting", "author_type": "customer"})
    assert {t["target"] for t in customer.get_json()["sla"]} == {"first_response", "next_response", "resolution"}
    pending = post(desk, f"/v1/tickets/{tid}/status", {"status": "pending"}).get_json()
    assert {t["target"]: t["status"] for t in pending["sla"]}["resolution"] == "paused"
    assert post(desk, f"/v1/tickets/{tid}/assign", {}).status_code == 422
    assigned = post(desk, f"/v1/tickets/{tid}/assign", {"assignee": "reza", "group": "tier-2"}).get_json()
    assert assigned["assignee"] == "reza" and assigned["group"] == "tier-2"
    solved = post(desk, f"/v1/tickets/{tid}/status", {"status": "solved"}).get_json()
    assert solved["status"] == "solved" and solved["solved_at"]
    assert post(desk, f"/v1/tickets/{tid}/status", {"status": "pending"}).status_code == 409
    reopened = post(desk, f"/v1/tickets/{tid}/status", {"status": "open"}).get_json()
    assert reopened["status"] == "open"
    post(desk, f"/v1/tickets/{tid}/status", {"status": "solved"})
    closed = post(desk, f"/v1/tickets/{tid}/status", {"status": "closed"}).get_json()
    assert closed["status"] == "closed"
    assert post(desk, f"/v1/tickets/{tid}/status", {"status": "open"}).status_code == 409
    assert post(desk, f"/v1/tickets/{tid}/comments", {"body": "hello?"}).status_code == 409
    stale = post(desk, f"/v1/tickets/{tid}/assign", {"assignee": "x"}, **{"If-Match": '"2"'})
    assert stale.status_code == 412
    history = desk.client.get(f"/v1/tickets/{tid}/history", headers=desk.headers()).get_json()["items"]
    types = [entry["type"] for entry in history]
    assert types[0] == "TicketOpened" and "TicketSolved" in types and "TicketAssigned" in types
    stored = [e.type for e in desk.runtime.store.load(tid)]
    assert stored == types


def test_satisfaction_once_after_solve(desk: ServiceHarness, directory) -> None:
    cid = directory.add("c-1")
    tid = open_ticket(desk, cid)["id"]
    rating = {"csat": 4, "comment": "خوب بود", "nps": 9, "servqual": {"empathy": 6, "reliability": 5}}
    assert post(desk, f"/v1/tickets/{tid}/satisfaction", rating).status_code == 409  # not solved yet
    post(desk, f"/v1/tickets/{tid}/status", {"status": "solved"})
    bad = post(desk, f"/v1/tickets/{tid}/satisfaction", {"csat": 6, "nps": 11, "servqual": {"empathy": 0, "x": 1}})
    assert bad.status_code == 422
    assert set(bad.get_json()["errors"]) == {"csat", "nps", "servqual.empathy", "servqual.x"}
    rated = post(desk, f"/v1/tickets/{tid}/satisfaction", rating)
    assert rated.status_code == 201 and rated.get_json()["satisfaction"]["csat"] == 4
    assert post(desk, f"/v1/tickets/{tid}/satisfaction", rating).status_code == 409
    [sealed] = stored_events(desk.runtime.db["events"], {"stream_id": tid}, type="SatisfactionRated")
    assert "pii" in sealed["data"]["comment"]  # the customer's words are encrypted at rest and on Kafka


def test_policies_validation_and_strategic_customers_get_the_stricter_one(desk: ServiceHarness, directory) -> None:
    bad = post(
        desk,
        "/v1/sla-policies",
        {
            "name": "",
            "targets": {"urgent": {"resolution": 0}},
            "business_hours": {"time_zone": "Mars/Base", "working_days": ["funday"], "start": "17:00", "end": "09:00"},
            "holidays": ["2026-13-01"],
            "escalation": {"action": "reassign"},
        },
    )
    assert bad.status_code == 422
    assert set(bad.get_json()["errors"]) >= {
        "name",
        "targets.urgent.resolution",
        "business_hours.time_zone",
        "business_hours.working_days.0",
        "holidays.0",
        "escalation.assignee",
    }
    assert desk.runtime.store.count() == 0
    general = define(
        desk,
        {
            **POLICY,
            "business_hours": {
                "time_zone": "Asia/Tehran",
                "working_days": ["saturday", "sunday", "monday", "tuesday", "wednesday"],
                "start": "08:00",
                "end": "16:00",
            },
            "holidays": ["2026-03-21"],
        },
    )
    strategic = define(
        desk,
        {
            "name": "Strategic",
            "customer_tiers": ["strategic"],
            "targets": {"normal": {"first_response": 15, "resolution": 240}},
        },
    )
    vip, regular = directory.add("vip"), directory.add("regular")
    tiers = projection(desk, "customer_tiers")
    tiers.handle(
        [
            RecordedEvent(
                new_id(),
                "sales",
                "cv-vip",
                "customer_value",
                1,
                "CustomerTierChanged",
                1,
                {"contact_id": vip, "tier": "strategic", "previous_tier": "standard"},
                utcnow(),
                "system",
                new_id(),
                None,
            )
        ]
    )
    assert open_ticket(desk, vip)["sla_policy"]["id"] == strategic["id"]
    mine = open_ticket(desk, regular)
    assert mine["sla_policy"]["id"] == general["id"]
    desk.project()
    listed = desk.client.get("/v1/sla-policies", headers=desk.headers("servicedesk:read")).get_json()
    assert {p["id"] for p in listed["items"]} == {general["id"], strategic["id"]}


def test_list_filters_and_cursor(desk: ServiceHarness, directory) -> None:
    a, b = directory.add("a"), directory.add("b")
    for i in range(5):
        open_ticket(desk, a if i % 2 else b, priority="high" if i < 2 else "low")
    desk.project()
    read = desk.headers("servicedesk:read")
    page1 = desk.client.get("/v1/tickets?limit=2", headers=read).get_json()
    page2 = desk.client.get(f"/v1/tickets?limit=2&cursor={page1['next_cursor']}", headers=read).get_json()
    assert len(page1["items"]) == 2 and len(page2["items"]) == 2
    assert not {t["id"] for t in page1["items"]} & {t["id"] for t in page2["items"]}
    assert len(desk.client.get("/v1/tickets?priority=high", headers=read).get_json()["items"]) == 2
    assert len(desk.client.get(f"/v1/tickets?contact_id={a}", headers=read).get_json()["items"]) == 2
    assert len(desk.client.get("/v1/tickets?breached=false&status=new", headers=read).get_json()["items"]) == 5
    bad = desk.client.get("/v1/tickets?status=x&priority=y&limit=0&breached=maybe", headers=read)
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"status", "priority", "limit", "breached"}


def test_breach_escalates_and_is_recorded_once(desk: ServiceHarness, directory, monkeypatch) -> None:
    from crm_servicedesk.commands import TicketDesk

    cid = directory.add("c-1")
    define(desk, POLICY)
    tid = open_ticket(desk, cid, priority="normal")["id"]
    desk.project()
    sweeper = TicketDesk(desk.runtime)
    assert sweeper.sweep() == {"due": 0, "breaches": 0}
    monkeypatch.setenv(clock.OFFSET_VARIABLE, str(timedelta(hours=2).total_seconds()))
    assert sweeper.sweep()["breaches"] == 1  # first response (60 min) breached → priority raised to high
    assert sweeper.sweep()["breaches"] == 0  # the view has not caught up, the stream says "already breached"
    desk.project()
    ticket = desk.client.get(f"/v1/tickets/{tid}", headers=desk.headers()).get_json()
    assert ticket["breached"] and ticket["priority"] == "high"
    assert [b["target"] for b in ticket["breaches"]] == ["first_response"]
    types = [e.type for e in desk.runtime.store.load(tid)]
    assert types.count("SlaBreached") == 1 and "TicketEscalated" in types
    read = desk.headers("servicedesk:read")
    assert len(desk.client.get("/v1/tickets?breached=true", headers=read).get_json()["items"]) == 1


def test_a_sweep_that_loses_a_race_decides_again_on_the_fresh_stream(
    desk: ServiceHarness, directory, monkeypatch
) -> None:
    from crm_servicedesk.commands import TicketDesk
    from crmkit.events import Metadata

    cid = directory.add("c-1")
    define(desk, POLICY)
    tids = [open_ticket(desk, cid, priority="normal")["id"] for _ in range(3)]
    desk.project()
    sweeper, agent = TicketDesk(desk.runtime), TicketDesk(desk.runtime)
    load = sweeper.tickets.get_many

    def load_then_someone_assigns(ids: list[str]) -> dict:
        loaded = load(ids)  # the sweep decided on these; an agent changes one before its bulk append
        agent.assign(tids[1], {"assignee": "ana"}, Metadata(actor="user:ana"), None)
        return loaded

    monkeypatch.setattr(sweeper.tickets, "get_many", load_then_someone_assigns)
    monkeypatch.setenv(clock.OFFSET_VARIABLE, str(timedelta(hours=2).total_seconds()))
    assert sweeper.sweep() == {"due": 3, "breaches": 3}
    for tid in tids:
        types = [e.type for e in desk.runtime.store.load(tid)]
        assert types.count("SlaBreached") == 1 and types.count("TicketEscalated") == 1, (tid, types)
    assert "TicketAssigned" in [e.type for e in desk.runtime.store.load(tids[1])]


def test_reports(desk: ServiceHarness, directory) -> None:
    a, b = directory.add("a"), directory.add("b")
    define(desk, POLICY)
    t1 = open_ticket(desk, a, group="billing")["id"]
    t2 = open_ticket(desk, b, type="question")["id"]
    for tid, csat, nps in ((t1, 5, 10), (t2, 2, 3)):
        post(desk, f"/v1/tickets/{tid}/comments", {"body": "hi"})
        post(desk, f"/v1/tickets/{tid}/status", {"status": "solved"})
        post(desk, f"/v1/tickets/{tid}/satisfaction", {"csat": csat, "nps": nps, "servqual": {"empathy": csat}})
    desk.project()
    read = desk.headers("servicedesk:read")
    sla = desk.client.get("/v1/reports/sla", headers=read).get_json()
    assert sla["tickets"] == 2 and sla["compliance"]["first_response"]["normal"]["compliance_percent"] == 100.0
    assert sla["first_response"]["count"] == 2 and sla["resolution"]["p90_minutes"] is not None
    sat = desk.client.get("/v1/reports/satisfaction", headers=read).get_json()
    assert sat["csat"]["average"] == 3.5 and sat["csat"]["distribution"]["5"] == 1
    assert sat["nps"]["score"] == 0.0 and sat["servqual"]["empathy"]["mean"] == 3.5
    assert sat["complaint_rate_per_100_customers"] == 50.0
    team = desk.client.get("/v1/reports/satisfaction?team=billing", headers=read).get_json()
    assert team["csat"]["responses"] == 1
    bad = desk.client.get("/v1/reports/sla?from=yesterday&to=2026-01-01T00:00:00", headers=read)
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"from", "to"}


def test_contact_erased_scrubs_text_and_merge_repoints(desk: ServiceHarness, directory) -> None:
    gone, dup, survivor = directory.add("gone"), directory.add("dup"), directory.add("survivor")
    tid = open_ticket(desk, gone)["id"]
    post(desk, f"/v1/tickets/{tid}/comments", {"body": "my address is 12 Vali-asr", "author_type": "customer"})
    post(desk, f"/v1/tickets/{tid}/comments", {"body": "agent note", "public": False})
    other = post(
        desk,
        "/v1/tickets",
        {"subject": "again", "contact_id": gone, "channel": "web", "type": "question"},
        **{"Idempotency-Key": "second-ticket"},
    ).get_json()["id"]
    moved = open_ticket(desk, dup)["id"]
    desk.project()
    contacts = projection(desk, "contacts")
    keys, stored_responses = desk.runtime.vault.keys, desk.runtime.db["idempotency_keys"]
    assert keys.count_documents({"_id": {"$in": [tid, other]}}) == 2
    assert stored_responses.count_documents({"resource": f"/v1/tickets/{other}"}) == 1

    def contact_event(cid: str, kind: str, data: dict) -> RecordedEvent:
        return RecordedEvent(new_id(), "contacts", cid, "contact", 5, kind, 1, data, utcnow(), "system", new_id(), None)

    contacts.handle(
        [
            contact_event(gone, "ContactErased", {"reason": "gdpr"}),
            contact_event(dup, "ContactMerged", {"survivor_id": survivor}),
        ]
    )
    desk.project()
    ticket = desk.client.get(f"/v1/tickets/{tid}", headers=desk.headers()).get_json()
    assert ticket["subject"] is None and ticket["description"] is None
    bodies = {c["author_type"]: c["body"] for c in ticket["comments"]}
    assert bodies == {"customer": None, "agent": "agent note"}
    assert ticket["contact"]["name"] is None
    raw = json.dumps(
        [e["data"] for e in stored_events(desk.runtime.db["events"], {"stream_id": tid})], ensure_ascii=False
    )
    assert "Vali-asr" not in raw and "سفارش" not in raw  # sealed, and the key is gone
    assert keys.count_documents({"_id": {"$in": [tid, other]}, "key": {"$exists": True}}) == 0  # tombstones only
    assert stored_responses.count_documents({"resource": f"/v1/tickets/{other}"}) == 0
    assert desk.client.get(f"/v1/tickets/{other}", headers=desk.headers()).get_json()["subject"] is None
    listed = desk.client.get(f"/v1/tickets?contact_id={gone}", headers=desk.headers()).get_json()["items"]
    assert listed[0]["subject"] is None and listed[0]["comments"][0]["body"] is None
    assert desk.client.get(f"/v1/tickets/{moved}", headers=desk.headers()).get_json()["contact_id"] == survivor
    contacts.handle([contact_event(dup, "ContactMerged", {"survivor_id": survivor})])  # repeated: nothing new
    assert [e.type for e in desk.runtime.store.load(moved)].count("TicketContactChanged") == 1


def test_a_ticket_written_to_after_its_customers_erasure_stays_readable(desk: ServiceHarness, directory) -> None:
    gone = directory.add("gone")
    tid = open_ticket(desk, gone)["id"]
    post(desk, f"/v1/tickets/{tid}/comments", {"body": "my address is 12 Vali-asr", "author_type": "customer"})
    desk.project()
    contacts = projection(desk, "contacts")
    contacts.handle(
        [
            RecordedEvent(
                new_id(),
                "contacts",
                gone,
                "contact",
                2,
                "ContactErased",
                1,
                {"reason": "gdpr"},
                utcnow(),
                "system",
                new_id(),
                None,
            )
        ]
    )
    assert post(desk, f"/v1/tickets/{tid}/comments", {"body": "we closed your account"}).status_code == 201
    again = post(desk, f"/v1/tickets/{tid}/comments", {"body": "I moved to 7 Enqelab", "author_type": "customer"})
    assert again.status_code == 201
    desk.project()

    response = desk.client.get(f"/v1/tickets/{tid}", headers=desk.headers())
    assert response.status_code == 200, response.get_json()
    ticket = response.get_json()
    assert ticket["subject"] is None and ticket["description"] is None
    assert [(c["author_type"], c["body"]) for c in ticket["comments"]] == [
        ("customer", None),
        ("agent", "we closed your account"),
        ("customer", None),
    ]  # nothing new kept about them
    history = desk.client.get(f"/v1/tickets/{tid}/history", headers=desk.headers())
    assert history.status_code == 200, history.get_json()
    assert [e["type"] for e in history.get_json()["items"]].count("TicketCommented") == 3
    raw = json.dumps(
        [e["data"] for e in stored_events(desk.runtime.db["events"], {"stream_id": tid})], ensure_ascii=False
    )
    assert "Enqelab" not in raw and "Vali-asr" not in raw
    stored = desk.runtime.store.load(tid)
    TicketDesk(desk.runtime).erase_contact(gone)  # the hook run again (a redelivery, a rebuild): nothing new
    assert desk.runtime.store.load(tid) == stored


def test_support_summary_over_grpc(desk: ServiceHarness, directory) -> None:
    import grpc

    from crm.servicedesk.v1 import servicedesk_pb2, servicedesk_pb2_grpc
    from crm_servicedesk.commands import TicketDesk
    from crm_servicedesk.grpc_api import register
    from crmkit import rpc, stack

    cid = directory.add("c-1")
    t1 = open_ticket(desk, cid)["id"]
    open_ticket(desk, cid, type="question")
    post(desk, f"/v1/tickets/{t1}/status", {"status": "solved"})
    post(desk, f"/v1/tickets/{t1}/satisfaction", {"csat": 5})
    desk.project()
    port = stack.free_port()
    server, _ = rpc.build_server("service-desk", port, lambda srv: register(srv, TicketDesk(desk.runtime)))
    server.start()
    try:
        with rpc.channel(f"127.0.0.1:{port}", audience="service-desk", caller="contacts") as channel:
            stub = servicedesk_pb2_grpc.SupportSummaryStub(channel)
            reply = stub.GetSupportSummary(servicedesk_pb2.GetSupportSummaryRequest(contact_id=cid), timeout=5)
            assert (reply.open_tickets, reply.total_tickets, reply.complaints) == (1, 2, 1)
            assert reply.last_satisfaction.ticket_id == t1 and reply.last_satisfaction.csat == 5
            assert reply.last_satisfaction.nps == -1
            rated = reply.last_satisfaction
            assert rated.rate_time.ToDatetime(tzinfo=UTC) == datetime.fromisoformat(rated.rated_at)
            with pytest.raises(grpc.RpcError) as missing:
                stub.GetSupportSummary(servicedesk_pb2.GetSupportSummaryRequest(contact_id="nobody"), timeout=5)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as empty:
                stub.GetSupportSummary(servicedesk_pb2.GetSupportSummaryRequest(contact_id=" "), timeout=5)
            assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(grace=None)
