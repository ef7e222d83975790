"""gRPC RecordConsent: other services (messaging's unsubscribe link) record a consent decision."""

from collections.abc import Iterator

import pytest

from crm_contacts.commands import ContactBook
from crm_contacts.grpc_api import register
from crmkit import rpc, stack
from crmkit.directory import ContactDirectory
from crmkit.errors import NotFound
from crmkit.testing import ServiceHarness


@pytest.fixture
def directory(contacts: ServiceHarness) -> Iterator[ContactDirectory]:
    port = stack.free_port()
    server, _ = rpc.build_server("contacts", port, lambda srv: register(srv, ContactBook(contacts.runtime)))
    server.start()
    client = ContactDirectory(f"127.0.0.1:{port}")
    yield client
    client.close()
    server.stop(grace=None)


def test_record_consent_withdraws_once_and_rejects_bad_arguments(
    contacts: ServiceHarness, directory: ContactDirectory
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

    with pytest.raises(NotFound):
        directory.record_consent(sara["id"], "pigeon", "withdrawn", "x")  # INVALID_ARGUMENT
    with pytest.raises(NotFound):
        directory.record_consent(sara["id"], "email", "maybe", "x")
    with pytest.raises(NotFound):
        directory.record_consent("nobody", "email", "withdrawn", "x")
