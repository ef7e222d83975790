"""The customer 360 answers with whatever is reachable, within its deadline."""

import threading

import grpc
import pytest

from crm.sales.v1 import sales_pb2, sales_pb2_grpc
from crm_contacts.app import SERVICE
from crmkit import rpc, stack
from crmkit.testing import harness


class FakeSales(sales_pb2_grpc.CustomerValueServicer):
    @rpc.access("read")
    def GetCustomerValue(self, request, context):  # noqa: N802
        return sales_pb2.GetCustomerValueResponse(
            contact_id=request.contact_id,
            tier="strategic",
            open_deals=2,
            won_deals=3,
            lifetime_value=sales_pb2.Money(amount="1250000", currency="IRR"),
        )


class SlowSales(sales_pb2_grpc.CustomerValueServicer):
    def __init__(self) -> None:
        self.release = threading.Event()

    @rpc.access("read")
    def GetCustomerValue(self, request, context):  # noqa: N802
        self.release.wait(10)  # longer than the caller's deadline
        return sales_pb2.GetCustomerValueResponse()


def serve_sales(servicer: sales_pb2_grpc.CustomerValueServicer) -> tuple[grpc.Server, int]:
    port = stack.free_port()

    def register(server: grpc.Server) -> list[str]:
        sales_pb2_grpc.add_CustomerValueServicer_to_server(servicer, server)
        return ["crm.sales.v1.CustomerValue"]

    server, _ = rpc.build_server("sales", port, register)
    server.start()
    return server, port


@pytest.mark.parametrize("sales_kind", ["up", "slow"])
def test_360_shows_what_is_reachable_and_marks_the_rest_unavailable(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, sales_kind: str
) -> None:
    servicer = FakeSales() if sales_kind == "up" else SlowSales()
    server, port = serve_sales(servicer)
    monkeypatch.setenv("CRM_SALES_GRPC_TARGET", f"127.0.0.1:{port}")
    monkeypatch.setenv("CRM_SERVICEDESK_GRPC_TARGET", f"127.0.0.1:{stack.free_port()}")  # nobody listens
    monkeypatch.setenv("CRM_MESSAGING_GRPC_TARGET", f"127.0.0.1:{stack.free_port()}")
    monkeypatch.setenv("CRM_360_DEADLINE_SECONDS", "0.5")
    try:
        with harness(SERVICE, monkeypatch, service_env) as contacts:
            sara = contacts.client.post(
                "/v1/contacts", json={"first_name": "Sara", "lifecycle_stage": "lead"}, headers=contacts.headers()
            ).get_json()
            contacts.client.patch(
                f"/v1/contacts/{sara['id']}", json={"lifecycle_stage": "customer"}, headers=contacts.headers()
            )
            response = contacts.client.get(f"/v1/contacts/{sara['id']}/360", headers=contacts.headers("contacts:read"))
            body = response.get_json()
    finally:
        if isinstance(servicer, SlowSales):
            servicer.release.set()
        server.stop(grace=None)
    assert response.status_code == 200
    assert body["contact"]["first_name"] == "Sara"
    if sales_kind == "up":
        assert body["value"]["status"] == "available"
        assert body["value"]["tier"] == "strategic" and body["value"]["open_deals"] == 2
        assert body["value"]["lifetime_value"] == {"amount": "1250000", "currency": "IRR"}
    else:
        assert body["value"] == {"status": "unavailable", "reason": "timed out"}
    assert body["support"]["status"] == "unavailable"
    assert body["messages"]["status"] == "unavailable"
    assert [(t["from"], t["to"]) for t in body["lifecycle_timeline"]] == [("lead", "customer")]


def test_360_of_an_unknown_contact_is_404(contacts) -> None:
    assert contacts.client.get("/v1/contacts/nobody/360", headers=contacts.headers()).status_code == 404
