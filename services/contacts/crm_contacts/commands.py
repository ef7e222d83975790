"""The contacts service's use cases: load aggregates, let them decide, save, and query.

This is the layer the REST and gRPC edges call. It knows the repositories and read
models, never Flask or gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from crm_contacts import projections
from crm_contacts.domain import Company, Contact
from crmkit.aggregate import Repository, changes_by_event
from crmkit.errors import NotFound, ValidationFailed
from crmkit.events import Metadata, new_id
from crmkit.runtime import Runtime
from crmkit.web.pagination import page


class ContactBook:
    def __init__(self, runtime: Runtime) -> None:
        self.store = runtime.store
        self.contacts: Repository[Contact] = Repository(runtime.store, Contact, runtime.publish)
        self.companies: Repository[Company] = Repository(runtime.store, Company, runtime.publish)
        self.contacts_view = runtime.db["contacts"]
        self.companies_view = runtime.db["companies"]

    # --- contacts -------------------------------------------------------------------

    def create_contact(self, fields: dict[str, Any], meta: Metadata) -> Contact:
        self._require_company(fields.get("company_id"))
        contact = Contact.create(new_id(), fields)
        self.contacts.save(contact, meta)
        return contact

    def update_contact(self, contact_id: str, fields: dict[str, Any], meta: Metadata, if_match: int | None) -> Contact:
        if fields.get("company_id"):
            self._require_company(fields["company_id"])
        cause = f"manual:{meta.actor}"
        return self.contacts.change(contact_id, lambda c: c.update(fields, stage_cause=cause), meta, if_match)

    def contact(self, contact_id: str, as_of: datetime | None = None) -> Contact:
        contact = self.contacts.get(contact_id, as_of=as_of)
        if as_of is not None and contact.created_at and contact.created_at > as_of:
            raise NotFound(f"contact {contact_id} did not exist at {as_of.isoformat()}")
        return contact

    def contacts_by_id(self, contact_ids: Sequence[str]) -> dict[str, Contact]:
        """Many contacts folded from one store query; unknown ids are left out."""
        streams = self.store.load_many(contact_ids)
        return {
            stream_id: Contact.from_events(stream_id, events)
            for stream_id, events in streams.items()
            if events[0].aggregate_type == Contact.aggregate_type
        }

    def contact_history(self, contact_id: str) -> list[dict[str, Any]]:
        return changes_by_event(Contact, contact_id, self.contacts.history(contact_id))

    def list_contacts(self, filters: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        query: dict[str, Any] = projections.search_query(filters.get("q") or "")
        for name in ("lifecycle_stage", "company_id", "owner", "email", "phone"):
            if filters.get(name):
                query[name] = filters[name]
        if filters.get("tag"):
            # $in, not plain equality: nx-27017 misses array equality through an index (tests/compat)
            query["tags"] = {"$in": [filters["tag"]]}
        status = filters.get("status") or "active"
        if status != "all":
            query["status"] = status
        docs, cursor = page(self.contacts_view, query, filters["limit"], filters.get("cursor"))
        return [projections.public(doc) for doc in docs], cursor

    # --- companies ------------------------------------------------------------------

    def create_company(self, fields: dict[str, Any], meta: Metadata) -> Company:
        company = Company.create(new_id(), fields)
        self.companies.save(company, meta)
        return company

    def update_company(self, company_id: str, fields: dict[str, Any], meta: Metadata, if_match: int | None) -> Company:
        return self.companies.change(company_id, lambda c: c.update(fields), meta, if_match)

    def company(self, company_id: str) -> Company:
        return self.companies.get(company_id)

    def company_history(self, company_id: str) -> list[dict[str, Any]]:
        return changes_by_event(Company, company_id, self.companies.history(company_id))

    def list_companies(self, filters: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        query = projections.search_query(filters.get("q") or "")
        if filters.get("domain"):
            query["domain"] = filters["domain"]
        docs, cursor = page(self.companies_view, query, filters["limit"], filters.get("cursor"))
        return [projections.public(doc) for doc in docs], cursor

    def _require_company(self, company_id: str | None) -> None:
        if not company_id:
            return
        try:
            self.companies.get(company_id)
        except NotFound:
            raise ValidationFailed("unknown company", {"company_id": [f"no company with id {company_id}"]}) from None
