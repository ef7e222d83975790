"""REST edge of the service desk: /v1/tickets, /v1/sla-policies, /v1/reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify

from crm_servicedesk import reports, schemas
from crm_servicedesk.commands import TicketDesk
from crm_servicedesk.domain import SlaPolicy
from crmkit.aggregate import changes_by_event
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
from crmkit.web.views import HistoryEntry


def blueprint(desk: TicketDesk) -> Blueprint:
    """The service desk's routes, one factory per resource; each registers its routes on the blueprint, in
    this order (the OpenAPI document lists the operations of a path in it)."""
    bp = Blueprint("servicedesk", __name__)
    for routes in (ticket_routes, policy_routes, report_routes):
        routes(bp, desk)
    return bp


def ticket_routes(bp: Blueprint, desk: TicketDesk) -> None:
    """/v1/tickets: a ticket's record, its comments, assignment, status and rating (team-scoped)."""

    def ticket_response(ticket: Any, status: int = 200, location: str | None = None) -> Response:
        return resource(desk.ticket_view(ticket), status, location)

    @bp.post("/v1/tickets")
    @endpoint("write", body=schemas.TicketInput, response=schemas.TicketView, status=201, idempotent=True, teams=True)
    def open_ticket(body: dict[str, Any]) -> Response:
        """Open a ticket for a contact (any channel); the SLA policy is chosen now."""
        ticket = desk.open_ticket(teams.claim_for_create(body), metadata())
        return ticket_response(ticket, 201, location=f"/v1/tickets/{ticket.id}")

    @bp.get("/v1/tickets")
    @endpoint("read", query=schemas.TicketListQuery, response=schemas.TicketView, many=True, teams=True)
    def list_tickets(query: dict[str, Any]) -> Response:
        """List tickets, filtered by status, assignee, priority, contact, breached, group, team, type, tag."""
        confined = teams.list_filters(query, query.get("team"))
        return listing([], None) if confined is None else listing(*desk.list_tickets(confined))

    @bp.get("/v1/tickets/<ticket_id>")
    @endpoint("read", query=AsOfQuery, response=schemas.TicketView, teams=True)
    def get_ticket(ticket_id: str, query: dict[str, Any]) -> Response:
        """One ticket with its comments, SLA due times and remaining business minutes; now or as it was at `as_of`."""
        confine(desk, ticket_id)
        return resource(ticket_as_of(desk, ticket_id, query.get("as_of")))

    @bp.get("/v1/tickets/<ticket_id>/history")
    @endpoint("read", query=HistoryQuery, response=HistoryEntry, many=True, teams=True)
    def ticket_history(ticket_id: str, query: dict[str, Any]) -> Response:
        """Every change to a ticket: who, what, when, before and after (paged by version)."""
        confine(desk, ticket_id)
        return listing(*by_version(desk.history(ticket_id), query["limit"], query.get("cursor")))

    @bp.post("/v1/tickets/<ticket_id>/comments")
    @endpoint("write", body=schemas.CommentInput, response=schemas.TicketView, status=201, idempotent=True, teams=True)
    def comment(ticket_id: str, body: dict[str, Any]) -> Response:
        """A public reply (`public: true`) or an internal note (`public: false`)."""
        confine(desk, ticket_id)
        ticket = desk.comment(ticket_id, body, metadata(), if_match())
        return ticket_response(ticket, 201, location=f"/v1/tickets/{ticket.id}")

    @bp.post("/v1/tickets/<ticket_id>/assign")
    @endpoint("write", body=schemas.AssignInput, response=schemas.TicketView, teams=True)
    def assign(ticket_id: str, body: dict[str, Any]) -> Response:
        """Assign to an agent and/or a group."""
        confine(desk, ticket_id)
        return ticket_response(desk.assign(ticket_id, body, metadata(), if_match()))

    @bp.post("/v1/tickets/<ticket_id>/status")
    @endpoint("write", body=schemas.StatusInput, response=schemas.TicketView, teams=True)
    def change_status(ticket_id: str, body: dict[str, Any]) -> Response:
        """Move through new → open → pending / on_hold → solved → closed (reopen: solved → open); else 409."""
        confine(desk, ticket_id)
        return ticket_response(desk.change_status(ticket_id, body["status"], metadata(), if_match()))

    @bp.post("/v1/tickets/<ticket_id>/satisfaction")
    @endpoint("write", body=schemas.SatisfactionInput, response=schemas.TicketView, status=201, teams=True)
    def rate(ticket_id: str, body: dict[str, Any]) -> Response:
        """The customer's rating after solve: CSAT 1–5 and comment, NPS 0–10, SERVQUAL 1–7 (once; again is 409)."""
        confine(desk, ticket_id)
        return ticket_response(desk.rate(ticket_id, body, metadata(), if_match()), 201)


