"""gRPC BatchCheckConsent: many consent checks in one call, over a real connection.

Every answer must be the one the single CheckConsent gives for the same check, in the
order asked; crmkit's ContactDirectory.consents splits long lists into calls of 500.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crmkit.directory import Consent, ContactDirectory
from crmkit.testing import ServiceHarness, grpc_channel


@dataclass
class Directory:
    stub: contacts_pb2_grpc.ContactDirectoryStub  # the raw contract
    client: ContactDirectory  # crmkit's client, as messaging uses it


@pytest.fixture
def directory(grpc_target: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Directory]:
    monkeypatch.setenv("CRM_SERVICE_NAME", "messaging")  # the client calls as messaging does
    channel = grpc_channel(grpc_target, "contacts:read")
    client = ContactDirectory(grpc_target)
    yield Directory(contacts_pb2_grpc.ContactDirectoryStub(channel), client)
    client.close()
    channel.close()


def create(contacts: ServiceHarness, **fields: object) -> str:
    response = contacts.client.post("/v1/contacts", json=fields, headers=contacts.headers())
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def put_consent(contacts: ServiceHarness, contact_id: str, channel: str, status: str, **body: object) -> None:
    response = contacts.client.put(
        f"/v1/contacts/{contact_id}/consents/{channel}", json={"status": status, **body}, headers=contacts.headers()
    )
    assert response.status_code == 200, response.get_json()


def post(contacts: ServiceHarness, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = contacts.client.post(path, json=body, headers=contacts.headers())
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def batch(
    stub: contacts_pb2_grpc.ContactDirectoryStub, checks: list[tuple[str, str]]
) -> contacts_pb2.BatchCheckConsentResponse:
    request = contacts_pb2.BatchCheckConsentRequest(
        checks=[contacts_pb2.CheckConsentRequest(contact_id=cid, channel=channel) for cid, channel in checks]
    )
    return stub.BatchCheckConsent(request, timeout=10)


def single(
    stub: contacts_pb2_grpc.ContactDirectoryStub, contact_id: str, channel: str
) -> contacts_pb2.CheckConsentResponse | None:
    """The single CheckConsent's answer; None when it says NOT_FOUND."""
    try:
        return stub.CheckConsent(contacts_pb2.CheckConsentRequest(contact_id=contact_id, channel=channel), timeout=5)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
        return None


@pytest.fixture
def people(contacts: ServiceHarness) -> dict[str, str]:
    """One contact per consent situation; the keys name the situation."""
    ids: dict[str, str] = {}
    # email granted with an address; sms never recorded; phone withdrawn
    ids["sara"] = create(contacts, first_name="Sara", email="sara@example.com", phone="+98 912 000 0001")
    put_consent(
        contacts, ids["sara"], "email", "granted", source="web_form", legal_basis="contract", at="2026-01-02T03:04:05Z"
    )
    put_consent(contacts, ids["sara"], "phone", "granted")
    put_consent(contacts, ids["sara"], "phone", "withdrawn", source="call_centre")  # 4 events: one short round
    # granted, then withdrawn
    ids["withdrawn"] = create(contacts, first_name="Reza", email="reza@example.com")
    put_consent(contacts, ids["withdrawn"], "email", "granted")
    put_consent(contacts, ids["withdrawn"], "email", "withdrawn", source="unsubscribe_link")
    # sms granted but no phone number
    ids["no_phone"] = create(contacts, first_name="Nima", email="nima@example.com")
    put_consent(contacts, ids["no_phone"], "sms", "granted")
    # granted, then erased
    ids["erased"] = create(contacts, first_name="Ellie", email="ellie@example.com")
    put_consent(contacts, ids["erased"], "email", "granted")
    post(contacts, f"/v1/contacts/{ids['erased']}/erasure", {})
    # a long stream (more versions than one round of a many-stream read), ending granted
    ids["busy"] = create(contacts, first_name="Bahar", phone="+98 912 000 0002")
    for status in ("granted", "withdrawn", "granted", "withdrawn", "granted", "withdrawn", "granted"):
        put_consent(contacts, ids["busy"], "sms", status)
    # a duplicate merged into a survivor, which was itself merged into another (two hops)
    ids["survivor"] = create(contacts, first_name="Ali", email="ali@example.com")
    ids["middle"] = create(contacts, first_name="Ali R", phone="+98 912 123 4567")
    ids["duplicate"] = create(contacts, first_name="A.", email="ali.r@example.com")
    put_consent(contacts, ids["duplicate"], "email", "withdrawn", at="2026-01-01T00:00:00Z")
    put_consent(contacts, ids["middle"], "sms", "granted", at="2026-01-10T00:00:00Z")
    put_consent(contacts, ids["survivor"], "email", "granted", at="2026-02-01T00:00:00Z")
    post(contacts, f"/v1/contacts/{ids['middle']}/merge", {"duplicate_id": ids["duplicate"]})
    post(contacts, f"/v1/contacts/{ids['survivor']}/merge", {"duplicate_id": ids["middle"]})
    ids["company"] = post_company(contacts, "Acme")  # a stream of another kind is no contact
    return ids


