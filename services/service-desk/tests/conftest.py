"""Fixtures for the service desk's tests: the service on the test servers, and a fake contacts directory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import grpc
import pytest

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crm_servicedesk.app import SERVICE
from crmkit import rpc, stack
from crmkit.testing import ServiceHarness, harness


class FakeDirectory(contacts_pb2_grpc.ContactDirectoryServicer):
    """The contacts service's gRPC contract, answered from a dict (the service desk's tests own no contacts)."""

    def __init__(self) -> None:
        self.contacts: dict[str, contacts_pb2.Contact] = {}

    def add(self, contact_id: str, first_name: str = "Sara", last_name: str = "Ahmadi", locale: str = "") -> str:
        self.contacts[contact_id] = contacts_pb2.Contact(
            id=contact_id, version=1, first_name=first_name, last_name=last_name, status="active", locale=locale
        )
        return contact_id

    @rpc.access("read")
    def GetContact(self, request, context):  # noqa: N802
        if request.contact_id not in self.contacts:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such contact")
        return self.contacts[request.contact_id]

    @rpc.access("read")
    def BatchGetContacts(self, request, context):  # noqa: N802
        found = {cid: self.contacts[cid] for cid in request.contact_ids if cid in self.contacts}
        return contacts_pb2.BatchGetContactsResponse(
            contacts=found, not_found=[cid for cid in request.contact_ids if cid not in found]
        )


Fake = TypeVar("Fake", bound=FakeDirectory)


@pytest.fixture
def directory(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDirectory]:
    yield from serving(FakeDirectory(), monkeypatch)


def serving(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fake]:
    """`fake` served as contacts' gRPC ContactDirectory, where the desk looks for it, until the test ends."""
    port = stack.free_port()

    def register(server: grpc.Server) -> list[str]:
        contacts_pb2_grpc.add_ContactDirectoryServicer_to_server(fake, server)
        return [contacts_pb2.DESCRIPTOR.services_by_name["ContactDirectory"].full_name]

    server, _ = rpc.build_server("contacts", port, register)
    server.start()
    monkeypatch.setenv("CRM_CONTACTS_GRPC_TARGET", f"127.0.0.1:{port}")
    yield fake
    server.stop(grace=None)


@pytest.fixture
def desk(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, directory: FakeDirectory
) -> Iterator[ServiceHarness]:
    with harness(SERVICE, monkeypatch, service_env) as subject:
        yield subject
