"""The inbound-SMS webhook: `POST /v1/inbound/sms`, called by the SMS gateway for each SMS it received.

No bearer token: the gateway proves itself with the secret shared with it in `X-Inbound-Secret`
(CRM_SERVICEDESK_INBOUND_SECRET; derived from the link secret when unset), checked the way
messaging checks its delivery receipts (`crmkit.web.webhooks`). The SMS becomes a ticket or a
comment (`inbound.Intake.sms`) before the answer, so a 2xx means it is recorded and anything else
means the gateway should send it again; the same `provider_message_id` again records nothing and
answers the same outcome with `duplicate: true`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from marshmallow import Schema, fields, validate

from crm_servicedesk.commands import TicketDesk
from crm_servicedesk.inbound import InboundConfig, Intake, Sms
from crm_servicedesk.inbound_mail import Refused
from crm_servicedesk.schemas import Text
from crmkit.errors import Unavailable, ValidationFailed
from crmkit.web import endpoint
from crmkit.web.webhooks import require_secret, secret_header, shared_secret

HEADER = "X-Inbound-Secret"
SECRET_LABEL = "crm-servicedesk-inbound"


class InboundSmsInput(Schema):
    provider = fields.String(
        load_default="gateway",
        validate=validate.Regexp(
            r"^[a-z0-9][a-z0-9_-]{0,39}$", error="lower-case letters, digits, _ and -, at most 40"
        ),
        metadata={"description": "the gateway's name: with provider_message_id, what makes an SMS one"},
    )
    provider_message_id = fields.String(
        required=True,
        validate=validate.Regexp(r"^[\x21-\x7e]{1,200}$", error="1 to 200 printable ASCII characters"),
        metadata={"description": "the gateway's id of this SMS (a retried call carries the same)"},
    )
    sender = fields.String(
        required=True,
        data_key="from",
        validate=validate.Regexp(
            r"^\+?[0-9 ().-]{3,40}$", error="a phone number (digits, spaces, ( ) . - and a leading +)"
        ),
        metadata={"description": "the sender's number; E.164 (+989121234567) or national in CRM_DEFAULT_PHONE_REGION"},
    )
    text = Text(max_length=5000, multiline=True, required=True)
    to = fields.String(validate=validate.Length(max=40), metadata={"description": "our number it was sent to"})


class InboundOutcomeView(Schema):
    outcome = fields.String(
        metadata={"description": "ticket (a new one) or comment (on the contact's open SMS ticket)"}
    )
    ticket_id = fields.String()
    comment_id = fields.String(allow_none=True)
    contact_id = fields.String(
        metadata={
            "description": "the sender's contact; a new one (tag `inbound`, "
            "attribute source inbound_sms) when nobody had the number"
        }
    )
    duplicate = fields.Boolean(metadata={"description": "true when an earlier call recorded this SMS"})


DOC = secret_header(HEADER, "CRM_SERVICEDESK_INBOUND_SECRET")
DOC["responses"]["503"] = {
    "description": "contacts could not be reached: nothing recorded, send it again later",
    "content": {"application/problem+json": {"schema": "Problem"}},
}


def blueprint(desk: TicketDesk) -> Blueprint:
    bp = Blueprint("servicedesk_inbound", __name__)
    intake = Intake(desk)

    @bp.post("/v1/inbound/sms")
    @endpoint(None, body=InboundSmsInput, response=InboundOutcomeView, openapi=DOC)
    def inbound_sms(body: dict[str, Any]) -> Response:
        """An SMS the gateway received: a ticket for its sender (a comment on their open SMS ticket within the
        reply window); authenticated by X-Inbound-Secret."""
        require_secret(HEADER, secret(intake.config))
        try:
            outcome = intake.sms(Sms(body["provider"], body["provider_message_id"], body["sender"], body["text"]))
        except Refused as refused:
            if refused.code < 500:
                raise Unavailable(refused.reason) from None
            raise ValidationFailed("the sender cannot be recorded", {"from": [refused.reason]}) from None
        return jsonify(outcome.view())

    return bp


def secret(config: InboundConfig) -> str:
    """The webhook's shared secret: CRM_SERVICEDESK_INBOUND_SECRET, else derived from the link secret."""
    return shared_secret(config.secret, SECRET_LABEL)