def post_company(contacts: ServiceHarness, name: str) -> str:
    response = contacts.client.post("/v1/companies", json={"name": name}, headers=contacts.headers())
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def test_a_mixed_batch_is_answered_in_order_like_single_checks(
    contacts: ServiceHarness, directory: Directory, people: dict[str, str]
) -> None:
    p = people
    checks = [
        (p["sara"], "email"),  # granted, with the address
        (p["withdrawn"], "email"),  # consent_withdrawn
        ("nobody", "email"),  # unknown
        (p["sara"], "sms"),  # the same contact, another channel: no_consent_recorded
        (p["no_phone"], "sms"),  # no_address
        (p["erased"], "email"),  # contact_erased
        (p["duplicate"], "sms"),  # merged twice: the survivor answers
        (p["middle"], "email"),  # merged once: the survivor answers
        (p["busy"], "sms"),  # a long stream
        (p["sara"], "phone"),  # withdrawn after a grant
        (p["company"], "email"),  # not a contact
        ("nobody", "sms"),  # the unknown id again
        (p["sara"], "email"),  # the same check again
    ]
    reply = batch(directory.stub, checks)

    assert len(reply.answers) == len(checks)
    expected = {
        0: (p["sara"], True, ""),
        1: (p["withdrawn"], False, "consent_withdrawn"),
        2: ("nobody", False, "contact_not_found"),
        3: (p["sara"], False, "no_consent_recorded"),
        4: (p["no_phone"], False, "no_address"),
        5: (p["erased"], False, "contact_erased"),
        6: (p["survivor"], True, ""),
        7: (p["survivor"], True, ""),
        8: (p["busy"], True, ""),
        9: (p["sara"], False, "consent_withdrawn"),
        10: (p["company"], False, "contact_not_found"),
        11: ("nobody", False, "contact_not_found"),
        12: (p["sara"], True, ""),
    }
    assert [(a.contact_id, a.granted, a.reason) for a in reply.answers] == [expected[i] for i in range(len(checks))]
    assert [a.channel for a in reply.answers] == [channel for _, channel in checks]
    assert reply.answers[0].address == "sara@example.com"
    assert reply.answers[0].source == "web_form" and reply.answers[0].legal_basis == "contract"
    assert reply.answers[0].decided_at == "2026-01-02T03:04:05.000Z"
    assert reply.answers[6].address == "+989121234567"  # the survivor's phone, from the merged record
    assert reply.answers[7].address == "ali@example.com"
    assert reply.answers[8].address == "+989120000002"
    assert reply.answers[9].source == "call_centre" and reply.answers[9].address == ""
    assert all(not a.address for a in reply.answers if not a.granted), "no address unless granted"
    assert list(reply.not_found) == ["nobody", p["company"]]  # each unknown id once

    # each answer is what the single CheckConsent says (which answers NOT_FOUND for the unknown)
    for (contact_id, channel), answer in zip(checks, reply.answers, strict=True):
        alone = single(directory.stub, contact_id, channel)
        if alone is None:
            assert answer == contacts_pb2.CheckConsentResponse(
                contact_id=contact_id, channel=channel, granted=False, reason="contact_not_found"
            )
        else:
            assert answer == alone, (contact_id, channel)

    # the client: the same answers as Consent, None for the unknown
    consents = directory.client.consents(checks)
    assert consents == [
        None if alone is None else Consent.from_reply(alone)
        for alone in (single(directory.stub, cid, ch) for cid, ch in checks)
    ]
    assert consents[0] == Consent(
        p["sara"],
        True,
        "",
        "sara@example.com",
        "granted",
        "contract",
        "web_form",
        "2026-01-02T03:04:05.000Z",
        consents[0].event_id,
        2,
    )
    assert consents[0].event_id and consents[1].status == "withdrawn" and consents[3].status is None
    assert consents[2] is None and consents[10] is None and consents[11] is None
    assert consents[6] == directory.client.consent(p["duplicate"], "sms")
    assert directory.client.consents([]) == []

    # asking changed nothing
    record = contacts.client.get(f"/v1/contacts/{p['sara']}", headers=contacts.headers()).get_json()
    assert record["version"] == 4


