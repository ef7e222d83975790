"""Fixtures for the sales service's tests: the service wired to the test servers, and a
stand-in contacts directory (a real gRPC server with an in-memory book of contacts).

The end-to-end test (test_with_real_contacts.py) runs the real contacts service instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crm_sales.app import SERVICE
from crmkit import rpc, stack
from crmkit.testing import ServiceHarness, harness


class FakeDirectory(contacts_pb2_grpc.ContactDirectoryServicer):
    """Answers GetContact/BatchGetContacts from `people` (id -> fields)."""

    def __init__(self) -> None:
        self.people: dict[str, dict[str, Any]] = {}

    def add(self, contact_id: str, **fields: Any) -> str:
        self.people[contact_id] = {"id": contact_id, "status": "active", "lifecycle_stage": "lead", **fields}
        return contact_id

    def _message(self, contact_id: str) -> contacts_pb2.Contact | None:
        person = self.people.get(contact_id)
        if person and person.get("merged_into"):
            person = self.people[person["merged_into"]]
        return contacts_pb2.Contact(**person) if person else None

    @rpc.access("read")
    def GetContact(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        message = self._message(request.contact_id)
        if message is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such contact")
        return message

    @rpc.access("read")
    def BatchGetContacts(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        found = {cid: m for cid in request.contact_ids if (m := self._message(cid)) is not None}
        return contacts_pb2.BatchGetContactsResponse(
            contacts=found, not_found=[c for c in request.contact_ids if c not in found]
        )


@pytest.fixture(scope="session")
def fake_contacts() -> Iterator[tuple[FakeDirectory, str]]:
    directory = FakeDirectory()
    port = stack.free_port()

    def register(server: grpc.Server) -> list[str]:
        contacts_pb2_grpc.add_ContactDirectoryServicer_to_server(directory, server)
        return [contacts_pb2.DESCRIPTOR.services_by_name["ContactDirectory"].full_name]

    server, _ = rpc.build_server("contacts", port, register, max_workers=4)
    server.start()
    yield directory, f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture
def people(fake_contacts: tuple[FakeDirectory, str]) -> FakeDirectory:
    return fake_contacts[0]


@pytest.fixture
def sales(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, fake_contacts: tuple[FakeDirectory, str]
) -> Iterator[ServiceHarness]:
    monkeypatch.setenv("CRM_CONTACTS_GRPC_TARGET", fake_contacts[1])
    with harness(SERVICE, monkeypatch, service_env) as subject:
        yield subject
