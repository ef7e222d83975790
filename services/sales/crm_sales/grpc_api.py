"""gRPC edge of the sales service: crm.sales.v1.CustomerValue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from crm.sales.v1 import sales_pb2, sales_pb2_grpc
from crm_sales import export, reports
from crm_sales.commands import SalesBook
from crmkit.events import rfc3339
from crmkit.export import records_json, requested_ids
from crmkit.rpc import access, require, timestamp


def _money(value: dict[str, str]) -> sales_pb2.Money:
    return sales_pb2.Money(amount=value["amount"], currency=value["currency"])


def to_message(value: dict[str, Any]) -> sales_pb2.GetCustomerValueResponse:
    return sales_pb2.GetCustomerValueResponse(
        contact_id=value["contact_id"],
        lifetime_value=_money(value["lifetime_value"]),
        predicted_value=_money(value["predicted_value"]),
        recency_score=value["rfm"]["recency"],
        frequency_score=value["rfm"]["frequency"],
        monetary_score=value["rfm"]["monetary"],
        tier=value["tier"],
        open_deals=value["open_deals"],
        open_pipeline=_money(value["open_pipeline"]),
        won_deals=value["won_deals"],
        last_purchase_at=rfc3339(value["last_purchase_at"]) if value["last_purchase_at"] else "",
        last_purchase_time=timestamp(value["last_purchase_at"]),
    )


class CustomerValueServicer(sales_pb2_grpc.CustomerValueServicer):
    def __init__(self, book: SalesBook) -> None:
        self.book = book

    @access("read")
    def GetCustomerValue(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC naming
        require(0 < len(request.contact_id) <= 128, "contact_id", "contact_id is required (at most 128 characters)")
        return to_message(reports.customer_value(self.book, request.contact_id))

    @access("export")
    def ExportContactRecords(  # noqa: N802 - gRPC naming
        self, request: sales_pb2.ExportContactRecordsRequest, context: grpc.ServicerContext
    ) -> sales_pb2.ExportContactRecordsResponse:
        """The person's deals, quotes and activities, for their export (contacts asks, as sales:export)."""
        records = export.contact_records(self.book, requested_ids(request.contact_ids))
        return sales_pb2.ExportContactRecordsResponse(records_json=records_json(records))


def register(server: grpc.Server, book: SalesBook) -> Sequence[str]:
    sales_pb2_grpc.add_CustomerValueServicer_to_server(CustomerValueServicer(book), server)
    return [sales_pb2.DESCRIPTOR.services_by_name["CustomerValue"].full_name]
