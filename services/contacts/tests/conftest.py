"""Fixtures for the contacts service's tests."""

from collections.abc import Iterator

import pytest

from crm_contacts.app import SERVICE
from crm_contacts.commands import ContactBook
from crm_contacts.grpc_api import register
from crmkit import rpc, stack
from crmkit.testing import ServiceHarness, harness


@pytest.fixture
def contacts(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[ServiceHarness]:
    with harness(SERVICE, monkeypatch, service_env) as subject:
        yield subject


@pytest.fixture
def grpc_target(contacts: ServiceHarness) -> Iterator[str]:
    """The contacts gRPC API served on a free port: its address."""
    port = stack.free_port()
    server, _ = rpc.build_server("contacts", port, lambda srv: register(srv, ContactBook(contacts.runtime)))
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)
