"""Consent per channel, de-duplication and merge, through the REST API and gRPC."""

from collections.abc import Iterator

import grpc
import pytest

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crm_contacts.grpc_api import register
from crm_contacts.records import projections
from crmkit import rpc, stack
from crmkit.testing import ServiceHarness, grpc_channel


def create(contacts: ServiceHarness, **fields: object) -> dict:
    response = contacts.client.post("/v1/contacts", json=fields, headers=contacts.headers())
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def put_consent(contacts: ServiceHarness, contact_id: str, channel: str, **body: object):
    return contacts.client.put(f"/v1/contacts/{contact_id}/consents/{channel}", json=body, headers=contacts.headers())


@pytest.fixture
def directory(contacts: ServiceHarness) -> Iterator[contacts_pb2_grpc.ContactDirectoryStub]:
    from crm_contacts.records.commands import ContactBook

    port = stack.free_port()
    server, _ = rpc.build_server("contacts", port, lambda srv: register(srv, ContactBook(contacts.runtime)))
    server.start()
    channel = grpc_channel(f"127.0.0.1:{port}", "contacts:read")
    yield contacts_pb2_grpc.ContactDirectoryStub(channel)
    channel.close()
    server.stop(grace=None)


def test_consent_is_recorded_with_evidence_and_checked_over_grpc(
    contacts: ServiceHarness, directory: contacts_pb2_grpc.ContactDirectoryStub
) -> None:
    sara = create(contacts, first_name="Sara", email="sara@example.com")
    check = contacts_pb2.CheckConsentRequest(contact_id=sara["id"], channel="email")
    assert directory.CheckConsent(check, timeout=5).reason == "no_consent_recorded"

    granted = put_consent(
        contacts,
        sara["id"],
        "email",
        status="granted",
        source="web_form",
        legal_basis="consent",
        at="2026-01-02T03:04:05Z",
    )
    assert granted.status_code == 200
    assert granted.get_json()["consents"]["email"] == {
        "status": "granted",
        "source": "web_form",
        "legal_basis": "consent",
        "at": "2026-01-02T03:04:05.000Z",
    }
    answer = directory.CheckConsent(check, timeout=5)
    assert answer.granted and answer.address == "sara@example.com" and answer.source == "web_form"

    sms = directory.CheckConsent(contacts_pb2.CheckConsentRequest(contact_id=sara["id"], channel="sms"), timeout=5)
    assert not sms.granted
    put_consent(contacts, sara["id"], "sms", status="granted")
    no_phone = directory.CheckConsent(contacts_pb2.CheckConsentRequest(contact_id=sara["id"], channel="sms"), timeout=5)
    assert not no_phone.granted and no_phone.reason == "no_address"

    withdrawn = put_consent(contacts, sara["id"], "email", status="withdrawn", source="unsubscribe_link")
    assert withdrawn.get_json()["version"] == 4
    answer = directory.CheckConsent(check, timeout=5)
    assert not answer.granted and answer.reason == "consent_withdrawn" and answer.address == ""
    history = contacts.client.get(f"/v1/contacts/{sara['id']}/history", headers=contacts.headers()).get_json()
    assert [e["type"] for e in history["items"]].count("ContactConsentChanged") == 3


def test_repeating_the_same_consent_records_nothing(contacts: ServiceHarness) -> None:
    sara = create(contacts, first_name="Sara", email="sara@example.com")
    put_consent(contacts, sara["id"], "email", status="granted")
    again = put_consent(contacts, sara["id"], "email", status="granted")
    assert again.status_code == 200 and again.get_json()["version"] == 2


def test_bad_consent_requests_list_every_field(
    contacts: ServiceHarness, directory: contacts_pb2_grpc.ContactDirectoryStub
) -> None:
    sara = create(contacts, first_name="Sara")
    bad = put_consent(contacts, sara["id"], "email", status="maybe", legal_basis="whim", at="2999-01-01T00:00:00Z")
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"status", "legal_basis", "at"}
    assert put_consent(contacts, sara["id"], "pigeon", status="granted").status_code == 422
    assert put_consent(contacts, "nobody", "email", status="granted").status_code == 404
    with pytest.raises(grpc.RpcError) as unknown:
        directory.CheckConsent(contacts_pb2.CheckConsentRequest(contact_id="nobody", channel="email"), timeout=5)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as bad_channel:
        directory.CheckConsent(contacts_pb2.CheckConsentRequest(contact_id=sara["id"], channel="x"), timeout=5)
    assert bad_channel.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert contacts.client.get(f"/v1/contacts/{sara['id']}", headers=contacts.headers()).get_json()["version"] == 1


