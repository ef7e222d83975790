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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict
from pymongo import ASCENDING, UpdateOne
from pymongo.collection import Collection

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crmkit import metrics, rpc
from crmkit.config import grpc_target, topic_of
from crmkit.errors import NotFound, Unavailable
from crmkit.events import RecordedEvent, utcnow

log = logging.getLogger(__name__)

BATCH = 500  # ids per BatchGetContacts call (the server takes up to 1000)


@dataclass(frozen=True)
class Consent:
    contact_id: str  # the survivor's id when the asked one was merged
    granted: bool
    reason: str
    address: str | None
    # the recorded decision the answer rests on (None when there is none): what a sender keeps as proof
    status: str | None = None  # granted | withdrawn
    legal_basis: str | None = None
    source: str | None = None
    decided_at: str | None = None  # RFC 3339: when the person gave or withdrew it
    event_id: str | None = None  # the contact's ContactConsentChanged event
    event_version: int | None = None  # ...and its version in the contact's stream

    @classmethod
    def from_reply(cls, reply: Any) -> Consent:
        """From a contacts_pb2 consent answer (an empty string or 0 means none)."""
        return cls(
            reply.contact_id,
            reply.granted,
            reply.reason,
            reply.address or None,
            reply.consent_status or None,
            reply.legal_basis or None,
            reply.source or None,
            reply.decided_at or None,
            reply.consent_event_id or None,
            reply.consent_version or None,
        )


