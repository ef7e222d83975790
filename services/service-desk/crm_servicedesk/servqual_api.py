"""REST edge of SERVQUAL: /v1/servqual (instrument, policy, surveys) and GET /v1/reports/servqual.

The instrument (which items, the dimensions' weights) and the policy (when the desk sends
surveys by itself) are one record each, replaced whole by `PUT` (`servicedesk:write`, the
role that configures SLA policies too); `GET` shows them now or `?as_of=`, `/history`
every change. Surveys are sent by the policy (the worker) or by staff
(`POST /v1/servqual/surveys`); the contact answers on the public page (`servqual_page`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from crm_servicedesk import reports, servqual_page
from crm_servicedesk.commands import TicketDesk
from crm_servicedesk.servqual import ServqualSurvey
from crm_servicedesk.servqual_desk import ServqualDesk
from crm_servicedesk.servqual_schemas import (
    ServqualInstrumentInput,
    ServqualInstrumentView,
    ServqualPolicyInput,
    ServqualPolicyView,
    ServqualReport,
    ServqualReportQuery,
    ServqualSendInput,
    ServqualSurveyListQuery,
    ServqualSurveyView,
)
from crmkit.aggregate import changes_by_event
from crmkit.runtime import Runtime
from crmkit.web import AsOfQuery, HistoryQuery, endpoint, jsonable, listing, metadata, resource
from crmkit.web.pagination import by_version
from crmkit.web.views import HistoryEntry


def blueprint(servqual: ServqualDesk) -> Blueprint:
    bp = Blueprint("servicedesk_servqual", __name__)

    @bp.get("/v1/servqual/instrument")
    @endpoint("read", query=AsOfQuery, response=ServqualInstrumentView)
    def get_servqual_instrument(query: dict[str, Any]) -> Response:
        """The SERVQUAL instrument: items per dimension and weights (the standard 22, equal weights, until set)."""
        return resource(servqual.instrument(query.get("as_of")).view())

    @bp.put("/v1/servqual/instrument")
    @endpoint("write", body=ServqualInstrumentInput, response=ServqualInstrumentView)
    def configure_servqual_instrument(body: dict[str, Any]) -> Response:
        """Set the items asked per dimension and the dimensions' weights (summing to 1 or 100); later surveys use it."""
        instrument = servqual.configure_instrument(body.get("items"), body.get("weights"), metadata())
        return resource(instrument.view())

    @bp.get("/v1/servqual/instrument/history")
    @endpoint("read", query=HistoryQuery, response=HistoryEntry, many=True)
    def servqual_instrument_history(query: dict[str, Any]) -> Response:
        """Every change to the instrument: who, when, before and after (paged by version)."""
        return listing(*by_version(servqual.history("instrument"), query["limit"], query.get("cursor")))

    @bp.get("/v1/servqual/policy")
    @endpoint("read", query=AsOfQuery, response=ServqualPolicyView)
    def get_servqual_policy(query: dict[str, Any]) -> Response:
        """When the desk sends SERVQUAL surveys by itself (off until set)."""
        return resource(servqual.policy(query.get("as_of")).view())

    @bp.put("/v1/servqual/policy")
    @endpoint("write", body=ServqualPolicyInput, response=ServqualPolicyView)
    def configure_servqual_policy(body: dict[str, Any]) -> Response:
        """Set the policy: every Nth solved ticket per contact and/or overall, quarterly to customer tiers."""
        return resource(servqual.configure_policy(body, metadata()).view())

    @bp.get("/v1/servqual/policy/history")
    @endpoint("read", query=HistoryQuery, response=HistoryEntry, many=True)
    def servqual_policy_history(query: dict[str, Any]) -> Response:
        """Every change to the policy: who, when, before and after (paged by version)."""
        return listing(*by_version(servqual.history("policy"), query["limit"], query.get("cursor")))

    @bp.post("/v1/servqual/surveys")
    @endpoint("write", body=ServqualSendInput, response=ServqualSurveyView, status=201, idempotent=True)
    def send_servqual_survey(body: dict[str, Any]) -> Response:
        """Send a contact a SERVQUAL survey now (messaging emails the link, with consent as for any message)."""
        survey = servqual.send(body["contact_id"], body.get("ticket_id"), metadata())
        return resource(survey.view(), 201, location=f"/v1/servqual/surveys/{survey.id}")

    @bp.get("/v1/servqual/surveys")
    @endpoint("read", query=ServqualSurveyListQuery, response=ServqualSurveyView, many=True)
    def list_servqual_surveys(query: dict[str, Any]) -> Response:
        """The surveys sent, filtered by contact, status (sent, answered) and rule (what sent them)."""
        return listing(*servqual.list_surveys(query))

    @bp.get("/v1/servqual/surveys/<survey_id>")
    @endpoint("read", query=AsOfQuery, response=ServqualSurveyView)
    def get_servqual_survey(survey_id: str, query: dict[str, Any]) -> Response:
        """One survey with its items, weights, answers and gaps; now or as it was at `as_of`."""
        return resource(servqual.surveys.get(survey_id, as_of=query.get("as_of")).view())

    @bp.get("/v1/servqual/surveys/<survey_id>/history")
    @endpoint("read", query=HistoryQuery, response=HistoryEntry, many=True)
    def servqual_survey_history(survey_id: str, query: dict[str, Any]) -> Response:
        """What happened to a survey: sent, answered (paged by version)."""
        changes = changes_by_event(ServqualSurvey, survey_id, servqual.surveys.history(survey_id))
        return listing(*by_version(changes, query["limit"], query.get("cursor")))

    @bp.get("/v1/reports/servqual")
    @endpoint("read", query=ServqualReportQuery, response=ServqualReport)
    def servqual_report(query: dict[str, Any]) -> Response:
        """SERVQUAL gaps (perception − expectation) by dimension and item, over time, by tier and agent group."""
        return jsonify(jsonable(reports.servqual_report(servqual.surveys_view, query)))

    return bp


def blueprints(runtime: Runtime) -> list[Blueprint]:
    """SERVQUAL's REST API and its public questionnaire page, for the service's spec."""
    servqual = ServqualDesk(TicketDesk(runtime))
    return [blueprint(servqual), servqual_page.blueprint(servqual)]
