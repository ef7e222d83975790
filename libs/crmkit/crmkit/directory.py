"""The customer directory as every other service sees it.

Sales, service desk and messaging all need to know who a contact is. They learn it the
way architecture.md prescribes: a local projection of the contacts topic
(`LocalContacts`), with the contacts service's gRPC `ContactDirectory` as the source
for what events do not carry in clear text (personal fields travel encrypted, see
crmkit.shredding) and for decisions that must see the latest state (does this
contact exist? may we message them?).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from pymongo import ASCENDING, UpdateOne
from pymongo.collection import Collection

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crmkit import rpc
from crmkit.config import grpc_target, topic_of
from crmkit.errors import NotFound, Unavailable
from crmkit.events import RecordedEvent, utcnow

log = logging.getLogger(__name__)

CONTACTS_TOPIC = topic_of("contacts")
BATCH = 500  # ids per BatchGetContacts call (the server takes up to 1000)


@dataclass(frozen=True)
class Consent:
    contact_id: str  # the survivor's id when the asked one was merged
    granted: bool
    reason: str
    address: str | None

    @classmethod
    def from_reply(cls, reply: Any) -> Consent:
        """From a contacts_pb2 consent answer (an empty address means none)."""
        return cls(reply.contact_id, reply.granted, reply.reason, reply.address or None)


class ContactDirectory:
    """A client of crm.contacts.v1.ContactDirectory: deadlines always, retries only when safe."""

    def __init__(self, target: str | None = None, deadline: float = rpc.DEFAULT_DEADLINE) -> None:
        self.channel = grpc.insecure_channel(target or grpc_target("contacts", 50051))
        self.stub = contacts_pb2_grpc.ContactDirectoryStub(self.channel)
        self.deadline = deadline

    def get(self, contact_id: str) -> dict[str, Any]:
        """The contact (the survivor for a merged id); NotFound, or Unavailable when contacts is down."""
        request = contacts_pb2.GetContactRequest(contact_id=contact_id)
        return _contact(self._call(self.stub.GetContact, request, f"contact {contact_id}"))

    def many(self, contact_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Contacts by the ids asked for, in batches (never one call per row); unknown ids are left out."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(contact_ids))
        for start in range(0, len(unique), BATCH):
            request = contacts_pb2.BatchGetContactsRequest(contact_ids=unique[start:start + BATCH])
            reply = self._call(self.stub.BatchGetContacts, request, "contacts")
            found.update({cid: _contact(message) for cid, message in reply.contacts.items()})
        return found

    def consent(self, contact_id: str, channel: str) -> Consent:
        request = contacts_pb2.CheckConsentRequest(contact_id=contact_id, channel=channel)
        reply = self._call(self.stub.CheckConsent, request, f"contact {contact_id}")
        return Consent.from_reply(reply)

    def consents(self, checks: Sequence[tuple[str, str]]) -> list[Consent | None]:
        """Many (contact id, channel) checks, answered in order, BATCH per call (a send
        worker's batch is one round trip, not one per message); None for an unknown contact."""
        answers: list[Consent | None] = []
        for start in range(0, len(checks), BATCH):
            chunk = checks[start:start + BATCH]
            request = contacts_pb2.BatchCheckConsentRequest(checks=[
                contacts_pb2.CheckConsentRequest(contact_id=cid, channel=channel) for cid, channel in chunk])
            reply = self._call(self.stub.BatchCheckConsent, request, "contacts")
            unknown = set(reply.not_found)
            answers += [None if cid in unknown else Consent.from_reply(a)
                        for (cid, _), a in zip(chunk, reply.answers, strict=True)]
        return answers

    def record_consent(self, contact_id: str, channel: str, status: str, source: str) -> Consent:
        """Record a consent decision (e.g. an unsubscribe link); answers like `consent` afterwards."""
        request = contacts_pb2.RecordConsentRequest(contact_id=contact_id, channel=channel, status=status,
                                                    source=source)
        reply = self._call(self.stub.RecordConsent, request, f"contact {contact_id}")
        return Consent.from_reply(reply)

    def segment_members(self, segment_id: str, page_size: int = 500) -> Iterator[dict[str, Any]]:
        """Stream a segment's members (campaigns); the stream's deadline grows with its size."""
        request = contacts_pb2.ListSegmentMembersRequest(segment_id=segment_id, page_size=page_size)
        try:
            for member in self.stub.ListSegmentMembers(request, timeout=max(self.deadline, 300)):
                yield MessageToDict(member, preserving_proto_field_name=True,
                                    always_print_fields_with_no_presence=True)
        except grpc.RpcError as exc:
            raise _translate(exc, f"segment {segment_id}") from None

    def close(self) -> None:
        self.channel.close()

    def _call(self, method: Callable[..., Any], request: Any, what: str) -> Any:
        try:
            return rpc.call(method, request, timeout=self.deadline)
        except grpc.RpcError as exc:
            raise _translate(exc, what) from None


def _translate(exc: grpc.RpcError, what: str) -> Exception:
    code = exc.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"no {what}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return NotFound(f"no {what}: {exc.details()}")
    return Unavailable(f"the contacts service is unavailable ({code.name.lower()}); try again shortly")


def _contact(message: Any) -> dict[str, Any]:
    data = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return {key: (value if value != "" else None) for key, value in data.items()}


class LocalContacts:
    """A projection of the contacts topic: who each contact is, kept in the service's own database.

    Per batch of contact events it fetches the current state of the contacts involved
    with one `BatchGetContacts` call (personal fields are encrypted on the topic) and
    upserts them. `ContactErased` scrubs the copy without asking anyone; `ContactMerged`
    marks the copy merged and tells the service (`on_merged`) so it can re-point its own
    records to the survivor. Applying a batch twice changes nothing.

    Documents: `_id` = contact id, `version` (last contact stream version seen), the
    contact's fields (first_name, last_name, email, phone, company_id, lifecycle_stage,
    tags, locale, time_zone, owner), `status` (active | merged | erased), `merged_into`.
    """

    topics = (CONTACTS_TOPIC,)

    def __init__(
        self,
        name: str,
        collection: Collection,
        directory: ContactDirectory,
        on_merged: Callable[[str, str], None] | None = None,
        on_erased: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.collection = collection
        self.directory = directory
        self.on_merged = on_merged
        self.on_erased = on_erased

    def ensure_indexes(self) -> None:
        self.collection.create_index([("status", ASCENDING)])

    def handle(self, events: Sequence[RecordedEvent]) -> None:
        contact_events = [e for e in events if e.service == "contacts" and e.aggregate_type == "contact"]
        if not contact_events:
            return
        seen = {doc["_id"]: doc.get("version", 0)
                for doc in self.collection.find({"_id": {"$in": list({e.stream_id for e in contact_events})}},
                                                {"version": 1})}
        fresh = [e for e in contact_events if e.version > seen.get(e.stream_id, 0)]
        latest = {e.stream_id: e for e in fresh}  # the last event per contact decides the version
        erased = {e.stream_id for e in fresh if e.type == "ContactErased"}
        merged = {e.stream_id: e.data["survivor_id"] for e in fresh if e.type == "ContactMerged"}
        refresh = [cid for cid in latest if cid not in erased and cid not in merged]
        current = self.directory.many(refresh) if refresh else {}
        writes = [self._erased(cid, latest[cid]) for cid in erased]
        writes += [self._merged(cid, survivor, latest[cid]) for cid, survivor in merged.items() if cid not in erased]
        writes += [self._refreshed(cid, current[cid], latest[cid]) for cid in refresh if cid in current]
        if writes:
            self.collection.bulk_write(writes, ordered=False)
        for cid, survivor in merged.items():
            if self.on_merged is not None:
                self.on_merged(cid, survivor)
        for cid in erased:
            if self.on_erased is not None:
                self.on_erased(cid)

    def reset(self) -> None:
        self.collection.delete_many({})

    def find(self, contact_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Local copies by id (one query), following merges to the survivor's copy."""
        docs = {doc["_id"]: doc for doc in self.collection.find({"_id": {"$in": list(set(contact_ids))}})}
        survivors = {doc["merged_into"] for doc in docs.values() if doc.get("merged_into")}
        if survivors:
            docs.update({doc["_id"]: doc for doc in self.collection.find({"_id": {"$in": list(survivors)}})})
        return {cid: docs.get(docs[cid].get("merged_into") or cid, docs[cid]) for cid in contact_ids if cid in docs}

    def remember(self, contact: dict[str, Any]) -> None:
        """Keep a contact fetched over gRPC on a cache miss, so the next read is local."""
        self.remember_many([contact])

    def remember_many(self, contacts: Sequence[dict[str, Any]]) -> None:
        """Keep contacts fetched over gRPC (cache misses, segment members) in one bulk write.

        Only fills gaps: a copy the projection already holds is newer or as new.
        """
        if contacts:
            self.collection.bulk_write([
                UpdateOne({"_id": contact["id"]}, {"$setOnInsert": _fields(contact, int(contact.get("version") or 0))},
                          upsert=True) for contact in contacts], ordered=False)

    @staticmethod
    def _refreshed(contact_id: str, contact: dict[str, Any], event: RecordedEvent) -> UpdateOne:
        return UpdateOne({"_id": contact_id}, {"$set": _fields(contact, event.version)}, upsert=True)

    @staticmethod
    def _merged(contact_id: str, survivor_id: str, event: RecordedEvent) -> UpdateOne:
        return UpdateOne({"_id": contact_id}, {"$set": {"status": "merged", "merged_into": survivor_id,
                                                        "version": event.version}}, upsert=True)

    @staticmethod
    def _erased(contact_id: str, event: RecordedEvent) -> UpdateOne:
        scrubbed = {name: None for name in PERSONAL}
        return UpdateOne({"_id": contact_id}, {"$set": {**scrubbed, "status": "erased", "version": event.version,
                                                        "erased_at": utcnow()}}, upsert=True)


PERSONAL = ("first_name", "last_name", "email", "phone")
KEPT = (*PERSONAL, "company_id", "lifecycle_stage", "tags", "locale", "time_zone", "owner", "status")


def _fields(contact: dict[str, Any], version: int) -> dict[str, Any]:
    return {**{name: contact.get(name) for name in KEPT}, "status": contact.get("status") or "active",
            "version": version, "merged_into": None}