def test_duplicates_are_found_by_email_phone_and_folded_name_with_company(contacts: ServiceHarness) -> None:
    company = contacts.client.post("/v1/companies", json={"name": "Acme"}, headers=contacts.headers()).get_json()
    a = create(contacts, first_name="Ali", email="ali@example.com")
    b = create(contacts, first_name="A.", email="ALI@example.com ")
    c = create(contacts, first_name="Reza", phone="+98 912 000 1111")
    d = create(contacts, first_name="R", phone="+989120001111")
    e = create(contacts, first_name="علي", last_name="كريمي", company_id=company["id"])
    f = create(contacts, first_name="علی", last_name="کریمی", company_id=company["id"])
    create(contacts, first_name="علی", last_name="کریمی")  # same name, other company: not a candidate
    contacts.project()
    body = contacts.client.get("/v1/duplicates", headers=contacts.headers()).get_json()
    pairs = {(p["survivor_id"], p["duplicate_id"], p["reason"]) for p in body["items"]}
    assert pairs == {
        (a["id"], b["id"], "same_email"),
        (c["id"], d["id"], "same_phone"),
        (e["id"], f["id"], "same_name_and_company"),
    }
    first = contacts.client.get("/v1/duplicates", query_string={"limit": 2}, headers=contacts.headers()).get_json()
    rest = contacts.client.get(
        "/v1/duplicates", query_string={"limit": 2, "cursor": first["next_cursor"]}, headers=contacts.headers()
    ).get_json()
    assert len(first["items"]) == 2 and len(rest["items"]) == 1 and rest["next_cursor"] is None


def test_merge_folds_fields_consents_tags_company_and_redirects_lookups(
    contacts: ServiceHarness, directory: contacts_pb2_grpc.ContactDirectoryStub
) -> None:
    company = contacts.client.post("/v1/companies", json={"name": "Acme"}, headers=contacts.headers()).get_json()
    survivor = create(contacts, first_name="Ali", email="ali@example.com", tags=["vip"], attributes={"city": "Tehran"})
    duplicate = create(
        contacts,
        first_name="Ali R",
        last_name="Rezaei",
        phone="+98 912 123 4567",
        tags=["b2b"],
        company_id=company["id"],
        attributes={"city": "Shiraz", "size": "L"},
        lifecycle_stage="customer",
    )
    put_consent(contacts, survivor["id"], "email", status="granted", at="2026-01-01T00:00:00Z")
    put_consent(contacts, duplicate["id"], "email", status="withdrawn", at="2026-02-01T00:00:00Z")
    put_consent(contacts, duplicate["id"], "sms", status="granted", at="2026-01-15T00:00:00Z")

    merged = contacts.client.post(
        f"/v1/contacts/{survivor['id']}/merge", json={"duplicate_id": duplicate["id"]}, headers=contacts.headers()
    )
    body = merged.get_json()
    assert merged.status_code == 200, body
    assert body["first_name"] == "Ali" and body["last_name"] == "Rezaei" and body["phone"] == "+989121234567"
    assert body["tags"] == ["b2b", "vip"] and body["company_id"] == company["id"]
    assert body["attributes"] == {"city": "Tehran", "size": "L"}
    assert body["lifecycle_stage"] == "customer"
    assert body["consents"]["email"]["status"] == "withdrawn"  # the later decision wins
    assert body["consents"]["sms"]["status"] == "granted"
    assert body["merged_from"] == [duplicate["id"]]

    via_old_id = contacts.client.get(f"/v1/contacts/{duplicate['id']}", headers=contacts.headers()).get_json()
    assert via_old_id["id"] == survivor["id"]
    by_grpc = directory.GetContact(contacts_pb2.GetContactRequest(contact_id=duplicate["id"]), timeout=5)
    assert by_grpc.id == survivor["id"]
    batch = directory.BatchGetContacts(contacts_pb2.BatchGetContactsRequest(contact_ids=[duplicate["id"]]), timeout=5)
    assert batch.contacts[duplicate["id"]].id == survivor["id"]

    # both histories are kept
    old_history = contacts.client.get(f"/v1/contacts/{duplicate['id']}/history", headers=contacts.headers())
    assert old_history.get_json()["items"][-1]["type"] == "ContactMerged"
    contacts.project()
    merged_list = contacts.client.get("/v1/contacts", query_string={"status": "merged"}, headers=contacts.headers())
    assert [c["id"] for c in merged_list.get_json()["items"]] == [duplicate["id"]]
    assert contacts.client.get("/v1/duplicates", headers=contacts.headers()).get_json()["items"] == []


