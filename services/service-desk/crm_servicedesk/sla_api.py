"""REST edge of SLA policy revisions: PATCH /v1/sla-policies/{id}.

A revision is a new version of the policy in force from its `effective_at` on (the
policy's calendar, i.e. its business hours and holidays, included). The worker then
recomputes the open tickets' clocks (`recompute`); `crm sla recompute --from DATE`
does the closed ones of a period on request.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from crm_servicedesk import schemas, sla_schemas
from crm_servicedesk.commands import TicketDesk
from crmkit.web import endpoint, if_match, metadata, resource


def blueprint(desk: TicketDesk) -> Blueprint:
    bp = Blueprint("servicedesk_sla", __name__)

    @bp.patch("/v1/sla-policies/<policy_id>")
    @endpoint("write", body=sla_schemas.PolicyRevisionInput, response=schemas.PolicyView)
    def revise_policy(policy_id: str, body: dict[str, Any]) -> Response:
        """Revise an SLA policy or its calendar from `effective_at` on (a new version; If-Match: the version seen)."""
        changes, extra_holidays = sla_schemas.revision_changes(body)
        policy = desk.revise_policy(policy_id, changes, extra_holidays, body["effective_at"], metadata(), if_match())
        return resource(policy.view())

    return bp
