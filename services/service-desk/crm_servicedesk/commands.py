"""The service desk's use cases: open and work tickets, define policies, sweep for breaches.

Called by the REST and gRPC edges and by the worker. `TicketUseCases` knows the event
store (the `crmkit.store.Store` contract), the read side it queries (`views.DeskViews`)
and the contacts directory client; never Flask, gRPC or a collection, so the use-case
tests run it on `crmkit.memstore.InMemoryEventStore` and in-memory views, no server.
`TicketDesk` is the same use cases wired to a process's `Runtime` (MongoDB), with what
only the service's processes do: indexes, the sweep record, the erasure's key shredding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pymongo.errors import PyMongoError

from crm_servicedesk.domain import ACTIVE, SlaPolicy, Ticket, choose_policy
from crm_servicedesk.views import DeskViews, MongoDeskViews
from crmkit import clock
from crmkit.aggregate import changes_by_event
from crmkit.directory import ContactDirectory
from crmkit.erasure import Shred, nothing_to_shred, shredder
from crmkit.errors import NotFound, ValidationFailed
from crmkit.events import Metadata, RecordedEvent, epoch_ms, new_id
from crmkit.repository import Repository
from crmkit.runtime import Runtime
from crmkit.store import Store

log = logging.getLogger(__name__)

SWEEP_BATCH = 500
SYSTEM = Metadata(actor="system:sla-sweep")


class TicketUseCases:
    """The desk's use cases on any event store and any `DeskViews`.

    `publish` is handed what each save stored (the runtime's outbox sender; a list's
    `extend` in tests); `shred(subjects, response_paths)` (crmkit.erasure) forgets what an erasure leaves readable
    outside the events (data keys, stored responses)."""

    def __init__(
        self,
        store: Store,
        views: DeskViews,
        publish: Callable[[list[RecordedEvent]], None],
        directory: ContactDirectory | None = None,
        shred: Shred = nothing_to_shred,
    ) -> None:
        self.store = store
        self.views = views
        self.shred = shred
        self.tickets: Repository[Ticket] = Repository(store, Ticket, publish)
        self.policies: Repository[SlaPolicy] = Repository(store, SlaPolicy, publish)
        self._directory = directory

    @property
    def directory(self) -> ContactDirectory:
        if self._directory is None:
            self._directory = ContactDirectory()
        return self._directory

    # --- tickets --------------------------------------------------------------------

    def open_ticket(self, fields: dict[str, Any], meta: Metadata, ticket_id: str | None = None) -> Ticket:
        """Open a ticket for an existing contact (asked over gRPC: unknown → 422, contacts down → 503);
        `ticket_id` fixed by the caller (inbound mail and SMS) makes a second save a ConcurrencyError."""
        try:
            contact = self.directory.get(fields["contact_id"])
        except NotFound:
            raise ValidationFailed(
                "unknown contact", {"contact_id": [f"no contact with id {fields['contact_id']}"]}
            ) from None
        if contact.get("status") == "erased":
            raise ValidationFailed("erased contact", {"contact_id": ["this contact has been erased"]})
        self.views.remember_contact(contact)
        fields = {**fields, "contact_id": contact["id"]}  # a merged id leads to the survivor
        priority = fields.get("priority") or "normal"
        tier = self.views.tier(contact["id"])
        now = clock.now()
        policies = self.policy_aggregates()
        chosen = choose_policy([policy.in_force(now) for policy in policies.values()], priority, tier)
        timeline = policies[chosen["id"]].timeline_from(now) if chosen else []
        ticket = Ticket.open(ticket_id or new_id(), fields, timeline, tier, now)
        self.tickets.save(ticket, meta)
        return ticket

    def ticket(self, ticket_id: str) -> Ticket:
        return self.tickets.get(ticket_id)

    def ticket_view(self, ticket: Ticket) -> dict[str, Any]:
        return self._with_contacts([ticket.view(clock.now())])[0]

    def comment(self, ticket_id: str, body: dict[str, Any], meta: Metadata, if_match: int | None) -> Ticket:
        author = meta.actor.removeprefix("user:")
        return self.tickets.change(
            ticket_id,
            lambda t: t.comment(
                body["body"], body["public"], body["author_type"], body.get("author") or author, clock.now()
            ),
            meta,
            if_match,
        )

    def assign(self, ticket_id: str, body: dict[str, Any], meta: Metadata, if_match: int | None) -> Ticket:
        return self.tickets.change(
            ticket_id, lambda t: t.assign(body.get("assignee"), body.get("group"), clock.now()), meta, if_match
        )

    def change_status(self, ticket_id: str, status: str, meta: Metadata, if_match: int | None) -> Ticket:
        return self.tickets.change(ticket_id, lambda t: t.change_status(status, clock.now()), meta, if_match)

    def rate(self, ticket_id: str, rating: dict[str, Any], meta: Metadata, if_match: int | None) -> Ticket:
        return self.tickets.change(ticket_id, lambda t: t.rate(rating, clock.now()), meta, if_match)

    def history(self, ticket_id: str) -> list[dict[str, Any]]:
        return changes_by_event(Ticket, ticket_id, self.tickets.history(ticket_id))

    def list_tickets(self, filters: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        docs, cursor = self.views.ticket_page(filters, filters["limit"], filters.get("cursor"))
        now = clock.now()
        tickets = [Ticket.restore({**doc, "id": doc["_id"]}) for doc in docs]
        return self._with_contacts([ticket.view(now) for ticket in tickets]), cursor

    def _with_contacts(self, views: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add `contact` (name and current tier) from the local projections; no remote call."""
        ids = [view["contact_id"] for view in views]
        known = self.views.contacts(ids)
        tiers = self.views.tiers(ids)
        for view in views:
            doc = known.get(view["contact_id"]) or {}
            name = " ".join(part for part in (doc.get("first_name"), doc.get("last_name")) if part) or None
            view["contact"] = {
                "id": view["contact_id"],
                "name": name,
                "status": doc.get("status"),
                "tier": tiers.get(view["contact_id"]),
            }
        return views

    # --- SLA policies -----------------------------------------------------------------

    def define_policy(self, fields: dict[str, Any], meta: Metadata) -> SlaPolicy:
        policy = SlaPolicy.define(new_id(), fields)
        self.policies.save(policy, meta)
        return policy

    def policy(self, policy_id: str) -> SlaPolicy:
        return self.policies.get(policy_id)

    def revise_policy(
        self,
        policy_id: str,
        changes: dict[str, Any],
        extra_holidays: Sequence[str],
        effective_at: datetime,
        meta: Metadata,
        if_match: int | None,
    ) -> SlaPolicy:
        """A new version of the policy from `effective_at` on; the worker's recompute then moves the clocks."""
        return self.policies.change(
            policy_id, lambda policy: policy.revise(changes, effective_at, extra_holidays), meta, if_match
        )

    def policy_aggregates(self) -> dict[str, SlaPolicy]:
        """Every policy by id, folded from the event store (policies are few; always current)."""
        return self.policies.get_many(self.views.policy_ids())

    def list_policies(self, filters: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        docs, cursor = self.views.policy_page(filters["limit"], filters.get("cursor"))
        return [{"id": doc.pop("_id"), **doc} for doc in docs], cursor

    # --- the breach sweep ---------------------------------------------------------------

    def sweep(self, now: datetime | None = None, limit: int = SWEEP_BATCH) -> dict[str, int]:
        """Record SlaBreached (and escalations) for tickets whose next due time has passed.

        Candidates come from the read model (`next_due_ms`); a batch of them is loaded
        from the event store in one go, decided per ticket and appended with the expected
        versions in one bulk write, so a breach is recorded once however many sweeps or
        workers race (the loser reloads and finds it already breached). Returns counts.
        """
        now = now or clock.now()
        now_ms = epoch_ms(now)
        found = breaches = 0
        seen: set[str] = set()
        while True:
            ids = self.views.due_tickets(now_ms, limit, seen)
            if not ids:
                break
            seen.update(ids)
            found += len(ids)
            decided = self.tickets.change_many(
                ids, lambda ticket: ticket.detect_breaches(now) if ticket.status in ACTIVE else [], SYSTEM
            )
            breaches += sum(len(keys) for keys in decided.values())
            if len(ids) < limit:
                break
        return {"due": found, "breaches": breaches}

    # --- reactions to the contacts service ----------------------------------------------------

    def _tickets_of(self, contact_id: str) -> list[str]:
        found = self.store.streams_referring([contact_id], [Ticket.aggregate_type])
        return sorted(stream for stream, _ in found)

    def erase_contact(self, contact_id: str) -> int:
        """The contact was erased: scrub their words from every ticket they were on, forget the keys.

        `TicketCustomerDataErased` makes the read model drop the text now; deleting the
        ticket's data key (crypto-shredding keys by stream, i.e. by ticket) leaves every
        stored and published copy of the sealed fields (subject, description, the
        customer's comments, the rating comment) unreadable, in replays too. Safe to repeat.
        """
        ticket_ids = self._tickets_of(contact_id)
        now = clock.now()
        self.tickets.change_many(
            ticket_ids,
            lambda ticket: ticket.erase_customer_data(contact_id, now),
            Metadata(actor="system:contact-erasure"),
        )
        self.shred(ticket_ids, [f"/v1/tickets/{tid}" for tid in ticket_ids])
        return len(ticket_ids)

    def repoint_contact(self, duplicate_id: str, survivor_id: str, merge_id: str | None = None) -> int:
        """Two contacts were merged: the duplicate's tickets now belong to the survivor. Each move
        names the merge (`merge_id`, and the envelope's causation id) so an unmerge finds it."""
        now = clock.now()

        def decide(ticket: Ticket) -> bool:
            if ticket.contact_id == duplicate_id:
                ticket.repoint(survivor_id, now, merge_id)
            return ticket.contact_id == survivor_id

        moved = self.tickets.change_many(
            self._tickets_of(duplicate_id), decide, Metadata(actor="system:contact-merge", causation_id=merge_id)
        )
        return sum(moved.values())

    def contact_unmerged(self, duplicate_id: str, survivor_id: str, merge_id: str | None) -> int:
        """A merge was reversed: the tickets that merge moved to the survivor, and nobody moved
        since, belong to the duplicate again (found in the store by the duplicate's id: they were
        its tickets). Safe to repeat; returns how many moved back."""
        now = clock.now()
        moved = self.tickets.change_many(
            self._tickets_of(duplicate_id),
            lambda ticket: ticket.move_back(duplicate_id, survivor_id, merge_id, now),
            Metadata(actor="system:contact-unmerge", causation_id=merge_id),
        )
        return sum(moved.values())

    # --- summaries ------------------------------------------------------------------------

    def support_summary(self, contact_ids: Sequence[str]) -> dict[str, Any]:
        docs = self.views.tickets_of_contacts(contact_ids)
        rated = [d for d in docs if d.get("rated_ms")]
        last = max(rated, key=lambda d: d["rated_ms"]) if rated else None
        return {
            "open_tickets": sum(1 for d in docs if d["status"] in ACTIVE),
            "total_tickets": len(docs),
            "complaints": sum(1 for d in docs if d.get("type") == "complaint"),
            "sla_breaches": sum(d.get("breach_count") or 0 for d in docs),
            "last_satisfaction": None
            if last is None
            else {
                "ticket_id": last["_id"],
                "csat": last.get("csat"),
                "nps": last.get("nps"),
                "rated_at": last["rated_at"],
            },
        }


class TicketDesk(TicketUseCases):
    """The use cases on a process's runtime: MongoDB's event store and read models (`MongoDeskViews`).

    Keeps the read models' handles (`tickets_view`, `tiers`, `contacts`)
    for the reports, the reactions, the gRPC edge and the tests, which use them directly (the
    SERVQUAL pass and the recompute read through `mongo_views`, see views.py)."""

    def __init__(self, runtime: Runtime, directory: ContactDirectory | None = None) -> None:
        self.runtime = runtime
        self._directory = directory
        self.mongo_views = MongoDeskViews(runtime.db, self.directory)
        super().__init__(
            runtime.store, self.mongo_views, runtime.publish, self._directory, shredder(runtime.vault, runtime.db)
        )
        self.vault = runtime.vault
        self.tickets_view = self.mongo_views.tickets
        self.tiers = self.mongo_views.customer_tiers
        self.contacts = self.mongo_views.local_contacts
        self.sweeps = runtime.db["sla_sweeps"]

    def ensure_indexes(self) -> None:
        # own event store: `refs` finds a contact's tickets (erasure, merges); the policies without a projection
        self.runtime.store.ensure_indexes()
        self.mongo_views.ensure_indexes()

    def record_sweep(self, outcome: dict[str, int], seconds: float) -> None:
        try:
            self.sweeps.update_one(
                {"_id": "worker"},
                {
                    "$inc": {"sweeps": 1, "breaches": outcome["breaches"]},
                    "$set": {"at_ms": epoch_ms(clock.now()), "due": outcome["due"], "seconds": seconds},
                },
                upsert=True,
            )
        except PyMongoError:
            log.warning("could not record the sweep")
