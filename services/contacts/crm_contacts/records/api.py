"""REST edge of the contacts service: /v1/contacts and /v1/companies."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from crm_contacts.records import schemas
from crm_contacts.records.commands import ContactBook
from crm_contacts.records.customer360 import Neighbours, customer_360
from crm_contacts.records.domain import CHANNELS
from crmkit.errors import ValidationFailed
from crmkit.web import (
    AsOfQuery,
    HistoryQuery,
    PageQuery,
    endpoint,
    if_match,
    jsonable,
    listing,
    metadata,
    resource,
    team_scope,
    teams,
)
from crmkit.web.pagination import by_version

# the channel is part of the path: its values, so that a request for another is known to be refused
CHANNEL_DOC = {
    "parameters": [
        {"in": "path", "name": "channel", "required": True, "schema": {"type": "string", "enum": list(CHANNELS)}}
    ]
}


def blueprint(book: ContactBook, neighbours: Neighbours) -> Blueprint:
    """The contacts and companies routes, one factory per resource; each registers its routes on the
    blueprint, in this order (the OpenAPI document lists the operations of a path in it)."""
    bp = Blueprint("contacts", __name__)
    contact_routes(bp, book)
    consent_routes(bp, book)
    duplicate_routes(bp, book)
    erasure_routes(bp, book)
    customer_360_routes(bp, book, neighbours)
    company_routes(bp, book)
    return bp


def contact_routes(bp: Blueprint, book: ContactBook) -> None:
    """/v1/contacts: a person's record, created, listed and searched, changed, and its history (team-scoped)."""

    @bp.post("/v1/contacts")
    @endpoint(
        "write", body=schemas.ContactCreate, response=schemas.ContactView, status=201, idempotent=True, teams=True
    )
    def create_contact(body: dict[str, Any]) -> Response:
        """Create a contact."""
        contact = book.create_contact(teams.claim_for_create(body), metadata())
        return resource(contact.view(), 201, location=f"/v1/contacts/{contact.id}")

    @bp.get("/v1/contacts")
    @endpoint("read", query=schemas.ContactListQuery, response=schemas.ContactView, many=True, teams=True)
    def list_contacts(query: dict[str, Any]) -> Response:
        """List and search contacts (q matches the start of any name word, email or phone)."""
        confined = teams.list_filters(query, query.get("team"))
        return listing([], None) if confined is None else listing(*book.list_contacts(confined))

    @bp.get("/v1/contacts/<contact_id>")
    @endpoint("read", query=AsOfQuery, response=schemas.ContactView, teams=True)
    def get_contact(contact_id: str, query: dict[str, Any]) -> Response:
        """One contact, now or as it was at `as_of`."""
        confine(book, contact_id)
        return resource(book.contact(contact_id, as_of=query.get("as_of")).view())

    @bp.patch("/v1/contacts/<contact_id>")
    @endpoint("write", body=schemas.ContactInput, response=schemas.ContactView, teams=True)
    def update_contact(contact_id: str, body: dict[str, Any]) -> Response:
        """Change some fields of a contact (null clears a field; attributes merge)."""
        confine(book, contact_id)
        teams.check_change(body)
        return resource(book.update_contact(contact_id, body, metadata(), if_match()).view())

    @bp.get("/v1/contacts/<contact_id>/history")
    @endpoint("read", query=HistoryQuery, response=schemas.HistoryEntry, many=True, teams=True)
    def contact_history(contact_id: str, query: dict[str, Any]) -> Response:
        """Every change to a contact: who, what, when, before and after (paged by version)."""
        confine(book, contact_id)
        return listing(*by_version(book.contact_history(contact_id), query["limit"], query.get("cursor")))


