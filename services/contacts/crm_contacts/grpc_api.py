"""gRPC edge of the contacts service: crm.contacts.v1.ContactDirectory."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import struct_pb2

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crm_contacts.commands import ContactBook
from crm_contacts.domain import Contact
from crmkit.events import rfc3339
from crmkit.rpc import require

MAX_BATCH = 1000


def to_message(contact: Contact) -> contacts_pb2.Contact:
    attributes = struct_pb2.Struct()
    attributes.update(contact.attributes)
    return contacts_pb2.Contact(
        id=contact.id,
        version=contact.version,
        first_name=contact.first_name or "",
        last_name=contact.last_name or "",
        email=contact.email or "",
        phone=contact.phone or "",
        company_id=contact.company_id or "",
        lifecycle_stage=contact.lifecycle_stage,
        tags=contact.tags,
        attributes=attributes,
        owner=contact.owner or "",
        status=contact.status,
        created_at=rfc3339(contact.created_at) if contact.created_at else "",
        updated_at=rfc3339(contact.updated_at) if contact.updated_at else "",
    )


class ContactDirectory(contacts_pb2_grpc.ContactDirectoryServicer):
    def __init__(self, book: ContactBook) -> None:
        self.book = book

    def GetContact(  # noqa: N802 - the name is the contract's
        self, request: contacts_pb2.GetContactRequest, context: grpc.ServicerContext
    ) -> contacts_pb2.Contact:
        require(bool(request.contact_id.strip()), "contact_id", "contact_id is required")
        return to_message(self.book.contact(request.contact_id))

    def BatchGetContacts(  # noqa: N802
        self, request: contacts_pb2.BatchGetContactsRequest, context: grpc.ServicerContext
    ) -> contacts_pb2.BatchGetContactsResponse:
        ids: Sequence[str] = list(dict.fromkeys(request.contact_ids))
        require(len(ids) <= MAX_BATCH, "contact_ids", f"at most {MAX_BATCH} ids per call")
        found = self.book.contacts_by_id(ids)
        return contacts_pb2.BatchGetContactsResponse(
            contacts={cid: to_message(contact) for cid, contact in found.items()},
            not_found=[cid for cid in ids if cid not in found],
        )


def register(server: grpc.Server, book: ContactBook) -> list[str]:
    contacts_pb2_grpc.add_ContactDirectoryServicer_to_server(ContactDirectory(book), server)
    return [contacts_pb2.DESCRIPTOR.services_by_name["ContactDirectory"].full_name]
