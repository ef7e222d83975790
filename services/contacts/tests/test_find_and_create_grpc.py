"""gRPC FindContacts and CreateContact: the service desk finds who wrote to the support mailbox, or makes them a
contact (tagged `inbound`, the attribute `source`), safely repeated by request id."""

from collections.abc import Iterator

import grpc
import pytest

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crmkit.directory import ContactDirectory
from crmkit.testing import ServiceHarness, grpc_channel


@pytest.fixture
def desk_directory(grpc_target: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ContactDirectory]:
    """crmkit's client as the service desk uses it: calling with the service desk's own token."""
    monkeypatch.setenv("CRM_SERVICE_NAME", "service-desk")
    client = ContactDirectory(grpc_target)
    yield client
    client.close()


def test_find_by_email_or_phone_as_contacts_stores_them(
    contacts: ServiceHarness, desk_directory: ContactDirectory
) -> None:
    headers = contacts.headers()
    sara = contacts.client.post(
        "/v1/contacts",
        json={"first_name": "Sara", "email": "Sara@Example.com", "phone": "+98 912 123 4567"},
        headers=headers,
    ).get_json()
    contacts.project()
    assert [c["id"] for c in desk_directory.find(email="  SARA@example.COM ")] == [sara["id"]]
    assert [c["id"] for c in desk_directory.find(phone="+989121234567")] == [sara["id"]]
    assert desk_directory.find(email="nobody@example.com") == []
    assert desk_directory.find(email="not an address") == []  # INVALID_ARGUMENT: nobody has it


def test_create_is_safe_to_repeat_and_checks_fields_like_rest(
    contacts: ServiceHarness, grpc_target: str, desk_directory: ContactDirectory
) -> None:
    fields = {
        "first_name": "Bahar",
        "email": "Bahar@Example.com",
        "tags": ["inbound"],
        "attributes": {"source": "inbound_email"},
    }
    made = desk_directory.create("inbound:email:bahar@example.com", fields)
    again = desk_directory.create("inbound:email:bahar@example.com", fields)
    assert made["id"] == again["id"] and int(made["version"]) == 1  # int64 comes as text
    assert (made["email"], made["tags"], made["attributes"]) == (
        "bahar@example.com",
        ["inbound"],
        {"source": "inbound_email"},
    )
    record = contacts.client.get(f"/v1/contacts/{made['id']}", headers=contacts.headers()).get_json()
    assert record["version"] == 1 and record["attributes"] == {"source": "inbound_email"}

    channel = grpc_channel(grpc_target, "contacts:write")
    stub = contacts_pb2_grpc.ContactDirectoryStub(channel)
    with pytest.raises(grpc.RpcError) as bad:
        stub.CreateContact(contacts_pb2.CreateContactRequest(request_id="", email="not an address"), timeout=5)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in bad.value.details()
    with pytest.raises(grpc.RpcError) as bad:
        stub.CreateContact(contacts_pb2.CreateContactRequest(request_id="r-1", email="not an address"), timeout=5)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "email" in bad.value.details()
    reader = contacts_pb2_grpc.ContactDirectoryStub(grpc_channel(grpc_target, "contacts:read"))
    with pytest.raises(grpc.RpcError) as denied:
        reader.CreateContact(contacts_pb2.CreateContactRequest(request_id="r-2", first_name="X"), timeout=5)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    channel.close()
    contacts.project()
    listed = contacts.client.get("/v1/contacts?limit=500", headers=contacts.headers()).get_json()
    assert [c["id"] for c in listed["items"]] == [made["id"]]  # the refused calls made nothing