def test_merge_refuses_what_makes_no_sense(contacts: ServiceHarness) -> None:
    a = create(contacts, first_name="A")
    b = create(contacts, first_name="B")
    assert (
        contacts.client.post(
            f"/v1/contacts/{a['id']}/merge", json={"duplicate_id": a["id"]}, headers=contacts.headers()
        ).status_code
        == 422
    )
    assert (
        contacts.client.post(
            f"/v1/contacts/{a['id']}/merge", json={"duplicate_id": "nobody"}, headers=contacts.headers()
        ).status_code
        == 422
    )
    assert contacts.client.post(f"/v1/contacts/{a['id']}/merge", json={}, headers=contacts.headers()).status_code == 422
    assert (
        contacts.client.post(
            f"/v1/contacts/{a['id']}/merge", json={"duplicate_id": b["id"]}, headers=contacts.headers()
        ).status_code
        == 200
    )
    again = contacts.client.post(
        f"/v1/contacts/{a['id']}/merge", json={"duplicate_id": b["id"]}, headers=contacts.headers()
    )
    assert again.status_code == 409
    patch = contacts.client.patch(f"/v1/contacts/{b['id']}", json={"first_name": "X"}, headers=contacts.headers())
    assert patch.status_code == 409


class CountingReads:
    """A collection that counts the contact documents its `find` calls return."""

    def __init__(self, collection) -> None:
        self.collection, self.read = collection, 0

    def aggregate(self, pipeline):
        return self.collection.aggregate(pipeline)

    def find_one(self, *args, **kwargs):
        self.read += 1
        return self.collection.find_one(*args, **kwargs)

    def find(self, *args, **kwargs):
        counter = self

        class Cursor:
            def __init__(self, cursor) -> None:
                self.cursor = cursor

            def sort(self, *sort_args):
                return Cursor(self.cursor.sort(*sort_args))

            def __iter__(self):
                for doc in self.cursor:
                    counter.read += 1
                    yield doc

        return Cursor(self.collection.find(*args, **kwargs))


def test_duplicate_pages_follow_each_other_and_read_only_what_they_show(contacts: ServiceHarness) -> None:
    collection = contacts.runtime.db["contacts"]
    documents = [
        {
            "_id": f"c{group:03d}-{member}",
            "status": "active",
            "email": f"p{group:03d}@example.com",
            "phone": None,
            "name_key": None,
        }
        for group in range(60)
        for member in range(2)
    ]
    documents += [
        {"_id": f"big-{member}", "status": "active", "email": None, "phone": "+989120000000", "name_key": None}
        for member in range(5)
    ]  # one group of five: four pairs, across pages
    collection.insert_many(documents)
    pages, cursor, reads = [], None, []
    while True:
        counting = CountingReads(collection)
        items, cursor = projections.duplicate_pairs(counting, 3, cursor)
        pages.append(items)
        reads.append(counting.read)
        if cursor is None:
            break
    pairs = [(p["reason"], p["matched"], p["survivor_id"], p["duplicate_id"]) for page in pages for p in page]
    assert len(pairs) == 64 and len(set(pairs)) == 64  # every pair once, none skipped or repeated
    assert [p for p in pairs if p[0] == "same_phone"] == [
        ("same_phone", "+989120000000", "big-0", f"big-{member}") for member in range(1, 5)
    ]
    assert pairs == sorted(pairs, key=lambda p: (projections.REASON_ORDER[p[0]], p[1], p[3]))
    assert max(reads) <= 20  # a page reads a page's worth of groups, not all 121 contacts
