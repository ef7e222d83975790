"""gRPC edge of the messaging service: crm.messaging.v1.MessageStatus."""

from __future__ import annotations

import re
from typing import Any

import grpc

from crm.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from crm_messaging import export
from crm_messaging.commands import MessageDesk
from crmkit.errors import ValidationFailed
from crmkit.export import records_json, requested_ids
from crmkit.rpc import access, require, require_all, timestamp
from crmkit.web.pagination import decode_cursor, encode_cursor

DEFAULT_PAGE, MAX_PAGE = 10, 100
POSITION_MS = re.compile(r"[0-9]{1,15}")


def to_message(view: dict[str, Any]) -> messaging_pb2.Message:
    return messaging_pb2.Message(
        id=view["id"],
        contact_id=view.get("contact_id") or "",
        channel=view.get("channel") or "",
        status=view.get("status") or "",
        subject=view.get("subject") or "",
        template_id=view.get("template_id") or "",
        campaign_id=view.get("campaign_id") or "",
        queued_at=view.get("queued_at") or "",
        sent_at=view.get("sent_at") or "",
        delivered_at=view.get("delivered_at") or "",
        reason=view.get("reason") or "",
        queue_time=timestamp(view.get("queued_at")),
        send_time=timestamp(view.get("sent_at")),
        deliver_time=timestamp(view.get("delivered_at")),
    )


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
        size = _page_size(request)
        found = self.desk.contact_messages(request.contact_id, size + 1, _position(request.page_token))
        last = found[size - 1] if len(found) > size else None
        return messaging_pb2.ListContactMessagesResponse(
            messages=[to_message(d) for d in found[:size]],
            next_page_token=encode_cursor(f"{last['queued_ms']}:{last['_id']}") if last else "",
        )

    @access("export")
    def ExportContactRecords(  # noqa: N802 - the name is the contract's
        self, request: messaging_pb2.ExportContactRecordsRequest, context: grpc.ServicerContext
    ) -> messaging_pb2.ExportContactRecordsResponse:
        """The person's messages with their consent proofs, for their export (contacts asks, as messaging:export)."""
        records = export.contact_records(self.desk, requested_ids(request.contact_ids))
        return messaging_pb2.ExportContactRecordsResponse(records_json=records_json(records))


def _page_size(request: messaging_pb2.ListContactMessagesRequest) -> int:
    """page_size, or limit from callers built before it (both set, they must agree)."""
    disagree = bool(request.limit and request.page_size and request.limit != request.page_size)
    require_all(
        (bool(request.contact_id.strip()), "contact_id", "contact_id is required"),
        (0 <= request.limit <= MAX_PAGE, "limit", f"limit must be 0 to {MAX_PAGE}"),
        (0 <= request.page_size <= MAX_PAGE, "page_size", f"page_size must be 0 to {MAX_PAGE}"),
        (not disagree, "limit", "limit and page_size differ; set page_size only"),
        (not disagree, "page_size", "limit and page_size differ; set page_size only"),
    )
    return request.page_size or request.limit or DEFAULT_PAGE


def _position(page_token: str) -> tuple[int, str] | None:
    """The (queued_ms, id) a page token carries: where the previous page ended."""
    if not page_token:
        return None
    try:
        queued_ms, _, last_id = decode_cursor(page_token).partition(":")
        if POSITION_MS.fullmatch(queued_ms) and last_id:  # Mongo ints are 8 bytes: no longer digit runs
            return int(queued_ms), last_id
    except ValidationFailed:
        pass
    message = "not a next_page_token this API returned"
    raise ValidationFailed(message, {"page_token": [message]})


def register(server: grpc.Server, desk: MessageDesk) -> list[str]:
    messaging_pb2_grpc.add_MessageStatusServicer_to_server(MessageStatus(desk), server)
    return [messaging_pb2.DESCRIPTOR.services_by_name["MessageStatus"].full_name]