def test_the_client_splits_long_lists_into_calls_of_500_and_keeps_the_order(
    directory: Directory, people: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [people[name] for name in ("sara", "withdrawn", "no_phone", "erased", "busy", "duplicate")] + ["nobody"]
    channels = ["email", "sms", "phone", "fax"]
    # 1,200 checks over seven ids and four channels, in an order no chunk boundary lines up with
    checks = [(ids[(i * 5 + i // 7) % len(ids)], channels[(i * 3 + i // 11) % len(channels)]) for i in range(1200)]
    truth = {check: single(directory.stub, *check) for check in set(checks)}
    assert len(truth) == len(ids) * len(channels)

    sizes: list[int] = []
    real = directory.client.stub.BatchCheckConsent

    def counted(request: contacts_pb2.BatchCheckConsentRequest, **kwargs: Any) -> Any:
        sizes.append(len(request.checks))
        return real(request, **kwargs)

    monkeypatch.setattr(directory.client.stub, "BatchCheckConsent", counted)
    consents = directory.client.consents(checks)

    assert sizes == [500, 500, 200]
    assert len(consents) == len(checks)
    for check, consent in zip(checks, consents, strict=True):
        alone = truth[check]
        if alone is None:
            assert consent is None, check
        else:
            assert consent == Consent.from_reply(alone), check
    assert consents.count(None) == sum(1 for cid, _ in checks if cid == "nobody")
    granted = [check for check, consent in zip(checks, consents, strict=True) if consent and consent.granted]
    assert set(granted) == {
        (people["sara"], "email"),
        (people["busy"], "sms"),
        (people["duplicate"], "sms"),
        (people["duplicate"], "email"),
    }


def test_bad_batches_are_invalid_arguments(directory: Directory, people: dict[str, str]) -> None:
    sara = people["sara"]

    def rejected(checks: list[tuple[str, str]]) -> str:
        with pytest.raises(grpc.RpcError) as error:
            batch(directory.stub, checks)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value
        return error.value.details()

    assert "channel" in rejected([(sara, "email"), (sara, "pigeon")])
    assert "channel" in rejected([(sara, "")])
    assert "contact_id" in rejected([(sara, "email"), ("", "email")])
    assert "contact_id" in rejected([("   ", "sms")])
    assert "1000" in rejected([(sara, "email")] * 1001)

    assert len(batch(directory.stub, [(sara, "email")] * 1000).answers) == 1000  # the limit itself is fine
    assert list(batch(directory.stub, []).answers) == []
