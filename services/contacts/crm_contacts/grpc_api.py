"""gRPC edge of the contacts service: crm.contacts.v1.ContactDirectory."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from marshmallow import ValidationError

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crm_contacts.records.commands import ContactBook
from crm_contacts.records.domain import CHANNELS, CONSENT_STATUSES, LEGAL_BASES, Contact
from crm_contacts.records.schemas import ContactInput
from crm_contacts.segments.commands import DEFAULT_STREAM_PAGE, MAX_STREAM_PAGE, SegmentBook
from crmkit.errors import NotFound, ValidationFailed
from crmkit.events import Metadata, new_id, rfc3339
from crmkit.logs import correlation_id
from crmkit.rpc import access, actor, require_all, timestamp
from crmkit.store import ConcurrencyError

MAX_BATCH = 1000
MAX_FOUND = 10  # FindContacts answers at most this many
# CreateContact's ids: fixed by the caller and its request_id, so a repeated call finds what the first created
CREATED_BY_REQUEST = uuid.UUID("3b0f9d4e-51c6-4d0e-8f7a-6c2d9b1e4a70")


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
        locale=contact.locale or "",
        time_zone=contact.time_zone or "",
        merged_into=contact.merged_into or "",
        create_time=timestamp(contact.created_at),
        update_time=timestamp(contact.updated_at),
    )


def to_member(document: dict[str, Any]) -> contacts_pb2.SegmentMember:
    """A contact of the read model (projections.public form) as a streamed segment member."""
    return contacts_pb2.SegmentMember(
        contact_id=document["id"],
        version=document.get("version") or 0,
        first_name=document.get("first_name") or "",
        last_name=document.get("last_name") or "",
        email=document.get("email") or "",
        phone=document.get("phone") or "",
        company_id=document.get("company_id") or "",
        lifecycle_stage=document.get("lifecycle_stage") or "",
        tags=document.get("tags") or [],
        owner=document.get("owner") or "",
        locale=document.get("locale") or "",
        time_zone=document.get("time_zone") or "",
    )


class SegmentMembers:
    """ListSegmentMembers, mixed into ContactDirectory (which sets `self.segments`)."""

    segments: SegmentBook | None

    @access("read")
    def ListSegmentMembers(  # noqa: N802 - the name is the contract's
        self, request: contacts_pb2.ListSegmentMembersRequest, context: grpc.ServicerContext
    ) -> Iterator[contacts_pb2.SegmentMember]:
        require_all(
            (bool(request.segment_id.strip()), "segment_id", "segment_id is required"),
            (0 <= request.page_size <= MAX_STREAM_PAGE, "page_size", f"page_size must be 0 to {MAX_STREAM_PAGE}"),
        )
        if self.segments is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "segments are not served here")
        for batch in self.segments.member_pages(request.segment_id, request.page_size or DEFAULT_STREAM_PAGE):
            if not context.is_active():  # the caller went away or its deadline passed
                return
            yield from (to_member(document) for document in batch)


class ContactDirectory(SegmentMembers, contacts_pb2_grpc.ContactDirectoryServicer):
    def __init__(self, book: ContactBook, segments: SegmentBook | None = None) -> None:
        self.book = book
        self.segments = segments

    @access("read")
    def GetContact(  # noqa: N802 - the name is the contract's
        self, request: contacts_pb2.GetContactRequest, context: grpc.ServicerContext
    ) -> contacts_pb2.Contact:
        require_all((bool(request.contact_id.strip()), "contact_id", "contact_id is required"))
        return to_message(self.book.contact(request.contact_id))

    @access("read")
    def BatchGetContacts(  # noqa: N802
        self, request: contacts_pb2.BatchGetContactsRequest, context: grpc.ServicerContext
    ) -> contacts_pb2.BatchGetContactsResponse:
        ids: Sequence[str] = list(dict.fromkeys(request.contact_ids))
        require_all((len(ids) <= MAX_BATCH, "contact_ids", f"at most {MAX_BATCH} ids per call"))
        found = self.book.contacts_by_id(ids)
        return contacts_pb2.BatchGetContactsResponse(
            contacts={cid: to_message(contact) for cid, contact in found.items()},
            not_found=[cid for cid in ids if cid not in found],
        )

    @access("read")
    def CheckConsent(  # noqa: N802 - the name is the contract's
        self, request: contacts_pb2.CheckConsentRequest, context: grpc.ServicerContext
    ) -> contacts_pb2.CheckConsentResponse:
        require_all(*_consent_question(request))
        return self._consent_reply(request.contact_id, request.channel)

    @access("read")
    def BatchCheckConsent(  # noqa: N802 - the name is the contract's
        self, request: contacts_pb2.BatchCheckConsentRequest, context: grpc.ServicerContext
    ) -> contacts_pb2.BatchCheckConsentResponse:
        checks = [(check.contact_id, check.channel) for check in request.checks]
        require_all((len(checks) <= MAX_BATCH, "checks", f"at most {MAX_BATCH} checks per call"))
        require_all(
            *(
                check
                for n, question in enumerate(request.checks)
                for check in _consent_question(question, f"checks[{n}].")
            )
        )
        answers = self.book.check_consents(checks)
        return contacts_pb2.BatchCheckConsentResponse(
            answers=[
                _consent_message(answer)
                if answer is not None
                else contacts_pb2.CheckConsentResponse(
                    contact_id=cid, channel=channel, granted=False, reason="contact_not_found"
                )
                for (cid, channel), answer in zip(checks, answers, strict=True)
            ],
            not_found=list(
                dict.fromkeys(cid for (cid, _), answer in zip(checks, answers, strict=True) if answer is None)
            ),
        )

    @access("write")
    def RecordConsent(  # noqa: N802 - the name is the contract's
        self, request: contacts_pb2.RecordConsentRequest, context: grpc.ServicerContext
    ) -> contacts_pb2.CheckConsentResponse:
        legal_basis = request.legal_basis or "consent"
        require_all(
            *_consent_question(request),
            (request.status in CONSENT_STATUSES, "status", f"status must be one of {', '.join(CONSENT_STATUSES)}"),
            (legal_basis in LEGAL_BASES, "legal_basis", f"legal_basis must be one of {', '.join(LEGAL_BASES)}"),
            (len(request.source) <= 100, "source", "source is at most 100 characters"),
        )
        survivor = self.book.contact(request.contact_id).id
        consent = {"status": request.status, "source": request.source or "grpc", "legal_basis": legal_basis}
        meta = Metadata(actor=actor(), correlation_id=correlation_id.get() or new_id())
        self.book.set_consent(survivor, request.channel, consent, meta, None)
        return self._consent_reply(survivor, request.channel)

    @access("read")
    def FindContacts(  # noqa: N802 - the name is the contract's
        self, request: contacts_pb2.FindContactsRequest, context: grpc.ServicerContext
    ) -> contacts_pb2.FindContactsResponse:
        wanted = _find_address(request)
        found = self.book.find_contacts(wanted.get("email"), wanted.get("phone"), MAX_FOUND)
        return contacts_pb2.FindContactsResponse(contacts=[to_message(contact) for contact in found])

    @access("write")
    def CreateContact(  # noqa: N802 - the name is the contract's
        self, request: contacts_pb2.CreateContactRequest, context: grpc.ServicerContext
    ) -> contacts_pb2.Contact:
        request_id = request.request_id.strip()
        require_all((0 < len(request_id) <= 128, "request_id", "request_id is required (at most 128 characters)"))
        fields = _contact_fields(request)
        caller = actor()
        contact_id = str(uuid.uuid5(CREATED_BY_REQUEST, f"{caller}|{request_id}"))
        try:
            return to_message(self.book.contact(contact_id))
        except NotFound:
            pass
        meta = Metadata(actor=caller, correlation_id=correlation_id.get() or new_id())
        with contextlib.suppress(ConcurrencyError):  # the same request, at the same moment: the first one's contact
            self.book.contacts.save(Contact.create(contact_id, fields), meta)
        return to_message(self.book.contact(contact_id))

    def _consent_reply(self, contact_id: str, channel: str) -> contacts_pb2.CheckConsentResponse:
        return _consent_message(self.book.check_consent(contact_id, channel))


def _consent_question(request: Any, prefix: str = "") -> list[tuple[bool, str, str]]:
    """The checks of a contact id and channel (a CheckConsent, a batch's check, a RecordConsent);
    `prefix` places a batch's check in its field path (checks[3].channel)."""
    return [
        (bool(request.contact_id.strip()), f"{prefix}contact_id", "contact_id is required"),
        (request.channel in CHANNELS, f"{prefix}channel", f"channel must be one of {', '.join(CHANNELS)}"),
    ]


def _find_address(request: contacts_pb2.FindContactsRequest) -> dict[str, str]:
    """A FindContacts' email and/or phone (those given) as POST /v1/contacts stores them."""
    given = {name: value for name in ("email", "phone") if (value := getattr(request, name).strip())}
    require_all((bool(given), "email", "give an email, a phone, or both"))
    try:
        loaded = ContactInput(only=tuple(given)).load(given)
    except ValidationError as exc:
        raise _invalid(exc) from None
    return {name: loaded[name] for name in given}


def _contact_fields(request: contacts_pb2.CreateContactRequest) -> dict[str, Any]:
    """A CreateContact's fields, checked and normalised as POST /v1/contacts checks them (every bad one listed)."""
    given: dict[str, Any] = {
        name: value
        for name in ("first_name", "last_name", "email", "phone", "locale")
        if (value := getattr(request, name).strip())
    }
    if request.tags:
        given["tags"] = list(request.tags)
    if request.HasField("attributes"):
        given["attributes"] = json_format.MessageToDict(request.attributes)
    try:
        return ContactInput().load(given)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: ValidationError) -> ValidationFailed:
    """Marshmallow's errors as the INVALID_ARGUMENT every gRPC method answers: each bad field named, in the
    details and in the BadRequest."""
    found = exc.messages if isinstance(exc.messages, dict) else {"_": exc.messages}
    errors = {name: [str(m) for m in (said if isinstance(said, list) else [said])] for name, said in found.items()}
    return ValidationFailed("; ".join(f"{name}: {m}" for name, said in errors.items() for m in said), errors)


def _consent_message(answer: dict[str, Any]) -> contacts_pb2.CheckConsentResponse:
    """One answer on the wire, naming the consent event it rests on (a sender's proof)."""
    consent, event = answer["consent"], answer.get("event") or {}
    return contacts_pb2.CheckConsentResponse(
        contact_id=answer["contact_id"],
        channel=answer["channel"],
        granted=answer["granted"],
        reason=answer["reason"],
        address=answer["address"] or "",
        legal_basis=consent.get("legal_basis") or "",
        source=consent.get("source") or "",
        decided_at=consent.get("at") or "",
        decide_time=timestamp(consent.get("at")),
        consent_event_id=event.get("event_id") or "",
        consent_version=event.get("version") or 0,
        consent_status=consent.get("status") or "",
    )


def register(server: grpc.Server, book: ContactBook, segments: SegmentBook | None = None) -> list[str]:
    contacts_pb2_grpc.add_ContactDirectoryServicer_to_server(ContactDirectory(book, segments), server)
    return [contacts_pb2.DESCRIPTOR.services_by_name["ContactDirectory"].full_name]
