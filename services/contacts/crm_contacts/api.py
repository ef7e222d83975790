"""REST edge of the contacts service: /v1/contacts and /v1/companies."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from crm_contacts import schemas
from crm_contacts.commands import ContactBook
from crmkit.web import endpoint, if_match, listing, metadata, resource


def blueprint(book: ContactBook) -> Blueprint:
    bp = Blueprint("contacts", __name__)

    @bp.post("/v1/contacts")
    @endpoint("write", body=schemas.ContactInput, response=schemas.ContactView, status=201, idempotent=True)
    def create_contact(body: dict[str, Any]) -> Response:
        """Create a contact."""
        contact = book.create_contact(body, metadata())
        return resource(contact.view(), 201, location=f"/v1/contacts/{contact.id}")

    @bp.get("/v1/contacts")
    @endpoint("read", query=schemas.ContactListQuery, response=schemas.ContactView, many=True)
    def list_contacts(query: dict[str, Any]) -> Response:
        """List and search contacts (q matches the start of any name word, email or phone)."""
        return listing(*book.list_contacts(query))

    @bp.get("/v1/contacts/<contact_id>")
    @endpoint("read", query=schemas.AsOfQuery, response=schemas.ContactView)
    def get_contact(contact_id: str, query: dict[str, Any]) -> Response:
        """One contact, now or as it was at `as_of`."""
        return resource(book.contact(contact_id, as_of=query.get("as_of")).view())

    @bp.patch("/v1/contacts/<contact_id>")
    @endpoint("write", body=schemas.ContactInput, response=schemas.ContactView)
    def update_contact(contact_id: str, body: dict[str, Any]) -> Response:
        """Change some fields of a contact (null clears a field; attributes merge)."""
        return resource(book.update_contact(contact_id, body, metadata(), if_match()).view())

    @bp.get("/v1/contacts/<contact_id>/history")
    @endpoint("read", response=schemas.HistoryEntry, many=True)
    def contact_history(contact_id: str) -> Response:
        """Every change to a contact: who, what, when, before and after."""
        return listing(book.contact_history(contact_id), None)

    @bp.post("/v1/companies")
    @endpoint("write", body=schemas.CompanyCreate, response=schemas.CompanyView, status=201, idempotent=True)
    def create_company(body: dict[str, Any]) -> Response:
        """Create a company."""
        company = book.create_company(body, metadata())
        return resource(company.view(), 201, location=f"/v1/companies/{company.id}")

    @bp.get("/v1/companies")
    @endpoint("read", query=schemas.CompanyListQuery, response=schemas.CompanyView, many=True)
    def list_companies(query: dict[str, Any]) -> Response:
        """List and search companies by name or domain."""
        return listing(*book.list_companies(query))

    @bp.get("/v1/companies/<company_id>")
    @endpoint("read", response=schemas.CompanyView)
    def get_company(company_id: str) -> Response:
        """One company."""
        return resource(book.company(company_id).view())

    @bp.patch("/v1/companies/<company_id>")
    @endpoint("write", body=schemas.CompanyInput, response=schemas.CompanyView)
    def update_company(company_id: str, body: dict[str, Any]) -> Response:
        """Change some fields of a company."""
        return resource(book.update_company(company_id, body, metadata(), if_match()).view())

    @bp.get("/v1/companies/<company_id>/history")
    @endpoint("read", response=schemas.HistoryEntry, many=True)
    def company_history(company_id: str) -> Response:
        """Every change to a company."""
        return listing(book.company_history(company_id), None)

    return bp
