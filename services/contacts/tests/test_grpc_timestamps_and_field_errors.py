"""ContactDirectory over the wire: the Timestamp fields beside the RFC 3339 strings, and bad
arguments answered with a google.rpc.BadRequest naming every failing field (docs/testing.md)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crmkit.events import parse_time
from crmkit.testing import ServiceHarness, grpc_channel


@pytest.fixture
def stub(grpc_target: str) -> Iterator[contacts_pb2_grpc.ContactDirectoryStub]:
    channel = grpc_channel(grpc_target, "contacts:write")
    yield contacts_pb2_grpc.ContactDirectoryStub(channel)
    channel.close()


def violations(call: grpc.RpcError) -> dict[str, list[str]]:
    """The BadRequest detail a refused call carries, as field -> descriptions."""
    assert call.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(call)
    assert status is not None, "INVALID_ARGUMENT without a google.rpc.Status detail"
    found: dict[str, list[str]] = {}
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request), detail.type_url
        for violation in bad_request.field_violations:
            found.setdefault(violation.field, []).append(violation.description)
    return found


def refused(method: grpc.UnaryUnaryMultiCallable, request: object) -> dict[str, list[str]]:
    with pytest.raises(grpc.RpcError) as caught:
        method(request, timeout=5)
    return violations(caught.value)


def test_a_contact_carries_its_times_as_timestamps_too(
    contacts: ServiceHarness, stub: contacts_pb2_grpc.ContactDirectoryStub
) -> None:
    headers = contacts.headers()
    sara = contacts.client.post("/v1/contacts", json={"first_name": "Sara"}, headers=headers).get_json()
    updated = contacts.client.patch(
        f"/v1/contacts/{sara['id']}", json={"last_name": "Rezaei"}, headers={**headers, "If-Match": '"1"'}
    ).get_json()
    found = stub.GetContact(contacts_pb2.GetContactRequest(contact_id=sara["id"]), timeout=5)
    assert found.HasField("create_time") and found.HasField("update_time")
    assert found.create_time.ToDatetime(tzinfo=UTC) == parse_time(found.created_at) == parse_time(sara["created_at"])
    assert found.update_time.ToDatetime(tzinfo=UTC) == parse_time(updated["updated_at"])
    assert found.update_time.ToDatetime() > found.create_time.ToDatetime()


def test_a_consent_answer_carries_when_it_was_decided(
    contacts: ServiceHarness, stub: contacts_pb2_grpc.ContactDirectoryStub
) -> None:
    headers = contacts.headers()
    sara = contacts.client.post(
        "/v1/contacts", json={"first_name": "Sara", "email": "sara@example.com"}, headers=headers
    ).get_json()
    check = contacts_pb2.CheckConsentRequest(contact_id=sara["id"], channel="email")
    assert not stub.CheckConsent(check, timeout=5).HasField("decide_time")  # never decided
    contacts.client.put(
        f"/v1/contacts/{sara['id']}/consents/email",
        json={"status": "granted", "at": "2024-05-01T09:30:00.250Z"},
        headers=headers,
    )
    answer = stub.CheckConsent(check, timeout=5)
    assert answer.granted and answer.decided_at.startswith("2024-05-01T09:30:00.25")
    assert answer.decide_time.ToJsonString() == "2024-05-01T09:30:00.250Z"


def test_record_consent_names_every_bad_field(
    contacts: ServiceHarness, stub: contacts_pb2_grpc.ContactDirectoryStub
) -> None:
    request = contacts_pb2.RecordConsentRequest(
        contact_id=" ", channel="pigeon", status="maybe", legal_basis="whim", source="x" * 101
    )
    bad = refused(stub.RecordConsent, request)
    assert set(bad) == {"contact_id", "channel", "status", "legal_basis", "source"}
    assert bad["channel"] == ["channel must be one of email, sms, fax, phone"]


def test_a_bad_check_in_a_batch_is_named_by_its_position(
    contacts: ServiceHarness, stub: contacts_pb2_grpc.ContactDirectoryStub
) -> None:
    checks = [
        contacts_pb2.CheckConsentRequest(contact_id="c-1", channel="email"),
        contacts_pb2.CheckConsentRequest(contact_id="", channel="pigeon"),
        contacts_pb2.CheckConsentRequest(contact_id="c-3", channel="sms"),
    ]
    bad = refused(stub.BatchCheckConsent, contacts_pb2.BatchCheckConsentRequest(checks=checks))
    assert set(bad) == {"checks[1].contact_id", "checks[1].channel"}


def test_a_bad_segment_stream_request_is_a_bad_request(
    contacts: ServiceHarness, stub: contacts_pb2_grpc.ContactDirectoryStub
) -> None:
    stream = stub.ListSegmentMembers(contacts_pb2.ListSegmentMembersRequest(segment_id="", page_size=-1), timeout=5)
    with pytest.raises(grpc.RpcError) as caught:
        list(stream)
    assert set(violations(caught.value)) == {"segment_id", "page_size"}
