"""The customer record: Contact and Company aggregates. Pure Python, no I/O.

Each aggregate's state is the fold of its events; commands check the rules against
that state and record events. Field values arrive already validated and normalised by
the API layer; the aggregates enforce what depends on state (a merged or erased
contact cannot change, a no-op update records nothing).
"""

from __future__ import annotations

from typing import Any

from crmkit.aggregate import Aggregate
from crmkit.errors import Conflict, ValidationFailed

LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketing_qualified_lead",
    "sales_qualified_lead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)

# Fields a person may set on a contact directly (lifecycle stage has its own event).
CONTACT_FIELDS = ("first_name", "last_name", "email", "phone", "company_id", "tags", "attributes", "owner")
COMPANY_FIELDS = ("name", "domain", "industry", "size", "phone", "website", "address", "tags", "attributes", "owner")


def _merge_attributes(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch for custom attributes: a null value removes the key."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class Contact(Aggregate):
    aggregate_type = "contact"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.first_name: str | None = None
        self.last_name: str | None = None
        self.email: str | None = None
        self.phone: str | None = None
        self.company_id: str | None = None
        self.lifecycle_stage: str = "lead"
        self.tags: list[str] = []
        self.attributes: dict[str, Any] = {}
        self.owner: str | None = None
        self.status = "active"

    # --- commands -------------------------------------------------------------------

    @classmethod
    def create(cls, contact_id: str, fields: dict[str, Any]) -> Contact:
        if not any(fields.get(name) for name in ("first_name", "last_name", "email", "phone")):
            raise ValidationFailed(
                "a contact needs a name, an email or a phone",
                {name: ["one of first_name, last_name, email, phone is required"]
                 for name in ("first_name", "last_name", "email", "phone")},
            )
        contact = cls(contact_id)
        data = {name: fields.get(name) for name in CONTACT_FIELDS}
        data["tags"] = sorted(set(fields.get("tags") or []))
        data["attributes"] = {k: v for k, v in (fields.get("attributes") or {}).items() if v is not None}
        data["lifecycle_stage"] = fields.get("lifecycle_stage") or "lead"
        contact.record("ContactCreated", {"contact_id": contact_id, **data})
        return contact

    def update(self, fields: dict[str, Any], *, stage_cause: str) -> None:
        """Apply a partial update; records only what actually changes."""
        self._require_active()
        changes: dict[str, Any] = {}
        for name in CONTACT_FIELDS:
            if name not in fields:
                continue
            value = fields[name]
            if name == "tags":
                value = sorted(set(value or []))
            elif name == "attributes":
                value = _merge_attributes(self.attributes, value or {})
            if value != getattr(self, name):
                changes[name] = value
        if changes:
            if not any((changes.get(n, getattr(self, n))) for n in ("first_name", "last_name", "email", "phone")):
                raise ValidationFailed("a contact needs a name, an email or a phone",
                                       {name: ["cannot clear the last identifying field"] for name in changes})
            self.record("ContactUpdated", {"contact_id": self.id, "changes": changes})
        stage = fields.get("lifecycle_stage")
        if stage is not None and stage != self.lifecycle_stage:
            self.change_stage(stage, cause=stage_cause)

    def change_stage(self, stage: str, *, cause: str) -> None:
        self._require_active()
        if stage not in LIFECYCLE_STAGES:
            raise ValidationFailed("unknown lifecycle stage",
                                   {"lifecycle_stage": [f"must be one of {', '.join(LIFECYCLE_STAGES)}"]})
        if stage != self.lifecycle_stage:
            self.record("ContactLifecycleStageChanged",
                        {"contact_id": self.id, "from": self.lifecycle_stage, "to": stage, "cause": cause})

    def _require_active(self) -> None:
        if self.status != "active":
            raise Conflict(f"contact {self.id} is {self.status} and cannot change")

    # --- the fold -------------------------------------------------------------------

    def apply(self, event_type: str, data: dict[str, Any]) -> None:
        match event_type:
            case "ContactCreated":
                for name in CONTACT_FIELDS:
                    setattr(self, name, data.get(name))
                self.tags = list(data.get("tags") or [])
                self.attributes = dict(data.get("attributes") or {})
                self.lifecycle_stage = data.get("lifecycle_stage") or "lead"
            case "ContactUpdated":
                for name, value in data["changes"].items():
                    setattr(self, name, value)
            case "ContactLifecycleStageChanged":
                self.lifecycle_stage = data["to"]

    def view(self) -> dict[str, Any]:
        """The contact as the API shows it."""
        return {
            "id": self.id,
            "version": self.version,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
            "phone": self.phone,
            "company_id": self.company_id,
            "lifecycle_stage": self.lifecycle_stage,
            "tags": list(self.tags),
            "attributes": dict(self.attributes),
            "owner": self.owner,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Contact:
        """The aggregate back from its `view` (how projections continue a fold)."""
        contact = cls(view["id"])
        for name in (*CONTACT_FIELDS, "lifecycle_stage", "status", "version", "created_at", "updated_at"):
            setattr(contact, name, view.get(name))
        contact.tags, contact.attributes = list(view.get("tags") or []), dict(view.get("attributes") or {})
        return contact


class Company(Aggregate):
    aggregate_type = "company"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.fields: dict[str, Any] = {name: None for name in COMPANY_FIELDS}
        self.fields["tags"], self.fields["attributes"] = [], {}

    @classmethod
    def create(cls, company_id: str, fields: dict[str, Any]) -> Company:
        company = cls(company_id)
        data = {name: fields.get(name) for name in COMPANY_FIELDS}
        data["tags"] = sorted(set(fields.get("tags") or []))
        data["attributes"] = {k: v for k, v in (fields.get("attributes") or {}).items() if v is not None}
        company.record("CompanyCreated", {"company_id": company_id, **data})
        return company

    def update(self, fields: dict[str, Any]) -> None:
        changes: dict[str, Any] = {}
        for name in COMPANY_FIELDS:
            if name not in fields:
                continue
            value = fields[name]
            if name == "tags":
                value = sorted(set(value or []))
            elif name == "attributes":
                value = _merge_attributes(self.fields["attributes"], value or {})
            if value != self.fields[name]:
                changes[name] = value
        if "name" in changes and not changes["name"]:
            raise ValidationFailed("a company needs a name", {"name": ["cannot be empty"]})
        if changes:
            self.record("CompanyUpdated", {"company_id": self.id, "changes": changes})

    def apply(self, event_type: str, data: dict[str, Any]) -> None:
        match event_type:
            case "CompanyCreated":
                self.fields.update({name: data.get(name) for name in COMPANY_FIELDS})
            case "CompanyUpdated":
                self.fields.update(data["changes"])

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            **{name: self.fields[name] for name in COMPANY_FIELDS},
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Company:
        company = cls(view["id"])
        company.fields.update({name: view.get(name) for name in COMPANY_FIELDS})
        company.version = view["version"]
        company.created_at, company.updated_at = view["created_at"], view["updated_at"]
        return company
