"""The contacts service's use cases: load aggregates, let them decide, save, and query.

This is the layer the REST and gRPC edges call. `ContactUseCases` knows the event store
(the `crmkit.store.Store` contract) and the read side it queries (`views.ContactViews`),
never Flask, gRPC or a collection, so the use-case tests run it on
`crmkit.memstore.InMemoryEventStore` and in-memory views, no server. `ContactBook` is the
same use cases wired to a process's `Runtime` (MongoDB), with what only the service's
processes do: the erasure's key shredding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from crm_contacts import settings
from crm_contacts.records import projections
from crm_contacts.records.domain import Company, Contact
from crm_contacts.records.views import STALE_SUMMARY, ContactViews, MongoContactViews
from crmkit import clock
from crmkit.aggregate import changes_by_event
from crmkit.erasure import Shred, nothing_to_shred, shredder
from crmkit.errors import NotFound, ValidationFailed
from crmkit.events import Metadata, RecordedEvent, new_id, rfc3339
from crmkit.repository import Repository
from crmkit.runtime import Runtime
from crmkit.store import Store

MAX_MERGE_HOPS = 10
MAX_MERGED_RECORDS = 1000
MAX_OWNERS = 1000  # owners are staff: more than this in one answer would be a data problem, not a report


class ContactUseCases:
    """The contact and company use cases on any event store and any `ContactViews`.

    `publish` is handed what each save stored (the runtime's outbox sender; a list's
    `extend` in tests); `shred(subjects, response_paths)` (crmkit.erasure) forgets what an erasure leaves
    readable outside the events (data keys, the stored responses at those paths)."""

    def __init__(
        self,
        store: Store,
        views: ContactViews,
        publish: Callable[[list[RecordedEvent]], None],
        shred: Shred = nothing_to_shred,
    ) -> None:
        self.views = views
        self.shred = shred
        self.contacts: Repository[Contact] = Repository(store, Contact, publish)
        self.companies: Repository[Company] = Repository(store, Company, publish)

    # --- contacts -------------------------------------------------------------------

    def create_contact(self, fields: dict[str, Any], meta: Metadata) -> Contact:
        self._require_company(fields.get("company_id"))
        contact = Contact.create(new_id(), fields)
        if fields.get("verified_at"):  # confirmed long ago: stale from the start (crm_contacts.records.freshness)
            contact.flag_stale(clock.now(), settings.current().stale.after(contact.lifecycle_stage))
        self.contacts.save(contact, meta)
        return contact

    def update_contact(self, contact_id: str, fields: dict[str, Any], meta: Metadata, if_match: int | None) -> Contact:
        if fields.get("company_id"):
            self._require_company(fields["company_id"])
        cause = {"kind": "manual", "by": meta.actor}
        return self.contacts.change(contact_id, lambda c: c.update(fields, stage_cause=cause), meta, if_match)

    def contact(self, contact_id: str, as_of: datetime | None = None, *, follow_merges: bool = True) -> Contact:
        """A contact as it is (or was at `as_of`); a merged id leads to the survivor."""
        contact = self.contacts.get(contact_id, as_of=as_of)
        if as_of is not None and contact.created_at and contact.created_at > as_of:
            raise NotFound(f"contact {contact_id} did not exist at {as_of.isoformat()}")
        for _ in range(MAX_MERGE_HOPS):
            if not follow_merges or contact.merged_into is None:
                return contact
            contact = self.contacts.get(contact.merged_into, as_of=as_of)
        return contact

    # --- consent --------------------------------------------------------------------

    def set_consent(
        self, contact_id: str, channel: str, consent: dict[str, Any], meta: Metadata, if_match: int | None
    ) -> Contact:
        consent = {**consent, "at": rfc3339(consent.get("at") or clock.now())}
        return self.contacts.change(contact_id, lambda c: c.set_consent(channel, consent), meta, if_match)

    def check_consent(self, contact_id: str, channel: str) -> dict[str, Any]:
        """May we contact this person on this channel right now, and at which address?"""
        return consent_answer(self.contact(contact_id), channel)

    def check_consents(self, checks: Sequence[tuple[str, str]]) -> list[dict[str, Any] | None]:
        """Many (contact id, channel) checks from one fold of the contacts (a send batch);
        None answers a contact that does not exist."""
        found = self.contacts_by_id([contact_id for contact_id, _ in checks])
        return [
            consent_answer(found[contact_id], channel) if contact_id in found else None
            for contact_id, channel in checks
        ]

    # --- de-duplication -------------------------------------------------------------

    def merge(self, survivor_id: str, duplicate_id: str, meta: Metadata, if_match: int | None) -> Contact:
        """Fold the duplicate into the survivor, then mark the duplicate merged.

        Two streams, two appends (no transaction): the survivor first. If the process
        dies in between, repeating the merge completes it — absorbing is idempotent.
        """
        if survivor_id == duplicate_id:
            raise ValidationFailed("cannot merge a contact into itself", {"duplicate_id": ["is the survivor itself"]})
        try:
            duplicate = self.contacts.get(duplicate_id)
        except NotFound:
            raise ValidationFailed(
                "unknown duplicate", {"duplicate_id": [f"no contact with id {duplicate_id}"]}
            ) from None
        survivor = self.contacts.change(survivor_id, lambda s: s.absorb(duplicate), meta, if_match)
        self.contacts.change(duplicate_id, lambda d: d.mark_merged(survivor_id), meta)
        return survivor

    def unmerge(self, survivor_id: str, duplicate_id: str, meta: Metadata, if_match: int | None) -> Contact:
        """Reverse a merge: the survivor gives back what it only absorbed, then the duplicate
        stands on its own again (`ContactUnmerged`, which the other services follow to move
        back exactly the records that merge moved).

        Two appends, survivor first, as in `merge`: a repeat completes a half-done unmerge
        and otherwise records nothing. A duplicate erased since cannot come back (409).
        """
        if survivor_id == duplicate_id:
            raise ValidationFailed("a contact is not merged into itself", {"duplicate_id": ["is the survivor itself"]})
        try:
            duplicate = self.contacts.get(duplicate_id)
        except NotFound:
            raise ValidationFailed(
                "unknown duplicate", {"duplicate_id": [f"no contact with id {duplicate_id}"]}
            ) from None
        self.contacts.get(survivor_id)  # 404 for an unknown survivor, before anything else is said
        duplicate.may_unmerge(survivor_id)  # refuses (409, 422) before the survivor changes
        merge_event_id = duplicate.merge_event_id
        survivor = self.contacts.change(survivor_id, lambda s: s.release(duplicate_id, merge_event_id), meta, if_match)
        self.contacts.change(duplicate_id, lambda d: d.unmerge(survivor_id), meta)
        return survivor

    def duplicates(self, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """Candidate pairs: same email, same phone, or same folded name at the same company."""
        return self.views.duplicate_pairs(limit, cursor)

    # --- erasure and portability -------------------------------------------------------

    def erase(self, contact_id: str, reason: str, meta: Metadata, if_match: int | None = None) -> Contact:
        """Erase the person: their record and every record merged into it.

        Each stream gets `ContactErased` (so read models and other services scrub their
        copies), then its data key is deleted, which leaves every stored and published
        event about the person unreadable. Safe to repeat.
        """
        person = self.contact(contact_id)
        records = [person.id, *self._merged_into(person)]
        # If-Match is the person's version: the records merged into them are not the one the client saw
        erased = [
            self.contacts.change(record_id, lambda c: c.erase(reason), meta, if_match if index == 0 else None)
            for index, record_id in enumerate(records)
        ]
        self.shred(records, [f"/v1/contacts/{record_id}" for record_id in records])
        return erased[0]

    def export(self, contact_id: str) -> dict[str, Any]:
        """Everything held about the person (data portability), including merged records."""
        contact = self.contact(contact_id)
        company = self.companies.get(contact.company_id).view() if contact.company_id else None
        return {
            "exported_at": clock.now(),
            "contact": contact.view(),
            "company": company,
            "history": self.contact_history(contact.id),
            "merged_records": [
                {"id": merged_id, "history": self.contact_history(merged_id)}
                for merged_id in self._merged_into(contact)
            ],
        }

    def _merged_into(self, contact: Contact) -> list[str]:
        """Ids of every record merged (directly or transitively) into `contact`."""
        found: list[str] = []
        frontier = list(contact.merged_from)
        while frontier and len(found) < MAX_MERGED_RECORDS:
            record_id = frontier.pop()
            if record_id not in found:
                found.append(record_id)
                frontier += self.contacts.get(record_id).merged_from
        return found

    def contacts_by_id(self, contact_ids: Sequence[str]) -> dict[str, Contact]:
        """Many contacts folded from one store query per merge hop; unknown ids are left out.

        A merged id maps to its survivor, so callers holding old ids still find the person.
        """
        found = self.contacts.get_many(contact_ids)
        for _ in range(MAX_MERGE_HOPS):
            pending = {cid: c.merged_into for cid, c in found.items() if c.merged_into}
            if not pending:
                break
            survivors = self.contacts.get_many(list(set(pending.values())))
            for cid, survivor_id in pending.items():
                if survivor_id in survivors:
                    found[cid] = survivors[survivor_id]
                else:
                    del found[cid]
        return found

    def contact_history(self, contact_id: str) -> list[dict[str, Any]]:
        return changes_by_event(Contact, contact_id, self.contacts.history(contact_id))

    def list_contacts(self, filters: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        docs, cursor = self.views.contact_page(filters, filters["limit"], filters.get("cursor"))
        return [projections.public(doc) for doc in docs], cursor

    def find_contacts(self, email: str | None, phone: str | None, limit: int) -> list[Contact]:
        """Active contacts with this email or this phone (as the schemas store them), the most
        recently updated first: who wrote in, for the service desk's find-or-create.

        The read model finds them; each is then folded from the store, so the answer is the
        contact as it is now (one the read model still lists but that is gone is left out)."""
        ids = self.views.active_ids_by_address(email, phone, limit)
        found = self.contacts_by_id(ids)
        return [found[contact_id] for contact_id in ids if contact_id in found]

    def stale_records(
        self, owner: str | None, lifecycle_stage: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """Stale active contacts (of this owner and stage when given): the count per owner, most
        first (then by name, no owner last), their total, and one page of summaries in id order
        (ids are UUIDv7: creation order)."""
        counts = self.views.stale_by_owner(owner, lifecycle_stage, MAX_OWNERS)
        owners = sorted(counts, key=lambda name: (-counts[name], name is None, name or ""))
        docs, next_cursor = self.views.stale_page(owner, lifecycle_stage, limit, cursor)
        return {
            "total": sum(counts.values()),
            "by_owner": [{"owner": name, "count": counts[name]} for name in owners],
            "items": [
                {name: doc.get(name) for name in ("id", *STALE_SUMMARY)} for doc in map(projections.public, docs)
            ],
            "next_cursor": next_cursor,
        }

    # --- companies ------------------------------------------------------------------

    def create_company(self, fields: dict[str, Any], meta: Metadata) -> Company:
        company = Company.create(new_id(), fields)
        self.companies.save(company, meta)
        return company

    def update_company(self, company_id: str, fields: dict[str, Any], meta: Metadata, if_match: int | None) -> Company:
        return self.companies.change(company_id, lambda c: c.update(fields), meta, if_match)

    def company(self, company_id: str, as_of: datetime | None = None) -> Company:
        """A company as it is (or was at `as_of`: NotFound before it existed)."""
        return self.companies.get(company_id, as_of=as_of)

    def company_history(self, company_id: str) -> list[dict[str, Any]]:
        return changes_by_event(Company, company_id, self.companies.history(company_id))

    def list_companies(self, filters: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        docs, cursor = self.views.company_page(filters, filters["limit"], filters.get("cursor"))
        return [projections.public(doc) for doc in docs], cursor

    def _require_company(self, company_id: str | None) -> None:
        if not company_id:
            return
        try:
            self.companies.get(company_id)
        except NotFound:
            raise ValidationFailed("unknown company", {"company_id": [f"no company with id {company_id}"]}) from None


class ContactBook(ContactUseCases):
    """The use cases on a process's runtime: MongoDB's event store and read models (`MongoContactViews`).

    Keeps the runtime's vault and database; no collection handle: the edges (REST, freshness,
    gRPC) read through the use cases and their `ContactViews`."""

    def __init__(self, runtime: Runtime) -> None:
        self.vault = runtime.vault
        self.db = runtime.db
        self.mongo_views = MongoContactViews(runtime.db)
        super().__init__(runtime.store, self.mongo_views, runtime.publish, shredder(runtime.vault, runtime.db))


def consent_answer(contact: Contact, channel: str) -> dict[str, Any]:
    """The consent rule: an erased person, a missing or withdrawn consent or a missing
    address each stop a send, and the answer says which."""
    consent = contact.consents.get(channel) or {}
    address = contact.email if channel == "email" else contact.phone
    if contact.status == "erased":
        reason = "contact_erased"
    elif consent.get("status") != "granted":
        reason = "consent_withdrawn" if consent else "no_consent_recorded"
    elif not address:
        reason = "no_address"
    else:
        reason = ""
    return {
        "contact_id": contact.id,
        "channel": channel,
        "granted": not reason,
        "reason": reason,
        "address": address if not reason else None,
        "consent": consent,
        "event": contact.consent_events.get(channel) if consent else None,
    }
