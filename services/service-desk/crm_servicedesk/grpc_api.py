"""gRPC edge of the service desk: crm.servicedesk.v1.SupportSummary."""

from __future__ import annotations

import grpc

from crm.servicedesk.v1 import servicedesk_pb2, servicedesk_pb2_grpc
from crm_servicedesk import export
from crm_servicedesk.commands import TicketDesk
from crmkit.errors import NotFound
from crmkit.export import records_json, requested_ids
from crmkit.rpc import access, require, timestamp


class SupportSummary(servicedesk_pb2_grpc.SupportSummaryServicer):
    def __init__(self, desk: TicketDesk) -> None:
        self.desk = desk

    @access("read")
    def GetSupportSummary(  # noqa: N802 - the name is the contract's
        self, request: servicedesk_pb2.GetSupportSummaryRequest, context: grpc.ServicerContext
    ) -> servicedesk_pb2.GetSupportSummaryResponse:
        contact_id = request.contact_id.strip()
        require(bool(contact_id), "contact_id", "contact_id is required")
        summary = self.desk.support_summary([contact_id])
        if not summary["total_tickets"] and not self.desk.contacts.find([contact_id]):
            raise NotFound(f"no contact {contact_id} known to the service desk")
        last = summary["last_satisfaction"]
        response = servicedesk_pb2.GetSupportSummaryResponse(
            contact_id=contact_id,
            open_tickets=summary["open_tickets"],
            total_tickets=summary["total_tickets"],
            complaints=summary["complaints"],
            sla_breaches=summary["sla_breaches"],
        )
        if last is not None:
            response.last_satisfaction.CopyFrom(
                servicedesk_pb2.Satisfaction(
                    ticket_id=last["ticket_id"],
                    csat=last["csat"] or 0,
                    nps=last["nps"] if last["nps"] is not None else -1,
                    rated_at=last["rated_at"],
                    rate_time=timestamp(last["rated_at"]),
                )
            )
        return response

    @access("export")
    def ExportContactRecords(  # noqa: N802 - the name is the contract's
        self, request: servicedesk_pb2.ExportContactRecordsRequest, context: grpc.ServicerContext
    ) -> servicedesk_pb2.ExportContactRecordsResponse:
        """The person's tickets, for their export (contacts asks, as servicedesk:export)."""
        records = export.contact_records(self.desk, requested_ids(request.contact_ids))
        return servicedesk_pb2.ExportContactRecordsResponse(records_json=records_json(records))


def register(server: grpc.Server, desk: TicketDesk) -> list[str]:
    servicedesk_pb2_grpc.add_SupportSummaryServicer_to_server(SupportSummary(desk), server)
    return [servicedesk_pb2.DESCRIPTOR.services_by_name["SupportSummary"].full_name]
