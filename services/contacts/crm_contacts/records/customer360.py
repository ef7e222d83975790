"""The customer 360: the record plus what sales, service desk and messaging know.

The three lookups run in parallel over gRPC, each with a deadline. A service that is
down or slow makes only its own section say "unavailable" with the reason; the
profile and the other sections still answer.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from crm.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from crm.sales.v1 import sales_pb2, sales_pb2_grpc
from crm.servicedesk.v1 import servicedesk_pb2, servicedesk_pb2_grpc
from crm_contacts import settings
from crm_contacts.records.commands import ContactBook
from crmkit import rpc
from crmkit.config import grpc_target

RECENT_MESSAGES = 10


class Neighbours:
    """Stubs for the other services' lookups, on channels kept for the process's life."""

    def __init__(self) -> None:
        self.deadline = settings.current().customer360_deadline
        self.sales = sales_pb2_grpc.CustomerValueStub(_channel("sales", 50052))
        self.support = servicedesk_pb2_grpc.SupportSummaryStub(_channel("service-desk", 50053))
        self.messages = messaging_pb2_grpc.MessageStatusStub(_channel("messaging", 50054))

    def value(self, contact_id: str) -> Message:
        return self._call(self.sales.GetCustomerValue, sales_pb2.GetCustomerValueRequest(contact_id=contact_id))

    def support_summary(self, contact_id: str) -> Message:
        request = servicedesk_pb2.GetSupportSummaryRequest(contact_id=contact_id)
        return self._call(self.support.GetSupportSummary, request)

    def recent_messages(self, contact_id: str) -> Message:
        request = messaging_pb2.ListContactMessagesRequest(contact_id=contact_id, limit=RECENT_MESSAGES)
        return self._call(self.messages.ListContactMessages, request)

    def _call(self, method: Callable[..., Message], request: Message) -> Message:
        return rpc.call(method, request, timeout=self.deadline, attempts=1)


def _channel(service: str, port: int) -> grpc.Channel:
    return rpc.channel(grpc_target(service, port), audience=service, caller="contacts")


def customer_360(book: ContactBook, neighbours: Neighbours, contact_id: str) -> dict[str, Any]:
    contact = book.contact(contact_id)
    lookups = {
        "value": neighbours.value,
        "support": neighbours.support_summary,
        "messages": neighbours.recent_messages,
    }
    with ThreadPoolExecutor(max_workers=len(lookups), thread_name_prefix="360") as pool:
        pending = {name: pool.submit(lookup, contact.id) for name, lookup in lookups.items()}
        sections = {name: _section(future.result) for name, future in pending.items()}
    timeline = [
        {
            "time": entry["time"],
            "from": entry["changes"]["lifecycle_stage"]["before"],
            "to": entry["changes"]["lifecycle_stage"]["after"],
            "actor": entry["actor"],
        }
        for entry in book.contact_history(contact.id)
        if "lifecycle_stage" in entry["changes"]
    ]
    return {"contact": contact.view(), **sections, "lifecycle_timeline": timeline}


def _section(result: Callable[[], Message]) -> dict[str, Any]:
    try:
        reply = result()
    except grpc.RpcError as exc:
        reason = "timed out" if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED else exc.code().name.lower()
        return {"status": "unavailable", "reason": reason}
    data = MessageToDict(reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    data.pop("contact_id", None)
    return {"status": "available", **data}