def consent_routes(bp: Blueprint, book: ContactBook) -> None:
    """/v1/contacts/{id}/consents: the latest consent decision per channel, and recording one."""

    @bp.put("/v1/contacts/<contact_id>/consents/<channel>")
    @endpoint("write", body=schemas.ConsentInput, response=schemas.ContactView, openapi=CHANNEL_DOC, teams=True)
    def set_consent(contact_id: str, channel: str, body: dict[str, Any]) -> Response:
        """Record a consent decision for one channel (email, sms, fax, phone)."""
        _require_channel(channel)
        confine(book, contact_id)
        return resource(book.set_consent(contact_id, channel, body, metadata(), if_match()).view())

    @bp.get("/v1/contacts/<contact_id>/consents")
    @endpoint("read", response=schemas.ConsentsView, teams=True)
    def consents(contact_id: str) -> Response:
        """The latest consent decision per channel."""
        confine(book, contact_id)
        contact = book.contact(contact_id)
        response = jsonify({"contact_id": contact.id, "consents": contact.consents})
        response.headers["ETag"] = f'"{contact.version}"'
        return response


def duplicate_routes(bp: Blueprint, book: ContactBook) -> None:
    """One person, one record: the pairs that look alike (/v1/duplicates), and folding one into the other."""

    @bp.post("/v1/contacts/<contact_id>/merge")
    @endpoint("write", body=schemas.MergeInput, response=schemas.ContactView, teams=True)
    def merge(contact_id: str, body: dict[str, Any]) -> Response:
        """Fold a duplicate into this contact; the duplicate's id then leads here."""
        confine(book, contact_id)
        confine(book, body["duplicate_id"])
        return resource(book.merge(contact_id, body["duplicate_id"], metadata(), if_match()).view())

    @bp.get("/v1/duplicates")
    @endpoint("read", query=PageQuery, response=schemas.DuplicatePair, many=True)
    def duplicates(query: dict[str, Any]) -> Response:
        """Pairs of contacts that look like the same person, and why."""
        return listing(*book.duplicates(query["limit"], query.get("cursor")))


def erasure_routes(bp: Blueprint, book: ContactBook) -> None:
    """/v1/contacts/{id}/erasure: the right to be forgotten (crypto-shredding)."""

    @bp.post("/v1/contacts/<contact_id>/erasure")
    @endpoint("erase", body=schemas.ErasureInput, response=schemas.ContactView)
    def erase(contact_id: str, body: dict[str, Any]) -> Response:
        """Erase the person (crypto-shredding): their data becomes unreadable everywhere."""
        return resource(book.erase(contact_id, body["reason"], metadata(), if_match()).view())

    # GET /v1/contacts/<contact_id>/export: export_api (the whole record, from every service)


def customer_360_routes(bp: Blueprint, book: ContactBook, neighbours: Neighbours) -> None:
    """/v1/contacts/{id}/360: the contact with what the other services know of them."""

    @bp.get("/v1/contacts/<contact_id>/360")
    @endpoint("read", response=schemas.Customer360View, teams=True)
    def three_sixty(contact_id: str) -> Response:
        """Profile, value, support, recent messages and lifecycle timeline in one answer."""
        confine(book, contact_id)
        return jsonify(jsonable(customer_360(book, neighbours, contact_id)))


def company_routes(bp: Blueprint, book: ContactBook) -> None:
    """/v1/companies: the organisations contacts work for."""

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
    @endpoint("read", query=AsOfQuery, response=schemas.CompanyView)
    def get_company(company_id: str, query: dict[str, Any]) -> Response:
        """One company, now or as it was at `as_of`."""
        return resource(book.company(company_id, as_of=query.get("as_of")).view())

    @bp.patch("/v1/companies/<company_id>")
    @endpoint("write", body=schemas.CompanyInput, response=schemas.CompanyView)
    def update_company(company_id: str, body: dict[str, Any]) -> Response:
        """Change some fields of a company."""
        return resource(book.update_company(company_id, body, metadata(), if_match()).view())

    @bp.get("/v1/companies/<company_id>/history")
    @endpoint("read", query=HistoryQuery, response=schemas.HistoryEntry, many=True)
    def company_history(company_id: str, query: dict[str, Any]) -> Response:
        """Every change to a company (paged by version)."""
        return listing(*by_version(book.company_history(company_id), query["limit"], query.get("cursor")))


def _require_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise ValidationFailed("unknown channel", {"channel": [f"must be one of {', '.join(CHANNELS)}"]})


def confine(book: ContactBook, contact_id: str) -> None:
    """A 404 for a team-scoped caller asking for another team's contact (nothing to read for anyone else)."""
    if team_scope() is not None:
        teams.require_visible(book.contact(contact_id).team, "contact", contact_id)
