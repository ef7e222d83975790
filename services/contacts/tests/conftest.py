"""Fixtures for the contacts service's tests."""

import json
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from crm.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from crm.sales.v1 import sales_pb2, sales_pb2_grpc
from crm.servicedesk.v1 import servicedesk_pb2, servicedesk_pb2_grpc
from crm_contacts.app import SERVICE
from crm_contacts.grpc_api import register
from crm_contacts.records.commands import ContactBook
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


class Keeper:
    """A fake of one service's ExportContactRecords (mixed into its servicer base): answers
    `records`, remembers the ids asked for, and with `slow` set waits past any deadline."""

    response: Any = None
    server: grpc.Server

    def __init__(self, records: dict[str, list[dict[str, Any]]]) -> None:
        self.records, self.asked = records, []
        self.slow, self.release = False, threading.Event()

    @rpc.access("export")
    def ExportContactRecords(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.asked.append(list(request.contact_ids))
        if self.slow:
            self.release.wait(10)
        return self.response(records_json=json.dumps(self.records))


FAKES = {  # service: (servicer base, add to server, full service name, response, what an empty answer holds)
    "sales": (
        sales_pb2_grpc.CustomerValueServicer,
        sales_pb2_grpc.add_CustomerValueServicer_to_server,
        "crm.sales.v1.CustomerValue",
        sales_pb2.ExportContactRecordsResponse,
        {"deals": [], "quotes": [], "activities": []},
    ),
    "service-desk": (
        servicedesk_pb2_grpc.SupportSummaryServicer,
        servicedesk_pb2_grpc.add_SupportSummaryServicer_to_server,
        "crm.servicedesk.v1.SupportSummary",
        servicedesk_pb2.ExportContactRecordsResponse,
        {"tickets": []},
    ),
    "messaging": (
        messaging_pb2_grpc.MessageStatusServicer,
        messaging_pb2_grpc.add_MessageStatusServicer_to_server,
        "crm.messaging.v1.MessageStatus",
        messaging_pb2.ExportContactRecordsResponse,
        {"messages": []},
    ),
}


@pytest.fixture
def record_keepers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Keeper]]:
    """Fake sales, service desk and messaging export servers (each behind the real gRPC auth),
    reached by the contacts service made after this fixture; by service, each answering no records."""
    keepers, servers = {}, []
    for service, (base, add, name, response, empty) in FAKES.items():
        keeper = type(f"Fake{base.__name__}", (Keeper, base), {"response": response})(empty)
        port = stack.free_port()
        server, _ = rpc.build_server(service, port, lambda srv, k=keeper, a=add, n=name: (a(k, srv), [n])[1])
        server.start()
        servers.append(server)
        keeper.server = server  # a test may stop it: the service is down
        keepers[service] = keeper
        monkeypatch.setenv(f"CRM_{service.replace('-', '').upper()}_GRPC_TARGET", f"127.0.0.1:{port}")
    monkeypatch.setenv("CRM_EXPORT_DEADLINE_SECONDS", "1")
    yield keepers
    for keeper in keepers.values():
        keeper.release.set()
    for server in servers:
        server.stop(grace=None)


@pytest.fixture
def exporting_contacts(
    record_keepers: dict[str, Keeper], service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServiceHarness]:
    """The contacts service, whose exports ask the fake `record_keepers`."""
    with harness(SERVICE, monkeypatch, service_env) as subject:
        yield subject
