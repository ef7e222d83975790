"""ExportContactRecords: everything sales holds on a person, for their export (contacts asks).

Against the real sales servicer and gRPC server (auth included), with records no read model
has folded yet: the event store finds them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from crm.sales.v1 import sales_pb2, sales_pb2_grpc
from crm_sales.app import SERVICE
from crm_sales.commands import SalesBook
from crmkit import auth, keys, rpc, stack
from crmkit.events import Metadata, new_id, rfc3339, utcnow
from crmkit.testing import ServiceHarness


@pytest.fixture
def target(sales: ServiceHarness) -> Iterator[str]:
    port = stack.free_port()
    server, _ = rpc.build_server("sales", port, lambda srv: SERVICE.servicers(srv, sales.runtime))
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def export(target: str, contact_ids: list[str], *roles: str, token: str | None = None) -> dict:
    token = token or auth.issue(keys.ring(), "dpo", list(roles or ["sales:export"]))
    with rpc.token_channel(target, token) as channel:
        reply = sales_pb2_grpc.CustomerValueStub(channel).ExportContactRecords(
            sales_pb2.ExportContactRecordsRequest(contact_ids=contact_ids), timeout=10
        )
    return json.loads(reply.records_json)


def post(sales: ServiceHarness, path: str, body: dict) -> dict:
    response = sales.client.post(path, json=body, headers=sales.headers())
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_the_export_holds_the_persons_deals_quotes_with_lines_and_activities(
    sales: ServiceHarness, people, target: str
) -> None:
    maryam, merged, other = people.add(new_id(), first_name="مریم"), people.add(new_id()), people.add(new_id())
    deal = post(sales, "/v1/deals", {"title": "Laptops", "contact_id": maryam, "amount": "500.00", "currency": "USD"})
    quote = post(
        sales,
        "/v1/quotes",
        {
            "deal_id": deal["id"],
            "valid_until": "2099-01-01",
            "lines": [{"description": "نصب و راه‌اندازی", "quantity": "1.5", "unit_price": "100"}],
        },
    )
    call = post(
        sales,
        "/v1/activities",
        {
            "type": "call",
            "subject": "Follow up",
            "deal_id": deal["id"],
            "due_at": rfc3339(utcnow() + timedelta(days=1)),
        },
    )
    old = post(sales, "/v1/deals", {"title": "Old", "contact_id": merged, "amount": "1.00", "currency": "USD"})
    post(sales, "/v1/deals", {"title": "Not hers", "contact_id": other, "amount": "9.00", "currency": "USD"})
    moved = post(sales, "/v1/deals", {"title": "Moved", "contact_id": maryam, "amount": "2.00", "currency": "USD"})
    SalesBook(sales.runtime).deals.change(moved["id"], lambda d: d.change_contact(other, "contact_merged"), Metadata())

    records = export(target, [maryam, merged])  # nothing projected: the event store finds them

    assert [d["id"] for d in records["deals"]] == [deal["id"], old["id"]]
    assert records["deals"][0]["title"] == "Laptops" and records["deals"][0]["amount"] == "500.00"
    assert records["deals"][0]["stage_history"][0]["stage"]
    assert [q["id"] for q in records["quotes"]] == [quote["id"]]
    assert records["quotes"][0]["lines"][0]["description"] == "نصب و راه‌اندازی"
    assert records["quotes"][0]["total"] == quote["total"] and records["quotes"][0]["version"] == 1
    assert [a["id"] for a in records["activities"]] == [call["id"]]
    assert records["activities"][0]["subject"] == "Follow up"


def test_an_unknown_contact_has_no_records(sales: ServiceHarness, target: str) -> None:
    assert export(target, ["nobody"]) == {"deals": [], "quotes": [], "activities": []}


def test_the_export_needs_the_export_role(sales: ServiceHarness, target: str) -> None:
    for roles in (["sales:read"], ["sales:write"], ["contacts:export"]):
        with pytest.raises(grpc.RpcError) as refused:
            export(target, ["nobody"], *roles)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED and "sales:export" in refused.value.details()
    contacts_service = auth.service_token("contacts", keys.own_key("contacts"), "sales")
    assert export(target, ["nobody"], token=contacts_service)["deals"] == []
    assert export(target, ["nobody"], "admin")["deals"] == []


def test_bad_ids_are_invalid_arguments_naming_each(sales: ServiceHarness, target: str) -> None:
    assert fields_refused(target, []) == {"contact_ids"}
    assert fields_refused(target, ["ok", " ", "x" * 129]) == {"contact_ids[1]", "contact_ids[2]"}


def fields_refused(target: str, contact_ids: list[str]) -> set[str]:
    """The fields the BadRequest detail of a refused export names."""
    with pytest.raises(grpc.RpcError) as bad:
        export(target, contact_ids)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(bad.value)
    assert status is not None
    found = set()
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        found |= {violation.field for violation in bad_request.field_violations}
    return found
