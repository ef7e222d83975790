"""ExportContactRecords: every ticket the service desk holds on a person, with its comments and
rating, for their export (contacts asks). Against the real servicer and gRPC server (auth
included), before any read model has folded the tickets: the event store finds them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from crm.servicedesk.v1 import servicedesk_pb2, servicedesk_pb2_grpc
from crm_servicedesk.app import SERVICE
from crm_servicedesk.commands import TicketDesk
from crmkit import auth, clock, keys, rpc, stack
from crmkit.events import Metadata
from crmkit.testing import ServiceHarness


@pytest.fixture
def target(desk: ServiceHarness) -> Iterator[str]:
    port = stack.free_port()
    server, _ = rpc.build_server("service-desk", port, lambda srv: SERVICE.servicers(srv, desk.runtime))
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def export(target: str, contact_ids: list[str], *roles: str, token: str | None = None) -> dict:
    token = token or auth.issue(keys.ring(), "dpo", list(roles or ["servicedesk:export"]))
    with rpc.token_channel(target, token) as channel:
        reply = servicedesk_pb2_grpc.SupportSummaryStub(channel).ExportContactRecords(
            servicedesk_pb2.ExportContactRecordsRequest(contact_ids=contact_ids), timeout=10
        )
    return json.loads(reply.records_json)


def post(desk: ServiceHarness, path: str, body: dict, status: int = 201) -> dict:
    response = desk.client.post(path, json=body, headers=desk.headers("servicedesk:write"))
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def test_the_export_holds_the_persons_tickets_with_comments_and_rating(
    desk: ServiceHarness, directory, target: str
) -> None:
    sara, merged, other = directory.add("c-sara"), directory.add("c-merged"), directory.add("c-other")
    ticket = post(
        desk,
        "/v1/tickets",
        {
            "subject": "سفارش نرسیده",
            "description": "My order has not arrived",
            "contact_id": sara,
            "channel": "email",
            "type": "complaint",
        },
    )
    post(desk, f"/v1/tickets/{ticket['id']}/comments", {"body": "Still waiting", "author_type": "customer"})
    post(desk, f"/v1/tickets/{ticket['id']}/status", {"status": "solved"}, status=200)
    post(desk, f"/v1/tickets/{ticket['id']}/satisfaction", {"csat": 4, "comment": "خوب بود", "nps": 9})
    earlier, _, moved = (
        post(
            desk,
            "/v1/tickets",
            {"subject": subject, "contact_id": cid, "channel": "phone", "description": "d", "type": "question"},
        )
        for subject, cid in (("Old", merged), ("Not hers", other), ("Moved", sara))
    )
    TicketDesk(desk.runtime).tickets.change(
        moved["id"], lambda t: t.repoint(other, clock.now()), Metadata(actor="test")
    )  # hers no more

    records = export(target, [sara, merged])  # nothing projected: the event store finds them

    assert [t["id"] for t in records["tickets"]] == [ticket["id"], earlier["id"]]
    mine = records["tickets"][0]
    assert mine["subject"] == "سفارش نرسیده" and mine["status"] == "solved"
    assert [(c["author_type"], c["body"]) for c in mine["comments"]] == [("customer", "Still waiting")]
    assert (mine["satisfaction"]["csat"], mine["satisfaction"]["comment"], mine["satisfaction"]["nps"]) == (
        4,
        "خوب بود",
        9,
    )
    assert moved["id"] not in {t["id"] for t in records["tickets"]}


def test_an_unknown_contact_has_no_tickets(desk: ServiceHarness, target: str) -> None:
    assert export(target, ["nobody"]) == {"tickets": []}


def test_the_export_needs_the_export_role(desk: ServiceHarness, target: str) -> None:
    for roles in (["servicedesk:read"], ["servicedesk:write"], ["sales:export"]):
        with pytest.raises(grpc.RpcError) as refused:
            export(target, ["nobody"], *roles)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "servicedesk:export" in refused.value.details()
    contacts_service = auth.service_token("contacts", keys.own_key("contacts"), "servicedesk")
    assert export(target, ["nobody"], token=contacts_service) == {"tickets": []}
    with pytest.raises(grpc.RpcError) as bad:
        export(target, [], "admin")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