def policy_routes(bp: Blueprint, desk: TicketDesk) -> None:
    """/v1/sla-policies: the targets, business hours and escalation a ticket's SLA is measured by."""

    @bp.post("/v1/sla-policies")
    @endpoint("write", body=schemas.PolicyInput, response=schemas.PolicyView, status=201, idempotent=True)
    def define_policy(body: dict[str, Any]) -> Response:
        """Define an SLA policy: targets per priority, business hours, holidays, tiers, escalation."""
        policy = desk.define_policy(schemas.policy_fields(body), metadata())
        return resource(policy.view(), 201, location=f"/v1/sla-policies/{policy.id}")

    @bp.get("/v1/sla-policies")
    @endpoint("read", query=PageQuery, response=schemas.PolicyView, many=True)
    def list_policies(query: dict[str, Any]) -> Response:
        """The SLA policies."""
        return listing(*desk.list_policies(query))

    @bp.get("/v1/sla-policies/<policy_id>")
    @endpoint("read", query=AsOfQuery, response=schemas.PolicyView)
    def get_policy(policy_id: str, query: dict[str, Any]) -> Response:
        """One SLA policy with its versions; now or as it was at `as_of` (the versions decided by then)."""
        return resource(desk.policies.get(policy_id, as_of=query.get("as_of")).view())

    @bp.get("/v1/sla-policies/<policy_id>/history")
    @endpoint("read", query=HistoryQuery, response=HistoryEntry, many=True)
    def policy_history(policy_id: str, query: dict[str, Any]) -> Response:
        """Every change to an SLA policy or its calendar: who, what, when, before and after (paged by version)."""
        changes = changes_by_event(SlaPolicy, policy_id, desk.policies.history(policy_id))
        return listing(*by_version(changes, query["limit"], query.get("cursor")))


def report_routes(bp: Blueprint, desk: TicketDesk) -> None:
    """/v1/reports/sla and /v1/reports/satisfaction, read from the tickets' projection."""

    @bp.get("/v1/reports/sla")
    @endpoint("read", query=schemas.ReportQuery, response=schemas.SlaReport)
    def sla_report(query: dict[str, Any]) -> Response:
        """SLA compliance per target and priority; first-response and resolution times in business minutes."""
        return jsonify(jsonable(reports.sla_report(desk.tickets_view, query)))

    @bp.get("/v1/reports/satisfaction")
    @endpoint("read", query=schemas.ReportQuery, response=schemas.SatisfactionReport)
    def satisfaction_report(query: dict[str, Any]) -> Response:
        """CSAT average and distribution, NPS, SERVQUAL means, complaint rate per 100 customers."""
        return jsonify(jsonable(reports.satisfaction_report(desk.tickets_view, query)))


def confine(desk: TicketDesk, ticket_id: str) -> None:
    """A 404 for a team-scoped caller asking for another team's ticket (nothing to read for anyone else)."""
    if team_scope() is not None:
        teams.require_visible(desk.tickets.get(ticket_id).team, "ticket", ticket_id)


def ticket_as_of(desk: TicketDesk, ticket_id: str, as_of: datetime | None) -> dict[str, Any]:
    """A ticket's view now, or as it was at `as_of`: folded from its events up to then, its SLA clocks
    counted up to that moment (the contact's name and tier are today's, from the local projections)."""
    ticket = desk.tickets.get(ticket_id, as_of=as_of)
    view = desk.ticket_view(ticket)
    return view if as_of is None else {**view, **ticket.view(as_of)}
