"""A person's whole record in one export: `GET /v1/contacts/{id}/export`, their data subject
access request (GDPR art. 15) and portability (art. 20).

What contacts holds (the contact, its company, its history, the records merged into it) plus
what each other service holds on the person, gathered with one `ExportContactRecords` call per
service (the person's id and their merged records' ids at once), all three at the same time,
each with a deadline. The export is whole or not at all: if any service cannot answer, the
answer is a 503 naming it, never a document that silently leaves part of the person out.

It needs `contacts:export` (or admin): neither `:read` nor `:write` implies it, since it hands
over everything on a person at once; contacts calls the others as itself, with the
`<service>:export` roles its service token is granted. Nothing about the person is logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from flask import Blueprint, Response, jsonify
from marshmallow import Schema, fields

from crm.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from crm.sales.v1 import sales_pb2, sales_pb2_grpc
from crm.servicedesk.v1 import servicedesk_pb2, servicedesk_pb2_grpc
from crm_contacts import settings
from crm_contacts.records.commands import ContactBook
from crm_contacts.records.schemas import CompanyView, ContactView, HistoryEntry
from crmkit import rpc
from crmkit.config import grpc_target
from crmkit.errors import Unavailable
from crmkit.web import endpoint, jsonable

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024 * 1024  # one service's records of one person; gRPC's default cap is 4 MiB
# (service, default gRPC port, stub, request): who holds what, and how to ask
KEEPERS = (
    ("sales", 50052, sales_pb2_grpc.CustomerValueStub, sales_pb2.ExportContactRecordsRequest),
    ("service-desk", 50053, servicedesk_pb2_grpc.SupportSummaryStub, servicedesk_pb2.ExportContactRecordsRequest),
    ("messaging", 50054, messaging_pb2_grpc.MessageStatusStub, messaging_pb2.ExportContactRecordsRequest),
)


class RecordKeepers:
    """The other services' ExportContactRecords, on channels kept for the process's life."""

    def __init__(self) -> None:
        self.deadline = settings.current().export_deadline
        self.stubs = {
            service: (
                stub(
                    rpc.channel(
                        grpc_target(service, port),
                        audience=service,
                        caller="contacts",
                        max_receive_bytes=MAX_ANSWER_BYTES,
                    )
                ),
                request,
            )
            for service, port, stub, request in KEEPERS
        }

    def gather(self, contact_ids: Sequence[str]) -> dict[str, Any]:
        """Every service's records of these ids, by service; Unavailable naming each service
        that did not answer (with why), if any did not."""
        with ThreadPoolExecutor(max_workers=len(self.stubs), thread_name_prefix="export") as pool:
            pending = {service: pool.submit(self._ask, service, contact_ids) for service in self.stubs}
            answers = {service: future.result() for service, future in pending.items()}
        failed = {service: [why] for service, why in answers.items() if isinstance(why, str)}
        if failed:
            raise Unavailable(
                f"{', '.join(failed)} could not answer, so no export is given (never a partial one); retry shortly",
                failed,
            )
        return answers

    def _ask(self, service: str, contact_ids: Sequence[str]) -> dict[str, Any] | str:
        """The service's records, or why it could not give them (logged without the person)."""
        stub, request = self.stubs[service]
        try:
            reply = rpc.call(stub.ExportContactRecords, request(contact_ids=list(contact_ids)), timeout=self.deadline)
            records = json.loads(reply.records_json)
        except grpc.RpcError as exc:
            log.warning("export: a service did not answer", extra={"service": service, "code": exc.code().name})
            return _reason(exc.code(), self.deadline)
        except ValueError:
            log.warning("export: a service answered with no JSON document", extra={"service": service})
            return "answered with something that is not a JSON document"
        if not isinstance(records, dict):
            return "answered with something that is not a JSON object"
        return records


def _reason(code: grpc.StatusCode, deadline: float) -> str:
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"did not answer within its deadline ({deadline:g} s)"
    if code == grpc.StatusCode.UNAVAILABLE:
        return "unreachable"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return f"the records are larger than one answer may be ({MAX_ANSWER_BYTES // 2**20} MiB), or it is busy"
    return f"answered {code.name}"


def export(book: ContactBook, keepers: RecordKeepers, contact_id: str) -> dict[str, Any]:
    """The whole record: contacts' part, then each other service's (a merged id leads to the survivor)."""
    own = book.export(contact_id)
    ids = [own["contact"]["id"], *(record["id"] for record in own["merged_records"])]
    return {**own, **keepers.gather(ids)}


class MergedRecord(Schema):
    id = fields.String()
    history = fields.List(fields.Nested(HistoryEntry))


class ExportView(Schema):
    exported_at = fields.DateTime()
    contact = fields.Nested(ContactView)
    company = fields.Nested(CompanyView, allow_none=True)
    history = fields.List(fields.Nested(HistoryEntry), metadata={"description": "every change to the contact"})
    merged_records = fields.List(
        fields.Nested(MergedRecord),
        metadata={"description": "the duplicates merged into this contact, with their history"},
    )
    sales = fields.Dict(
        metadata={
            "description": "deals (with stage history), quotes (with lines) and activities: "
            "`{deals, quotes, activities}`, each as sales' GET shows it"
        }
    )
    service_desk = fields.Dict(
        data_key="service-desk",
        metadata={"description": "tickets with their comments, satisfaction rating and SLA clocks: `{tickets}`"},
    )
    messaging = fields.Dict(
        metadata={
            "description": "messages, each with `consent_proof` (what "
            "GET /v1/messages/{id}/consent answers): `{messages}`"
        }
    )


def blueprint(book: ContactBook, keepers: RecordKeepers) -> Blueprint:
    bp = Blueprint("contact_export", __name__)

    @bp.get("/v1/contacts/<contact_id>/export")
    @endpoint(
        "export",
        response=ExportView,
        openapi={
            "responses": {
                "503": {
                    "description": "a service holding records of the person did not answer: `errors` names it, and why"
                }
            }
        },
    )
    def export_contact(contact_id: str) -> Response:
        """Everything every service holds about the person, as one JSON document (their data subject
        access request); 503 naming any service that cannot answer, never a partial export."""
        document = export(book, keepers, contact_id)
        response = jsonify(jsonable(document))
        response.headers["Content-Disposition"] = f'attachment; filename="contact-{document["contact"]["id"]}.json"'
        response.headers["Cache-Control"] = "no-store"
        return response

    return bp
