"""Other services' view of contacts: `crmkit.directory` against the real contacts service.

The contacts service runs in-process (REST through its Flask app, gRPC on a free port);
the events go over the real Kafka stand-in; `LocalContacts` is what sales, service desk
and messaging use to know who a contact is.
"""

from collections.abc import Iterator

import pytest
from pymongo import MongoClient

from crm_contacts.app import SERVICE
from crm_contacts.grpc_api import register
from crm_contacts.records.commands import ContactBook
from crmkit import rpc, stack
from crmkit.directory import ContactDirectory, LocalContacts
from crmkit.errors import NotFound, Unavailable
from crmkit.events import new_id
from crmkit.projector import ProjectorRunner, rebuild
from crmkit.testing import ServiceHarness, harness, wait_until


@pytest.fixture
def contacts(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[ServiceHarness]:
    with harness(SERVICE, monkeypatch, service_env) as subject:
        yield subject


@pytest.fixture
def directory(contacts: ServiceHarness, monkeypatch: pytest.MonkeyPatch) -> Iterator[ContactDirectory]:
    monkeypatch.setenv("CRM_SERVICE_NAME", "sales")  # the client calls as sales does
    port = stack.free_port()
    server, _ = rpc.build_server("contacts", port, lambda srv: register(srv, ContactBook(contacts.runtime)))
    server.start()
    client = ContactDirectory(f"127.0.0.1:{port}")
    yield client
    client.close()
    server.stop(grace=None)


@pytest.fixture
def local(contacts: ServiceHarness, directory: ContactDirectory, servers) -> Iterator[tuple[LocalContacts, list]]:
    merges: list[tuple[str, str]] = []
    db = MongoClient(servers.mongo_url)[f"t_sales_{new_id()[-12:]}"]
    projection = LocalContacts(
        "contacts", db["contacts"], directory, on_merged=lambda a, b, _merge_id: merges.append((a, b)), service="sales"
    )
    projection.topics = (contacts.runtime.settings.topic,)  # this test's contacts topic
    yield projection, merges
    db.client.close()


def post(contacts: ServiceHarness, path: str, body: dict) -> dict:
    response = contacts.client.post(path, json=body, headers=contacts.headers())
    assert response.status_code in (200, 201), response.get_json()
    return response.get_json()


def test_the_directory_client_answers_lookups_and_reports_outages(
    contacts: ServiceHarness, directory: ContactDirectory
) -> None:
    sara = post(contacts, "/v1/contacts", {"first_name": "سارا", "email": "sara@example.com", "locale": "fa-IR"})
    found = directory.get(sara["id"])
    assert found["first_name"] == "سارا" and found["locale"] == "fa-IR" and found["company_id"] is None
    assert set(directory.many([sara["id"], "nobody", sara["id"]])) == {sara["id"]}
    assert directory.consent(sara["id"], "email").reason == "no_consent_recorded"
    with pytest.raises(NotFound):
        directory.get("nobody")
    down = ContactDirectory(f"127.0.0.1:{stack.free_port()}", deadline=0.5)
    with pytest.raises(Unavailable):
        down.get(sara["id"])
    down.close()


def test_local_contacts_follow_creates_updates_merges_and_erasures(
    contacts: ServiceHarness, local: tuple[LocalContacts, list], servers
) -> None:
    projection, merges = local
    ali = post(contacts, "/v1/contacts", {"first_name": "Ali", "email": "ali@example.com"})
    dup = post(contacts, "/v1/contacts", {"first_name": "Ali R", "phone": "+989121234567"})
    gone = post(contacts, "/v1/contacts", {"first_name": "Gone", "email": "gone@example.com"})
    contacts.client.patch(f"/v1/contacts/{ali['id']}", json={"last_name": "Rezaei"}, headers=contacts.headers())
    post(contacts, f"/v1/contacts/{ali['id']}/merge", {"duplicate_id": dup["id"]})
    post(contacts, f"/v1/contacts/{gone['id']}/erasure", {})
    contacts.runtime.flush()

    runner = ProjectorRunner(
        "sales", projection, servers.kafka_bootstrap, lambda events: events, db=projection.collection.database
    )

    def caught_up() -> bool:
        runner.poll_once()
        erased = projection.collection.find_one({"_id": gone["id"]})
        return projection.collection.count_documents({}) == 3 and erased is not None and erased["status"] == "erased"

    try:
        wait_until(caught_up, timeout=90, what="the local copy to catch up")
    finally:
        runner.consumer.close()
    copies = projection.find([ali["id"], dup["id"], gone["id"]])
    assert copies[ali["id"]]["last_name"] == "Rezaei" and copies[ali["id"]]["phone"] == "+989121234567"
    assert copies[dup["id"]]["_id"] == ali["id"]  # the merged id leads to the survivor's copy
    assert copies[gone["id"]]["first_name"] is None and copies[gone["id"]]["email"] is None
    assert merges == [(dup["id"], ali["id"])]

    before = {doc["_id"]: doc for doc in projection.collection.find()}
    count = rebuild(projection, contacts.runtime.store, own_topic="crm.sales.events", bootstrap=servers.kafka_bootstrap)
    assert count == 7  # 3 created, 1 updated, absorbed + merged, erased
    after = {doc["_id"]: doc for doc in projection.collection.find()}
    assert {k: {f: v for f, v in d.items() if f != "erased_at"} for k, d in after.items()} == {
        k: {f: v for f, v in d.items() if f != "erased_at"} for k, d in before.items()
    }
