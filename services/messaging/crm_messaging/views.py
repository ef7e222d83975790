"""What messaging's use cases read from collections, and the work lists they add to, in one place.

`MessageUseCases` (commands.py) decides on aggregates loaded from the event store; two
other kinds of state sit in collections, and each is a protocol here so the use cases
run on any implementation: `MongoMessagingViews` (the service's MongoDB), or an
in-memory one in services/messaging/tests/test_use_cases.py beside
`crmkit.memstore.InMemoryEventStore`, no server.

- `MessagingViews`: the read models (pages of templates, messages, campaigns and triggers,
  a contact's messages, a campaign's counts by status, the consent report) and the local
  copy of contacts (what templates may use about a person).
- `WorkLists`: what the worker works through, written before the events they are about:
  the dispatcher's `schedule` (a message due, a campaign to expand) and the reactor's
  register of trigger ids. They are not records (the events are), so they stay
  collections, but the use cases only insert into them and ask them by id.

Every collection query of the use cases is here; the dispatcher's claims and leases on
the schedule are the worker's own (dispatcher.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, Protocol

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from crm_messaging import reports
from crmkit.directory import LocalContacts
from crmkit.web.pagination import page

Page = tuple[list[dict[str, Any]], str | None]
# the message list's filters that match a document key as given
MESSAGE_FILTERS = ("contact_id", "campaign_id", "status", "channel")
# what a message list leaves out of each document (internal keys)
MESSAGE_HIDDEN = ("queued_ms", "consent")


class MessagingViews(Protocol):
    """The reads of the use cases (and the contact copy's one write)."""

    def template_page(self, channel: str | None, limit: int, cursor: str | None) -> Page:
        """Templates in `_id` order (of a channel, if given), and the next cursor."""
        ...

    def message_page(self, filters: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        """Messages in `_id` order matching the MESSAGE_FILTERS given, without the MESSAGE_HIDDEN keys."""
        ...

    def campaign_page(self, status: str | None, limit: int, cursor: str | None) -> Page:
        """Campaigns in `_id` order (in a status, if given)."""
        ...

    def trigger_page(self, limit: int, cursor: str | None) -> Page:
        """Triggers in `_id` order."""
        ...

    def contact_messages(self, contact_id: str, limit: int, after: tuple[int, str] | None) -> list[dict[str, Any]]:
        """The contact's messages newest first (queued_ms, then id, both descending), just past `after`."""
        ...

    def message_ids_of(self, contact_id: str) -> set[str]:
        """The ids of the messages the read model holds for this contact."""
        ...

    def campaign_counts(self, campaign_id: str) -> dict[str, int]:
        """How many of the campaign's messages are in each status."""
        ...

    def consent_report(self, start: date, end: date) -> dict[str, Any]:
        """The consent proofs of sends and suppressions checked in these UTC days (reports.consent_proofs)."""
        ...

    def contacts(self, contact_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The local copies of these contacts; unknown ones left out."""
        ...

    def remember_contacts(self, contacts: Sequence[dict[str, Any]]) -> None:
        """Keep contacts the directory returned, so the next look is local."""
        ...


class WorkLists(Protocol):
    """The dispatcher's schedule and the trigger register, as the use cases use them."""

    def schedule_messages(self, entries: Sequence[dict[str, Any]]) -> None:
        """Add schedule entries (`_id` = message id); one that exists already (a repeat) stays as it is."""
        ...

    def schedule_campaign(self, campaign_id: str, due_ms: int) -> None:
        """The campaign is to be expanded at `due_ms`; scheduled already: nothing changes."""
        ...

    def scheduled_message_ids_of(self, contact_id: str) -> set[str]:
        """The ids of the contact's scheduled messages (those the read model may not hold yet)."""
        ...

    def sent_as(self, provider: str, provider_message_id: str) -> str | None:
        """The id of the message a provider accepted under this id, if any."""
        ...

    def register_trigger(self, trigger_id: str) -> None:
        """Note a trigger id (before its first event); noted already: nothing changes."""
        ...

    def trigger_ids(self) -> list[str]:
        """Every trigger id noted."""
        ...


class MongoMessagingViews:
    """`MessagingViews` and `WorkLists` on the service's MongoDB: the read models (`messages`,
    `templates`, `campaigns`, `triggers`), the local `contacts` copy, `schedule` and `trigger_ids`."""

    def __init__(self, db: Database[dict[str, Any]], contacts: LocalContacts) -> None:
        self.messages = db["messages"]
        self.templates = db["templates"]
        self.campaigns = db["campaigns"]
        self.triggers = db["triggers"]
        self.schedule = db["schedule"]
        self.trigger_register = db["trigger_ids"]
        self.local_contacts = contacts

    def ensure_indexes(self) -> None:
        self.schedule.create_index([("state", ASCENDING), ("due_ms", ASCENDING)])
        self.schedule.create_index([("contact_id", ASCENDING)])
        self.schedule.create_index([("campaign_id", ASCENDING), ("state", ASCENDING)])
        self.schedule.create_index([("provider_message_id", ASCENDING)])
        self.local_contacts.ensure_indexes()

    # --- MessagingViews -----------------------------------------------------------------

    def template_page(self, channel: str | None, limit: int, cursor: str | None) -> Page:
        return page(self.templates, {"channel": channel} if channel else {}, limit, cursor)

    def message_page(self, filters: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        query = {key: filters[key] for key in MESSAGE_FILTERS if filters.get(key)}
        return page(self.messages, query, limit, cursor, dict.fromkeys(MESSAGE_HIDDEN, 0))

    def campaign_page(self, status: str | None, limit: int, cursor: str | None) -> Page:
        return page(self.campaigns, {"status": status} if status else {}, limit, cursor)

    def trigger_page(self, limit: int, cursor: str | None) -> Page:
        return page(self.triggers, {}, limit, cursor)

    def contact_messages(self, contact_id: str, limit: int, after: tuple[int, str] | None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"contact_id": contact_id}
        if after is not None:
            queued_ms, last_id = after
            query = {
                "$and": [
                    query,
                    {"$or": [{"queued_ms": {"$lt": queued_ms}}, {"queued_ms": queued_ms, "_id": {"$lt": last_id}}]},
                ]
            }
        return list(self.messages.find(query).sort([("queued_ms", -1), ("_id", -1)]).limit(limit))

    def message_ids_of(self, contact_id: str) -> set[str]:
        return {doc["_id"] for doc in self.messages.find({"contact_id": contact_id}, {"_id": 1})}

    def campaign_counts(self, campaign_id: str) -> dict[str, int]:
        return {
            row["_id"]: row["n"]
            for row in self.messages.aggregate(
                [{"$match": {"campaign_id": campaign_id}}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}]
            )
        }

    def consent_report(self, start: date, end: date) -> dict[str, Any]:
        return reports.consent_proofs(self.messages, start, end)

    def contacts(self, contact_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self.local_contacts.find(contact_ids)

    def remember_contacts(self, contacts: Sequence[dict[str, Any]]) -> None:
        self.local_contacts.remember_many(list(contacts))

    # --- WorkLists ----------------------------------------------------------------------

    def schedule_messages(self, entries: Sequence[dict[str, Any]]) -> None:
        try:
            self.schedule.insert_many(list(entries), ordered=False)
        except BulkWriteError as exc:
            if any(error.get("code") != 11000 for error in exc.details.get("writeErrors", [])):
                raise

    def schedule_campaign(self, campaign_id: str, due_ms: int) -> None:
        with contextlib.suppress(DuplicateKeyError):
            self.schedule.insert_one(
                {
                    "_id": f"campaign:{campaign_id}",
                    "kind": "campaign",
                    "state": "pending",
                    "due_ms": due_ms,
                    "lease_ms": 0,
                    "campaign_id": campaign_id,
                }
            )

    def scheduled_message_ids_of(self, contact_id: str) -> set[str]:
        return {doc["_id"] for doc in self.schedule.find({"contact_id": contact_id, "kind": "message"}, {"_id": 1})}

    def sent_as(self, provider: str, provider_message_id: str) -> str | None:
        entry = self.schedule.find_one({"provider_message_id": provider_message_id, "provider": provider})
        return None if entry is None else str(entry["_id"])

    def register_trigger(self, trigger_id: str) -> None:
        with contextlib.suppress(DuplicateKeyError):
            self.trigger_register.insert_one({"_id": trigger_id})

    def trigger_ids(self) -> list[str]:
        return [doc["_id"] for doc in self.trigger_register.find({}, {"_id": 1})]
