"""Read models of the contacts service, and the queries that use them.

`contacts` and `companies` hold one document per aggregate (its API view plus search
terms), folded from events by the same domain code the write side uses, so a read
model can never disagree with the record about what an event means.
Lists and search read these; a single record by id is folded from the event store.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from crm_contacts import normalize
from crm_contacts.domain import Company, Contact
from crmkit.events import RecordedEvent
from crmkit.eventstore import EventStore
from crmkit.projector import StreamProjection


class ContactsView(StreamProjection):
    aggregate_types = ("contact",)

    def fold(self, document: dict[str, Any] | None, events: Sequence[RecordedEvent]) -> dict[str, Any]:
        contact = Contact.restore(_as_view(document)) if document else Contact(events[0].stream_id)
        for event in events:
            contact.apply(event.type, event.data)
            contact.version = event.version
            contact.created_at = contact.created_at or event.time
            contact.updated_at = event.time
        return contact_document(contact)

    def ensure_indexes(self) -> None:
        for keys in (["search"], ["email"], ["phone"], ["company_id"], ["lifecycle_stage"], ["tags"], ["owner"]):
            self.collection.create_index([(key, ASCENDING) for key in keys])


class CompaniesView(StreamProjection):
    aggregate_types = ("company",)

    def fold(self, document: dict[str, Any] | None, events: Sequence[RecordedEvent]) -> dict[str, Any]:
        company = Company.restore(_as_view(document)) if document else Company(events[0].stream_id)
        for event in events:
            company.apply(event.type, event.data)
            company.version = event.version
            company.created_at = company.created_at or event.time
            company.updated_at = event.time
        view = company.view()
        return {**view, "search": search_text(normalize.terms(view["name"], view["domain"]))}

    def ensure_indexes(self) -> None:
        for key in ("search", "domain"):
            self.collection.create_index([(key, ASCENDING)])


def contact_document(contact: Contact) -> dict[str, Any]:
    view = contact.view()
    extra = [view["email"]] if view["email"] else []
    if view["phone"]:
        extra += [view["phone"], view["phone"].lstrip("+")]
    words = normalize.terms(view["first_name"], view["last_name"], view["email"])
    return {**view, "search": search_text(words + extra)}


def search_text(terms: list[str]) -> str:
    """Terms joined into one string, each preceded by a space, so " word" finds a word start.

    One string rather than an array of terms: a regex over array elements is not
    supported by every MongoDB-protocol server (see tests/compat), a regex over a
    string is.
    """
    return "".join(f" {term}" for term in terms)


def _as_view(document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "id": document["_id"]}


def projections(db: Database, store: EventStore, topic: str) -> list[StreamProjection]:
    return [ContactsView("contacts", db["contacts"], store, topic),
            CompaniesView("companies", db["companies"], store, topic)]


def search_query(text: str) -> dict[str, Any]:
    """Every word of `text` must start a search term (so "ali rez" finds "Ali Rezaei")."""
    words = normalize.terms(text)
    if not words:
        return {}
    return {"$and": [{"search": {"$regex": " " + re.escape(word)}} for word in words]}


def public(document: dict[str, Any]) -> dict[str, Any]:
    """A read-model document as the API shows it."""
    view = {k: v for k, v in document.items() if k not in ("_id", "search")}
    return {"id": document["_id"], **view}
