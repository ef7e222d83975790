"""End to end with the real contacts service (in-process REST, gRPC on a free port) and
the sales gRPC CustomerValue server: deals for real contacts, merges re-point deals,
erasure scrubs names, and another service reads customer value over gRPC."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from crm.sales.v1 import sales_pb2, sales_pb2_grpc
from crm_contacts.app import SERVICE as CONTACTS
from crm_contacts.grpc_api import register as register_contacts
from crm_contacts.records.commands import ContactBook
from crm_sales import grpc_api, projections, reports
from crm_sales.app import SERVICE as SALES
from crm_sales.commands import SalesBook
from crmkit import rpc, stack, streams
from crmkit.events import rfc3339, utcnow
from crmkit.projector import rebuild
from crmkit.testing import ServiceHarness, harness


@pytest.fixture
def stack_of_two(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
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
    deal = post(
        sales, "/v1/deals", {"title": "قرارداد", "contact_id": duplicate["id"], "amount": "100.00", "currency": "USD"}
    )
    assert deal["contact"]["first_name"] == "Zahra"
    unknown = sales.client.post(
        "/v1/deals", json={"title": "x", "contact_id": "nobody", "currency": "USD"}, headers=sales.headers()
    )
    assert unknown.status_code == 422 and set(unknown.get_json()["errors"]) == {"contact_id"}
    post(sales, f"/v1/deals/{deal['id']}/won", status=200)
    post(contacts, f"/v1/contacts/{survivor['id']}/merge", {"duplicate_id": duplicate["id"]}, status=200)

    sales.project()
    book = SalesBook(sales.runtime)
    for batch in contacts.runtime.store.scan():  # what the worker's LocalContacts reads from the contacts topic
        book.local.handle(batch)
    events = sales.runtime.store.load(deal["id"])
    assert events[-1].type == "DealContactChanged"
    merge = next(e for e in contacts.runtime.store.load(duplicate["id"]) if e.type == "ContactMerged")
    assert events[-1].data == {
        "deal_id": deal["id"],
        "from": duplicate["id"],
        "to": survivor["id"],
        "reason": "contact_merged",
        "merge_id": merge.id,
    }  # the merge an unmerge reverses
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
        assert value.last_purchase_time.ToJsonString() == value.last_purchase_at.replace(".000Z", "Z")
        nobody = stub.GetCustomerValue(sales_pb2.GetCustomerValueRequest(contact_id="nobody"), timeout=2)
        assert nobody.lifetime_value.amount == "0.00" and nobody.tier == "standard"
        assert not nobody.last_purchase_at and not nobody.HasField("last_purchase_time")
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
    erased = sales.client.post(
        "/v1/deals", json={"title": "x", "contact_id": survivor["id"], "currency": "USD"}, headers=sales.headers()
    )
    assert erased.status_code == 422


SECRETS = ("Rezaei", "رضایی")  # the person's name, in every text sales was told about them


def reveals(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [secret for secret in SECRETS if secret in text]


def database_dump(subject: ServiceHarness) -> str:
    """Every document of the service's database: event store, read models, local contacts,
    stored idempotent responses, customer values ..."""
    db = subject.runtime.db
    return "\n".join(
        json.dumps(list(db[name].find()), default=str, ensure_ascii=False) for name in db.list_collection_names()
    )


def raw_topic(subject: ServiceHarness, out: Path) -> str:
    """The sales topic as a BI consumer reads it (`crm export`), decoded: nothing escaped."""
    subject.runtime.flush()
    settings = subject.runtime.settings
    streams.export(settings.kafka_bootstrap, settings.topic, fmt="jsonl", out=out)
    return "\n".join(json.dumps(json.loads(line), ensure_ascii=False) for line in out.read_text().splitlines())


def test_erasing_a_contact_leaves_nothing_of_them_in_sales(stack_of_two, tmp_path: Path) -> None:
    contacts, sales = stack_of_two
    ali = post(contacts, "/v1/contacts", {"first_name": "Ali", "last_name": "Rezaei", "email": "ali@example.com"})
    deal_body = {"title": "Renewal for Ali Rezaei", "contact_id": ali["id"], "amount": "900.00", "currency": "USD"}
    keyed = sales.headers(**{"Idempotency-Key": "renewal-ali"})
    created = sales.client.post("/v1/deals", json=deal_body, headers=keyed)
    assert created.status_code == 201 and created.get_json()["contact"]["last_name"] == "Rezaei"
    deal = created.get_json()
    due = rfc3339(utcnow() + timedelta(days=1))
    activity = post(
        sales,
        "/v1/activities",
        {
            "type": "call",
            "subject": "Call Ali Rezaei about the renewal",
            "notes": "آقای رضایی prefers mornings",
            "due_at": due,
            "deal_id": deal["id"],
        },
    )
    post(sales, f"/v1/activities/{activity['id']}/complete", {"outcome": "Rezaei wants a discount"}, status=200)
    quote = post(
        sales,
        "/v1/quotes",
        {
            "deal_id": deal["id"],
            "valid_until": (utcnow() + timedelta(days=30)).date().isoformat(),
            "notes": "Personal terms for Ali Rezaei",
            "lines": [{"description": "Setup at Mr Rezaei's home office", "quantity": "1", "unit_price": "900"}],
        },
    )
    post(sales, f"/v1/quotes/{quote['id']}/send", status=200)
    post(sales, f"/v1/quotes/{quote['id']}/reject", {"reason": "Rezaei found it too expensive"}, status=200)
    post(sales, f"/v1/deals/{deal['id']}/lost", {"reason": "Ali Rezaei moved abroad"}, status=200)
    sales.project()

    # what sales writes about the person is sealed in the store and on the topic from the start ...
    assert reveals(json.dumps(list(sales.runtime.store.events.find()), default=str, ensure_ascii=False)) == []
    assert reveals(raw_topic(sales, tmp_path / "before.jsonl")) == []
    # ... and reads in clear while the person is not erased
    seen = sales.client.get(f"/v1/activities/{activity['id']}", headers=sales.headers()).get_json()
    assert (seen["subject"], seen["outcome"]) == ("Call Ali Rezaei about the renewal", "Rezaei wants a discount")
    drafted = sales.client.get(f"/v1/quotes/{quote['id']}", headers=sales.headers()).get_json()
    assert drafted["lines"][0]["description"] == "Setup at Mr Rezaei's home office"

    post(contacts, f"/v1/contacts/{ali['id']}/erasure", {}, status=200)
    local = SalesBook(sales.runtime).local  # the worker's projection of the contacts topic
    for batch in contacts.runtime.store.scan():
        local.handle(batch)
    sales.project()

    def nothing_revealed() -> None:
        for path in (
            f"/v1/deals/{deal['id']}",
            f"/v1/activities/{activity['id']}",
            f"/v1/quotes/{quote['id']}",
            f"/v1/quotes/{quote['id']}?format=html",
            f"/v1/deals?contact_id={ali['id']}",
            f"/v1/activities?deal_id={deal['id']}",
            f"/v1/quotes?deal_id={deal['id']}",
        ):
            response = sales.client.get(path, headers=sales.headers())
            assert response.status_code == 200 and reveals(response.get_data()) == [], path
        assert reveals(database_dump(sales)) == []

    nothing_revealed()
    get = sales.client.get
    shown = get(f"/v1/activities/{activity['id']}", headers=sales.headers()).get_json()
    assert (shown["subject"], shown["notes"], shown["outcome"]) == (None, None, None)
    assert shown["status"] == "completed" and shown["customer_data_erased_at"]
    shown = get(f"/v1/quotes/{quote['id']}", headers=sales.headers()).get_json()
    assert (shown["notes"], shown["rejection_reason"], shown["lines"][0]["description"]) == (None, None, None)
    assert (shown["total"], shown["lines"][0]["total"]) == ("900.00", "900.00")  # the money stays
    shown = get(f"/v1/deals/{deal['id']}", headers=sales.headers()).get_json()
    assert (shown["title"], shown["lost_reason"], shown["contact"]["last_name"]) == (None, None, None)

    # the stored response of the keyed create is gone: a repeat is decided afresh, on an erased contact
    repeat = sales.client.post("/v1/deals", json=deal_body, headers=keyed)
    assert repeat.status_code == 422 and reveals(repeat.get_data()) == []
    # and nothing new is written about the person
    for path, body in (
        ("/v1/activities", {"type": "task", "subject": "x", "due_at": due, "contact_id": ali["id"]}),
        (
            "/v1/quotes",
            {
                "deal_id": deal["id"],
                "valid_until": "2099-01-01",
                "lines": [{"description": "x", "quantity": "1", "unit_price": "1"}],
            },
        ),
    ):
        refused = sales.client.post(path, json=body, headers=sales.headers())
        assert refused.status_code == 422, (path, refused.get_json())

    for view in projections.views(sales.runtime.db, sales.runtime.store, sales.runtime.settings.topic):
        rebuild(view, sales.runtime.store)
    nothing_revealed()
    assert reveals(raw_topic(sales, tmp_path / "after.jsonl")) == []

    stored = sales.runtime.store.count()
    for batch in contacts.runtime.store.scan():  # ContactErased delivered again: nothing new
        local.handle(batch)
    assert sales.runtime.store.count() == stored
