"""gRPC RecordConsent: other services (messaging's unsubscribe link) record a consent decision."""

from collections.abc import Iterator

import grpc
import pytest

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crmkit.directory import ContactDirectory
from crmkit.testing import ServiceHarness


@pytest.fixture
def directory(grpc_target: str) -> Iterator[ContactDirectory]:
    client = ContactDirectory(grpc_target)
    yield client
    client.close()


@pytest.fixture
def stub(grpc_target: str) -> Iterator[contacts_pb2_grpc.ContactDirectoryStub]:
    """The raw contract: crmkit's client reports INVALID_ARGUMENT and NOT_FOUND alike."""
    channel = grpc.insecure_channel(grpc_target)
    yield contacts_pb2_grpc.ContactDirectoryStub(channel)
    channel.close()


def record_status(stub: contacts_pb2_grpc.ContactDirectoryStub, contact_id: str, channel: str,
                  status: str) -> grpc.StatusCode:
    request = contacts_pb2.RecordConsentRequest(contact_id=contact_id, channel=channel, status=status, source="x")
    with pytest.raises(grpc.RpcError) as failure:
        stub.RecordConsent(request, timeout=5)
    return failure.value.code()


def test_record_consent_withdraws_once_and_rejects_bad_arguments(
    contacts: ServiceHarness, directory: ContactDirectory, stub: contacts_pb2_grpc.ContactDirectoryStub
) -> None:
    headers = contacts.headers()
    sara = contacts.client.post("/v1/contacts", json={"first_name": "Sara", "email": "sara@example.com"},
                                headers=headers).get_json()
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
