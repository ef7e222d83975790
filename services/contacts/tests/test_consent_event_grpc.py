"""CheckConsent (single and batch) names the consent decision it rests on: the id and the
stream version of the contact's ContactConsentChanged event and its status, so a caller
(messaging) can keep a proof of the consent each send relied on."""

from collections.abc import Iterator

import pytest

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crmkit.testing import ServiceHarness, grpc_channel


@pytest.fixture
def stub(grpc_target: str) -> Iterator[contacts_pb2_grpc.ContactDirectoryStub]:
    channel = grpc_channel(grpc_target, "contacts:write")
    yield contacts_pb2_grpc.ContactDirectoryStub(channel)
    channel.close()


def call(contacts: ServiceHarness, method: str, path: str, body: dict | None = None) -> dict:
    response = contacts.client.open(path, method=method, json=body, headers=contacts.headers())
    assert response.status_code in (200, 201), response.get_json()
    return response.get_json()


def consent_events(contacts: ServiceHarness, contact_id: str) -> list[dict]:
    history = call(contacts, "GET", f"/v1/contacts/{contact_id}/history?limit=100")["items"]
    return [entry for entry in history if entry["type"] == "ContactConsentChanged"]


def check(
    stub: contacts_pb2_grpc.ContactDirectoryStub, contact_id: str, channel: str = "email"
) -> contacts_pb2.CheckConsentResponse:
    return stub.CheckConsent(contacts_pb2.CheckConsentRequest(contact_id=contact_id, channel=channel), timeout=10)


def test_the_answer_names_the_consent_event_it_rests_on(
    contacts: ServiceHarness, stub: contacts_pb2_grpc.ContactDirectoryStub
) -> None:
    sara = call(contacts, "POST", "/v1/contacts", {"first_name": "Sara", "email": "sara@example.com"})["id"]
    never = check(stub, sara)
    assert (never.consent_event_id, never.consent_version, never.consent_status) == ("", 0, "")

    call(contacts, "PUT", f"/v1/contacts/{sara}/consents/email", {"status": "granted", "source": "web_form"})
    call(contacts, "PUT", f"/v1/contacts/{sara}/consents/sms", {"status": "granted"})  # another channel
    call(contacts, "PATCH", f"/v1/contacts/{sara}", {"last_name": "Rezaei"})  # moves the version on
    [granted, _] = consent_events(contacts, sara)
    answer = check(stub, sara)
    assert answer.granted and answer.consent_status == "granted" and answer.source == "web_form"
    assert (answer.consent_event_id, answer.consent_version) == (granted["event_id"], granted["version"])

    call(contacts, "PUT", f"/v1/contacts/{sara}/consents/email", {"status": "withdrawn", "source": "call"})
    withdrawn = consent_events(contacts, sara)[-1]
    batch = stub.BatchCheckConsent(
        contacts_pb2.BatchCheckConsentRequest(
            checks=[
                contacts_pb2.CheckConsentRequest(contact_id=sara, channel="email"),
                contacts_pb2.CheckConsentRequest(contact_id="nobody", channel="email"),
            ]
        ),
        timeout=10,
    )
    answer, unknown = batch.answers
    assert not answer.granted and answer.reason == "consent_withdrawn" and answer.consent_status == "withdrawn"
    assert (answer.consent_event_id, answer.consent_version) == (withdrawn["event_id"], withdrawn["version"])
    assert answer == check(stub, sara)
    assert (unknown.consent_event_id, unknown.consent_version, unknown.consent_status) == ("", 0, "")

    recorded = stub.RecordConsent(
        contacts_pb2.RecordConsentRequest(
            contact_id=sara, channel="email", status="granted", source="unsubscribe_undo"
        ),
        timeout=10,
    )
    assert recorded.consent_event_id == consent_events(contacts, sara)[-1]["event_id"]


def test_a_merged_id_answers_with_the_survivors_event_and_an_erasure_with_none(
    contacts: ServiceHarness, stub: contacts_pb2_grpc.ContactDirectoryStub
) -> None:
    survivor = call(contacts, "POST", "/v1/contacts", {"first_name": "Ali", "email": "ali@example.com"})["id"]
    duplicate = call(contacts, "POST", "/v1/contacts", {"first_name": "A.", "email": "a@example.com"})["id"]
    call(contacts, "PUT", f"/v1/contacts/{duplicate}/consents/email", {"status": "granted"})
    call(contacts, "POST", f"/v1/contacts/{survivor}/merge", {"duplicate_id": duplicate})
    [taken_over] = consent_events(contacts, survivor)  # the duplicate's decision, recorded on the survivor
    answer = check(stub, duplicate)
    assert answer.contact_id == survivor and answer.granted
    assert (answer.consent_event_id, answer.consent_version) == (taken_over["event_id"], taken_over["version"])

    call(contacts, "POST", f"/v1/contacts/{survivor}/erasure", {})
    erased = check(stub, survivor)
    assert erased.reason == "contact_erased"
    assert (erased.consent_event_id, erased.consent_version, erased.consent_status) == ("", 0, "")
