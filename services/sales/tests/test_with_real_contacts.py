"""End to end with the real contacts service (in-process REST, gRPC on a free port) and
the sales gRPC CustomerValue server: deals for real contacts, merges re-point deals,
erasure scrubs names, and another service reads customer value over gRPC."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from crm.sales.v1 import sales_pb2, sales_pb2_grpc
from crm_contacts.app import SERVICE as CONTACTS
from crm_contacts.commands import ContactBook
from crm_contacts.grpc_api import register as register_contacts
from crm_sales import grpc_api, reports
from crm_sales.app import SERVICE as SALES
from crm_sales.commands import SalesBook
from crmkit import rpc, stack
from crmkit.testing import ServiceHarness, harness


@pytest.fixture
def stack_of_two(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[tuple[ServiceHarness, ServiceHarness]]:
    with harness(CONTACTS, monkeypatch, service_env) as contacts:
        port = stack.free_port()
        book = ContactBook(contacts.runtime)
        server, _ = rpc.build_server("contacts", port, lambda srv: register_contacts(srv, book))
        server.start()
        monkeypatch.setenv("CRM_CONTACTS_GRPC_TARGET", f"127.0.0.1:{port}")
        try:
            with harness(SALES, monkeypatch, service_env) as sales:
                yield contacts, sales
        finally:
            server.stop(grace=None)


def post(subject: ServiceHarness, path: str, body: dict | None = None, status: int = 201) -> dict:
    response = subject.client.post(path, json=body, headers=subject.headers())
    assert response.status_code == status, response.get_json()
    return response.get_json()


def test_deals_follow_real_contacts_through_merge_and_erasure(stack_of_two) -> None:
    contacts, sales = stack_of_two
    survivor = post(contacts, "/v1/contacts", {"first_name": "زهرا", "last_name": "Karimi", "email": "z@example.com"})
    duplicate = post(contacts, "/v1/contacts", {"first_name": "Zahra", "phone": "+989121112233"})
    deal = post(sales, "/v1/deals", {"title": "قرارداد", "contact_id": duplicate["id"], "amount": "100.00",
                                     "currency": "USD"})
    assert deal["contact"]["first_name"] == "Zahra"
    unknown = sales.client.post("/v1/deals", json={"title": "x", "contact_id": "nobody", "currency": "USD"},
                                headers=sales.headers())
    assert unknown.status_code == 422 and set(unknown.get_json()["errors"]) == {"contact_id"}
    post(sales, f"/v1/deals/{deal['id']}/won", status=200)
    post(contacts, f"/v1/contacts/{survivor['id']}/merge", {"duplicate_id": duplicate["id"]}, status=200)

    sales.project()
    book = SalesBook(sales.runtime)
    for batch in contacts.runtime.store.scan():  # what the worker's LocalContacts reads from the contacts topic
        book.local.handle(batch)
    events = sales.runtime.store.load(deal["id"])
    assert events[-1].type == "DealContactChanged"
    assert events[-1].data == {"deal_id": deal["id"], "from": duplicate["id"], "to": survivor["id"],
                               "reason": "contact_merged"}
    sales.project()
    listed = sales.client.get(f"/v1/deals?contact_id={survivor['id']}", headers=sales.headers()).get_json()
    assert [d["id"] for d in listed["items"]] == [deal["id"]]
    assert listed["items"][0]["contact"]["first_name"] == "زهرا"

    reports.recompute_values(book)
    port = stack.free_port()
    server, _ = rpc.build_server("sales", port, lambda srv: grpc_api.register(srv, book))
    server.start()
    try:
        stub = sales_pb2_grpc.CustomerValueStub(rpc.channel(f"127.0.0.1:{port}", audience="sales", caller="contacts"))
        value = stub.GetCustomerValue(sales_pb2.GetCustomerValueRequest(contact_id=duplicate["id"]), timeout=2)
        assert value.contact_id == survivor["id"] and value.tier == "strategic" and value.won_deals == 1
        assert (value.lifetime_value.amount, value.lifetime_value.currency) == ("100.00", "USD")
        assert value.monetary_score == 5 and value.last_purchase_at
        nobody = stub.GetCustomerValue(sales_pb2.GetCustomerValueRequest(contact_id="nobody"), timeout=2)
        assert nobody.lifetime_value.amount == "0.00" and nobody.tier == "standard"
        with pytest.raises(grpc.RpcError) as bad:
            stub.GetCustomerValue(sales_pb2.GetCustomerValueRequest(contact_id=""), timeout=2)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(grace=None)

    post(contacts, f"/v1/contacts/{survivor['id']}/erasure", {}, status=200)
    for batch in contacts.runtime.store.scan():
        book.local.handle(batch)
    listed = sales.client.get(f"/v1/deals?contact_id={survivor['id']}", headers=sales.headers()).get_json()
    assert listed["items"][0]["contact"]["first_name"] is None
    assert listed["items"][0]["contact"]["status"] == "erased"
    erased = sales.client.post("/v1/deals", json={"title": "x", "contact_id": survivor["id"], "currency": "USD"},
                               headers=sales.headers())
    assert erased.status_code == 422