class ContactDirectory:
    """A client of crm.contacts.v1.ContactDirectory: deadlines always, retries only when safe."""

    def __init__(self, target: str | None = None, deadline: float = rpc.DEFAULT_DEADLINE) -> None:
        self.channel = rpc.channel(target or grpc_target("contacts", 50051), audience="contacts")
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
            request = contacts_pb2.BatchGetContactsRequest(contact_ids=unique[start : start + BATCH])
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
            chunk = checks[start : start + BATCH]
            request = contacts_pb2.BatchCheckConsentRequest(
                checks=[contacts_pb2.CheckConsentRequest(contact_id=cid, channel=channel) for cid, channel in chunk]
            )
            reply = self._call(self.stub.BatchCheckConsent, request, "contacts")
            unknown = set(reply.not_found)
            answers += [
                None if cid in unknown else Consent.from_reply(a)
                for (cid, _), a in zip(chunk, reply.answers, strict=True)
            ]
        return answers

    def record_consent(self, contact_id: str, channel: str, status: str, source: str) -> Consent:
        """Record a consent decision (e.g. an unsubscribe link); answers like `consent` afterwards."""
        request = contacts_pb2.RecordConsentRequest(
            contact_id=contact_id, channel=channel, status=status, source=source
        )
        reply = self._call(self.stub.RecordConsent, request, f"contact {contact_id}")
        return Consent.from_reply(reply)

    def find(self, *, email: str | None = None, phone: str | None = None) -> list[dict[str, Any]]:
        """The active contacts with this email or phone (contacts normalises both), most recently updated
        first; [] when none, or when what was given is not an address."""
        request = contacts_pb2.FindContactsRequest(email=email or "", phone=phone or "")
        try:
            reply = self._call(self.stub.FindContacts, request, "contacts")
        except NotFound:  # INVALID_ARGUMENT: not an address, so nobody has it
            return []
        return [_contact(message) for message in reply.contacts]

    def create(self, request_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create a contact (first_name, last_name, email, phone, tags, attributes, locale); the same
        `request_id` again answers the contact the first call created. Needs contacts:write."""
        attributes = struct_pb2.Struct()
        attributes.update(dict(fields.get("attributes") or {}))
        request = contacts_pb2.CreateContactRequest(
            request_id=request_id,
            tags=list(fields.get("tags") or []),
            attributes=attributes,
            **{name: fields.get(name) or "" for name in ("first_name", "last_name", "email", "phone", "locale")},
        )
        return _contact(self._call(self.stub.CreateContact, request, "contact"))

    def segment_members(self, segment_id: str, page_size: int = 500) -> Iterator[dict[str, Any]]:
        """Stream a segment's members (campaigns); the stream's deadline grows with its size."""
        request = contacts_pb2.ListSegmentMembersRequest(segment_id=segment_id, page_size=page_size)
        try:
            for member in self.stub.ListSegmentMembers(request, timeout=max(self.deadline, 300)):
                yield MessageToDict(member, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
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


class ReactionsFailed(Exception):
    """Some contacts' reactions (erasure, merge) failed. Their local copies were left as
    they were, so the same events delivered again run those reactions again; the other
    contacts of the batch were applied."""

    def __init__(self, failures: Mapping[str, Exception]) -> None:
        super().__init__(
            f"the reactions to {len(failures)} contact(s) failed: "
            + ", ".join(f"{cid} ({type(exc).__name__})" for cid, exc in failures.items())
        )
        self.failures = dict(failures)


@dataclass(frozen=True)
class _Move:
    """A merge or an unmerge of the contact the copy has not reacted to yet."""

    kind: str  # "merged" | "unmerged"
    survivor_id: str
    merge_event_id: str | None  # the ContactMerged event (what the service's records name as their cause)
    event_id: str  # this event's id, noted on the copy once reacted to


@dataclass(frozen=True)
class _Plan:
    """What one contact's events in a batch ask of its local copy."""

    contact_id: str
    version: int  # the newest version of the contact in the batch
    erased: bool  # an erasure the copy has not reacted to yet (late or not)
    moves: tuple[_Move, ...]  # merges and unmerges the copy has not reacted to yet, oldest first
    merged_into: str | bool | None  # where the batch's last merge/unmerge leaves it (False: none in the batch)
    was_erased: bool  # the copy was erased by an earlier batch: erasure is final
    refresh: bool  # nothing to react to, and newer than the copy: fetch the current state

    @property
    def reacts(self) -> bool:
        return self.erased or bool(self.moves)


class LocalContacts:
    """A projection of the contacts topic: who each contact is, kept in the service's own database.

    Per batch of contact events it fetches the current state of the contacts involved
    with one `BatchGetContacts` call (personal fields are encrypted on the topic) and
    upserts them. `ContactErased` scrubs the copy without asking anyone; `ContactMerged`
    marks the copy merged, `ContactUnmerged` active again. The service reacts through
    `on_merged(duplicate, survivor, merge event id)` (re-point its own records to the
    survivor, naming that merge as their cause), `on_unmerged(duplicate, survivor, merge
    event id)` (move back exactly the records that merge moved and nobody moved since) and
    `on_erased` (forget what it holds about the person).

    Reactions are at least once: a copy records an erasure or a merge (and the version
    it has seen) only after the hook succeeded, so a failed hook runs again when the
    event is delivered again; one contact's failure does not hold up the others of its
    batch (`ReactionsFailed` names the failed ones afterwards). An erasure or merge is
    acted on whenever the copy has not recorded it, even when it arrives after a newer
    version of the contact. The hooks must therefore be idempotent; applying a batch
    twice, or its events one by one, changes nothing more.

    Documents: `_id` = contact id, `version` (last contact stream version seen), the
    contact's fields (first_name, last_name, email, phone, company_id, lifecycle_stage,
    tags, locale, time_zone, owner), `status` (active | merged | erased), `merged_into`,
    `erased_at` (set once the erasure was reacted to), `moves_seen` (ids of the merge and
    unmerge events reacted to).
    """

    topics: tuple[str, ...]  # the contacts topic (topic_of), asked when the projection is built

    def __init__(
        self,
        name: str,
        collection: Collection[dict[str, Any]],
        directory: ContactDirectory,
        on_merged: Callable[[str, str, str | None], None] | None = None,
        on_erased: Callable[[str], None] | None = None,
        *,
        service: str,
        on_unmerged: Callable[[str, str, str | None], None] | None = None,
    ) -> None:
        self.name = name
        self.topics = (topic_of("contacts"),)
        self.collection = collection
        self.directory = directory
        self.on_merged = on_merged
        self.on_unmerged = on_unmerged
        self.on_erased = on_erased
        self.service = service  # whose reactions these are (metrics)

    def ensure_indexes(self) -> None:
        self.collection.create_index([("status", ASCENDING)])

    def handle(self, events: Sequence[RecordedEvent]) -> None:
        by_contact: dict[str, list[RecordedEvent]] = {}
        for event in sorted(events, key=lambda e: e.version):
            if event.service == "contacts" and event.aggregate_type == "contact":
                by_contact.setdefault(event.stream_id, []).append(event)
        if not by_contact:
            return
        copies = {
            doc["_id"]: doc
            for doc in self.collection.find(
                {"_id": {"$in": list(by_contact)}}, {"version": 1, "merged_into": 1, "erased_at": 1, "moves_seen": 1}
            )
        }
        plans = [_plan(cid, its_events, copies.get(cid, {})) for cid, its_events in by_contact.items()]
        failures = self._react([plan for plan in plans if plan.reacts])
        self._refresh({plan.contact_id: plan.version for plan in plans if plan.refresh})
        if failures:
            raise ReactionsFailed(failures)

    def _refresh(self, versions: Mapping[str, int]) -> None:
        """Copy the contacts' current state from the directory (one call), at the version seen."""
        current = self.directory.many(list(versions)) if versions else {}
        if current:
            self.collection.bulk_write(
                [self._refreshed(cid, contact, versions[cid]) for cid, contact in current.items()], ordered=False
            )

    def _react(self, plans: Sequence[_Plan]) -> dict[str, Exception]:
        """Run each contact's hooks on its own, then record in one write the reactions that
        succeeded; returns the failures by contact id."""
        failures: dict[str, Exception] = {}
        done = []
        for plan in plans:
            try:
                for move in plan.moves:
                    hook = self.on_merged if move.kind == "merged" else self.on_unmerged
                    if hook is not None:
                        self._hook(move.kind, hook, plan.contact_id, move.survivor_id, move.merge_event_id)
                if plan.erased and self.on_erased is not None:
                    self._hook("erased", self.on_erased, plan.contact_id)
            except Exception as exc:  # this contact is tried again when its event comes back; the others go on
                failures[plan.contact_id] = exc
                continue
            done.append(self._reacted(plan))
        if done:
            self.collection.bulk_write(done, ordered=False)
        return failures

    def _hook(self, kind: str, hook: Callable[..., None], contact_id: str, *args: str | None) -> None:
        try:
            hook(contact_id, *args)
        except Exception:
            metrics.REACTION_FAILURES.labels(self.service, kind).inc()
            log.exception(
                "a reaction to a contact failed; it runs again when the event is delivered again",
                extra={"subject": contact_id, "reason": kind, "projection": self.name},
            )
            raise

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
            self.collection.bulk_write(
                [
                    UpdateOne(
                        {"_id": contact["id"]},
                        {"$setOnInsert": _fields(contact, int(contact.get("version") or 0))},
                        upsert=True,
                    )
                    for contact in contacts
                ],
                ordered=False,
            )

    @staticmethod
    def _refreshed(contact_id: str, contact: dict[str, Any], version: int) -> UpdateOne:
        return UpdateOne({"_id": contact_id}, {"$set": _fields(contact, version)}, upsert=True)

    @staticmethod
    def _reacted(plan: _Plan) -> UpdateOne:
        """The copy after its reactions: merged into the survivor and/or scrubbed; an erasure
        is final, so a merge seen after it leaves the copy erased. The version only grows."""
        changes: dict[str, Any] = {}
        if plan.merged_into is not False:
            changes |= {"status": "merged" if plan.merged_into else "active", "merged_into": plan.merged_into}
        if plan.erased:
            changes |= {**{name: None for name in PERSONAL}, "erased_at": utcnow()}
        if plan.erased or plan.was_erased:
            changes["status"] = "erased"
        update: dict[str, Any] = {"$set": changes, "$max": {"version": plan.version}}
        if plan.moves:
            update["$addToSet"] = {"moves_seen": {"$each": [move.event_id for move in plan.moves]}}
        return UpdateOne({"_id": plan.contact_id}, update, upsert=True)


def _plan(contact_id: str, events: Sequence[RecordedEvent], copy: Mapping[str, Any]) -> _Plan:
    """What `events` (one contact's, oldest first) ask of its copy. An erasure, merge or unmerge
    the copy has not recorded is acted on even when it comes after a newer version (a late event)."""
    moves, merged_into = _moves(events, copy)
    erased = any(e.type == "ContactErased" for e in events) and not copy.get("erased_at")
    was_erased = bool(copy.get("erased_at"))
    newer = events[-1].version > copy.get("version", 0)
    return _Plan(
        contact_id,
        events[-1].version,
        erased,
        tuple(moves),
        merged_into,
        was_erased,
        refresh=newer and not (erased or moves or was_erased),
    )


def _moves(events: Sequence[RecordedEvent], copy: Mapping[str, Any]) -> tuple[list[_Move], str | bool | None]:
    """The merges and unmerges not reacted to yet, in order, and where the last one leaves the
    copy (False: the batch has none). A merge into the survivor the copy already names counts
    as done (copies from before `moves_seen`)."""
    seen = set(copy.get("moves_seen") or ())
    current: str | None = copy.get("merged_into")
    moves: list[_Move] = []
    merged_into: str | bool | None = False
    for event in events:
        if event.type == "ContactMerged":
            survivor = event.data["survivor_id"]
            if event.id not in seen and current != survivor:
                moves.append(_Move("merged", survivor, event.id, event.id))
            current = merged_into = survivor
        elif event.type == "ContactUnmerged":
            if event.id not in seen:
                moves.append(_Move("unmerged", event.data["survivor_id"], event.data.get("merge_event_id"), event.id))
            current = merged_into = None
    return moves, merged_into


PERSONAL = ("first_name", "last_name", "email", "phone")
KEPT = (*PERSONAL, "company_id", "lifecycle_stage", "tags", "locale", "time_zone", "owner", "status")


def _fields(contact: dict[str, Any], version: int) -> dict[str, Any]:
    return {
        **{name: contact.get(name) for name in KEPT},
        "status": contact.get("status") or "active",
        "version": version,
        "merged_into": None,
    }
