"""gRPC edge of the messaging service: crm.messaging.v1.MessageStatus."""

from __future__ import annotations

from typing import Any

import grpc

from crm.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from crm_messaging.commands import MessageDesk
from crmkit.rpc import access, require


def to_message(view: dict[str, Any]) -> messaging_pb2.Message:
    return messaging_pb2.Message(
        id=view["id"], contact_id=view.get("contact_id") or "", channel=view.get("channel") or "",
        status=view.get("status") or "", subject=view.get("subject") or "", template_id=view.get("template_id") or "",
        campaign_id=view.get("campaign_id") or "", queued_at=view.get("queued_at") or "",
        sent_at=view.get("sent_at") or "", delivered_at=view.get("delivered_at") or "",
        reason=view.get("reason") or "")


class MessageStatus(messaging_pb2_grpc.MessageStatusServicer):
    def __init__(self, desk: MessageDesk) -> None:
        self.desk = desk

    @access("read")
    def GetMessage(  # noqa: N802 - the name is the contract's
        self, request: messaging_pb2.GetMessageRequest, context: grpc.ServicerContext
    ) -> messaging_pb2.Message:
        require(bool(request.message_id.strip()), "message_id", "message_id is required")
        return to_message(self.desk.message(request.message_id).view())

    @access("read")
    def ListContactMessages(  # noqa: N802
        self, request: messaging_pb2.ListContactMessagesRequest, context: grpc.ServicerContext
    ) -> messaging_pb2.ListContactMessagesResponse:
        require(bool(request.contact_id.strip()), "contact_id", "contact_id is required")
        require(0 <= request.limit <= 100, "limit", "limit must be 0 to 100")
        found = self.desk.contact_messages(request.contact_id, request.limit or 10)
        return messaging_pb2.ListContactMessagesResponse(messages=[to_message(d) for d in found])


def register(server: grpc.Server, desk: MessageDesk) -> list[str]:
    messaging_pb2_grpc.add_MessageStatusServicer_to_server(MessageStatus(desk), server)
    return [messaging_pb2.DESCRIPTOR.services_by_name["MessageStatus"].full_name]
