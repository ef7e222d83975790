"""gRPC RecordConsent: other services (messaging's unsubscribe link) record a consent decision."""

from collections.abc import Iterator

import grpc
import pytest

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crmkit import rpc
from crmkit.directory import ContactDirectory
from crmkit.testing import ServiceHarness, grpc_channel


@pytest.fixture
def directory(grpc_target: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ContactDirectory]:
    """crmkit's client as messaging uses it: calling with messaging's service token."""
    monkeypatch.setenv("CRM_SERVICE_NAME", "messaging")
    client = ContactDirectory(grpc_target)
    yield client
    client.close()


@pytest.fixture
def stub(grpc_target: str) -> Iterator[contacts_pb2_grpc.ContactDirectoryStub]:
    """The raw contract: crmkit's client reports INVALID_ARGUMENT and NOT_FOUND alike."""
    channel = grpc_channel(grpc_target, "contacts:write")
    yield contacts_pb2_grpc.ContactDirectoryStub(channel)
    channel.close()


def record_status(
    stub: contacts_pb2_grpc.ContactDirectoryStub, contact_id: str, channel: str, status: str
) -> grpc.StatusCode:
    request = contacts_pb2.RecordConsentRequest(contact_id=contact_id, channel=channel, status=status, source="x")
    with pytest.raises(grpc.RpcError) as failure:
        stub.RecordConsent(request, timeout=5)
    return failure.value.code()


def test_record_consent_withdraws_once_and_rejects_bad_arguments(
    contacts: ServiceHarness, directory: ContactDirectory, stub: contacts_pb2_grpc.ContactDirectoryStub
) -> None:
    headers = contacts.headers()
    sara = contacts.client.post(
        "/v1/contacts", json={"first_name": "Sara", "email": "sara@example.com"}, headers=headers
    ).get_json()
    contacts.client.put(f"/v1/contacts/{sara['id']}/consents/email", json={"status": "granted"}, headers=headers)
    assert directory.consent(sara["id"], "email").granted

    answer = directory.record_consent(sara["id"], "email", "withdrawn", "unsubscribe_link")
    assert not answer.granted and answer.reason == "consent_withdrawn"
    again = directory.record_consent(sara["id"], "email", "withdrawn", "unsubscribe_link")
    assert again.reason == "consent_withdrawn"
    record = contacts.client.get(f"/v1/contacts/{sara['id']}", headers=headers).get_json()
    assert record["version"] == 3  # created, granted, withdrawn: the repeat recorded nothing
    assert record["consents"]["email"]["source"] == "unsubscribe_link"

    assert record_status(stub, sara["id"], "pigeon", "withdrawn") == grpc.StatusCode.INVALID_ARGUMENT
    assert record_status(stub, sara["id"], "email", "maybe") == grpc.StatusCode.INVALID_ARGUMENT
    assert record_status(stub, "nobody", "email", "withdrawn") == grpc.StatusCode.NOT_FOUND
    after = contacts.client.get(f"/v1/contacts/{sara['id']}", headers=headers).get_json()
    assert after["version"] == 3  # the refused requests recorded nothing


@pytest.mark.parametrize(
    ("channel_for", "expected"),
    [
        (lambda target: grpc.insecure_channel(target), grpc.StatusCode.UNAUTHENTICATED),  # no token
        (lambda target: grpc_channel(target, "contacts:read"), grpc.StatusCode.PERMISSION_DENIED),
        (lambda target: grpc_channel(target, "admin", audience="sales"), grpc.StatusCode.UNAUTHENTICATED),
        (lambda target: rpc.channel(target, audience="contacts", caller="sales"), grpc.StatusCode.PERMISSION_DENIED),
    ],
    ids=["no-token", "contacts-read", "token-for-sales", "sales-service"],
)
def test_record_consent_needs_contacts_write(
    contacts: ServiceHarness, grpc_target: str, channel_for, expected: grpc.StatusCode
) -> None:
    """Before gRPC had auth, anyone reaching the port granted consent (issue 13)."""
    headers = contacts.headers()
    sara = contacts.client.post(
        "/v1/contacts", json={"first_name": "Sara", "email": "sara@example.com"}, headers=headers
    ).get_json()
    with channel_for(grpc_target) as channel:
        stub = contacts_pb2_grpc.ContactDirectoryStub(channel)
        assert record_status(stub, sara["id"], "email", "granted") == expected
    record = contacts.client.get(f"/v1/contacts/{sara['id']}", headers=headers).get_json()
    assert record["version"] == 1 and "email" not in (record.get("consents") or {})


def test_messaging_records_consent_as_itself(contacts: ServiceHarness, directory: ContactDirectory) -> None:
    headers = contacts.headers()
    sara = contacts.client.post(
        "/v1/contacts", json={"first_name": "Sara", "email": "sara@example.com"}, headers=headers
    ).get_json()
    directory.record_consent(sara["id"], "email", "withdrawn", "unsubscribe_link")
    history = contacts.client.get(f"/v1/contacts/{sara['id']}/history", headers=headers).get_json()
    assert history["items"][-1]["actor"] == "service:messaging"
