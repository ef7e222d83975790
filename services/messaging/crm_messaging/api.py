"""REST edge of the messaging service."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from flask.blueprints import BlueprintSetupState
from marshmallow import Schema, fields, validate
from werkzeug.routing import BaseConverter

from crm_messaging import schemas, unsubscribe
from crm_messaging.commands import MessageDesk
from crmkit import auth
from crmkit.aggregate import changes_by_event
from crmkit.errors import NotFound
from crmkit.repository import Repository
from crmkit.web import AsOfQuery, HistoryQuery, PageQuery, endpoint, if_match, listing, metadata, resource
from crmkit.web.endpoint import Forbidden
from crmkit.web.locale import PageLanguage
from crmkit.web.pagination import by_version
from crmkit.web.views import HistoryEntry
from crmkit.web.webhooks import require_secret


class UnsubscribeQuery(Schema):
    lang = fields.String(
        validate=validate.Length(max=35),
        metadata={
            "description": "the page's language (en, fa or ar; fa-IR works too); default the contact's locale, "
            "then Accept-Language, then en"
        },
    )


HTML = {"text/html": {"schema": {"type": "string"}}}
PROBLEM = {"application/problem+json": {"schema": "Problem"}}
LINK_NOT_VALID = {"404": {"description": "A forged, damaged or foreign link: a page saying so", "content": HTML}}

# GET only shows a confirmation (mail scanners follow links); the form and a mail client's
# one-click button (RFC 8058) POST to the same URL. The body is a courtesy of RFC 8058:
# the signed link alone is the request, so any form body, or none, unsubscribes.
UNSUBSCRIBE_PAGE = {
    "responses": {"200": {"description": "A page asking to confirm", "content": HTML}, **LINK_NOT_VALID}
}
ONE_CLICK = {
    "requestBody": {
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "description": "RFC 8058 sends List-Unsubscribe=One-Click; the link alone is the request",
                    "properties": {"List-Unsubscribe": {"type": "string"}},
                }
            }
        },
    },
    "responses": {"200": {"description": "Unsubscribed: a page saying so", "content": HTML}, **LINK_NOT_VALID},
}
RECEIPT = {
    "parameters": [
        {
            "in": "header",
            "name": "X-Receipt-Secret",
            "required": True,
            "schema": {"type": "string"},
            "description": "the secret shared with the provider (CRM_MESSAGING_RECEIPT_SECRET)",
        }
    ],
    "responses": {
        "401": {"description": "X-Receipt-Secret missing or wrong", "content": PROBLEM},
        "404": {"description": "No such message, or not one sent through this provider", "content": PROBLEM},
        "409": {
            "description": "The receipt does not apply to the message's state (e.g. still queued)",
            "content": PROBLEM,
        },
    },
}


class NotPreview(BaseConverter):
    """A template id in a path: any segment but `preview`, so that /v1/templates/preview is
    only the POST it documents (another method is a 405 naming POST, not a template lookup)."""

    regex = r"(?!preview$)[^/]+"


def _register_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("not_preview", NotPreview)


def blueprint(desk: MessageDesk) -> Blueprint:
    """The messaging routes, one factory per resource; each registers its routes on the blueprint, in this
    order (the OpenAPI document lists the operations of a path in it)."""
    bp = Blueprint("messaging", __name__)
    bp.record_once(_register_converter)
    for routes in (template_routes, message_routes, campaign_routes, trigger_routes, unsubscribe_routes):
        routes(bp, desk)
    return bp


def template_routes(bp: Blueprint, desk: MessageDesk) -> None:
    """/v1/templates: per-locale subjects and bodies for one channel, and previews of them."""

    @bp.post("/v1/templates")
    @endpoint("write", body=schemas.TemplateInput, response=schemas.TemplateView, status=201, idempotent=True)
    def create_template(body: dict[str, Any]) -> Response:
        """Create a template: subject and body per locale for one channel (Jinja2, sandboxed)."""
        template = desk.define_template(body, metadata())
        return resource(template.view(), 201, location=f"/v1/templates/{template.id}")

    @bp.get("/v1/templates")
    @endpoint("read", query=schemas.TemplateListQuery, response=schemas.TemplateView, many=True)
    def list_templates(query: dict[str, Any]) -> Response:
        """List templates (`channel` filter)."""
        return listing(*_public(desk.list_templates(query)))

    @bp.get("/v1/templates/<not_preview:template_id>")
    @endpoint("read", query=AsOfQuery, response=schemas.TemplateView)
    def get_template(template_id: str, query: dict[str, Any]) -> Response:
        """One template, now or as it was at `as_of`."""
        return resource(desk.templates.get(template_id, as_of=query.get("as_of")).view())

    @bp.get("/v1/templates/<not_preview:template_id>/history")
    @endpoint("read", query=HistoryQuery, response=HistoryEntry, many=True)
    def template_history(template_id: str, query: dict[str, Any]) -> Response:
        """Every change to a template: who, what, when, before and after (paged by version)."""
        return listing(*by_version(_history(desk.templates, template_id), query["limit"], query.get("cursor")))

    @bp.patch("/v1/templates/<not_preview:template_id>")
    @endpoint("write", body=schemas.TemplatePatch, response=schemas.TemplateView)
    def update_template(template_id: str, body: dict[str, Any]) -> Response:
        """Change a template's name, category, default locale or variants (If-Match honoured)."""
        return resource(desk.update_template(template_id, body, metadata(), if_match()).view())

    @bp.post("/v1/templates/preview")
    @endpoint("read", body=schemas.PreviewInput, response=schemas.PreviewView)
    def preview(body: dict[str, Any]) -> Response:
        """Render a template (or unsaved text) with variables and optionally a contact's data (which also
        needs contacts:read); sends nothing."""
        if body.get("contact_id"):
            _require_contact_access()
        source = {"subject": body.get("subject"), "body": body.get("body")} if body.get("body") else None
        return jsonify(
            desk.preview(body.get("template_id"), source, body.get("locale"), body["variables"], body.get("contact_id"))
        )


def message_routes(bp: Blueprint, desk: MessageDesk) -> None:
    """/v1/messages: queued messages, their proof of consent and the consent report, and the providers' receipts."""

    @bp.post("/v1/messages")
    @endpoint("write", body=schemas.MessageInput, response=schemas.MessageView, status=202, idempotent=True)
    def send_message(body: dict[str, Any]) -> Response:
        """Queue a message (202): consent, quiet hours and rate limits are checked when the worker sends it."""
        message = desk.queue_message(body, metadata())
        return resource(message.view(), 202, location=f"/v1/messages/{message.id}")

    @bp.get("/v1/messages")
    @endpoint("read", query=schemas.MessageListQuery, response=schemas.MessageView, many=True)
    def list_messages(query: dict[str, Any]) -> Response:
        """List messages (`contact_id`, `campaign_id`, `status`, `channel` filters); no bodies."""
        return listing(*_public(desk.list_messages(query)))

    @bp.get("/v1/messages/<message_id>")
    @endpoint("read", query=AsOfQuery, response=schemas.MessageView)
    def get_message(message_id: str, query: dict[str, Any]) -> Response:
        """One message with its status, and what was sent (unreadable once the contact is erased), now or at `as_of`."""
        return resource(desk.messages.get(message_id, as_of=query.get("as_of")).view())

    @bp.get("/v1/messages/<message_id>/history")
    @endpoint("read", query=HistoryQuery, response=HistoryEntry, many=True)
    def message_history(message_id: str, query: dict[str, Any]) -> Response:
        """Every change to a message: queued, retried, sent, delivered, failed (who, when, before and after)."""
        return listing(*by_version(_history(desk.messages, message_id), query["limit"], query.get("cursor")))

    @bp.get("/v1/messages/<message_id>/consent")
    @endpoint("read", response=schemas.MessageConsentView)
    def get_message_consent(message_id: str) -> Response:
        """The proof of consent: the consent decision the message's send or suppression relied on (the
        contact's consent event id and version, status, legal basis, source, when decided and checked)."""
        return jsonify(desk.message_consent(message_id))

    @bp.get("/v1/reports/consent-proofs")
    @endpoint("read", query=schemas.ConsentReportQuery, response=schemas.ConsentProofReport)
    def consent_proof_report(query: dict[str, Any]) -> Response:
        """Messages sent and suppressed on a consent checked from `from` to `to` (UTC days, included), by
        legal basis, by consent source and (suppressions) by reason."""
        return jsonify(desk.consent_report(query["from_"], query["to"]))

    @bp.post("/v1/providers/<provider>/receipts")
    @endpoint(None, body=schemas.ReceiptInput, response=schemas.MessageView, openapi=RECEIPT)
    def receipt(provider: str, body: dict[str, Any]) -> Response:
        """A provider's delivery receipt; authenticated by the shared secret in `X-Receipt-Secret`."""
        require_secret("X-Receipt-Secret", desk.receipt_secret())
        return resource(desk.receipt(provider, body, metadata()).view())


def campaign_routes(bp: Blueprint, desk: MessageDesk) -> None:
    """/v1/campaigns: a template to a segment, launched, paused, resumed or cancelled."""

    @bp.post("/v1/campaigns")
    @endpoint("write", body=schemas.CampaignInput, response=schemas.CampaignView, status=201, idempotent=True)
    def create_campaign(body: dict[str, Any]) -> Response:
        """Create a campaign (a draft): a template to a segment on one channel, throttled."""
        campaign = desk.create_campaign(body, metadata())
        return resource(desk.campaign(campaign.id), 201, location=f"/v1/campaigns/{campaign.id}")

    @bp.get("/v1/campaigns")
    @endpoint("read", query=schemas.CampaignListQuery, response=schemas.CampaignView, many=True)
    def list_campaigns(query: dict[str, Any]) -> Response:
        """List campaigns (`status` filter)."""
        return listing(*_public(desk.list_campaigns(query)))

    @bp.get("/v1/campaigns/<campaign_id>")
    @endpoint("read", query=AsOfQuery, response=schemas.CampaignView)
    def get_campaign(campaign_id: str, query: dict[str, Any]) -> Response:
        """One campaign with progress and stats (targeted, suppressed, sent, delivered, failed), or as it was at
        `as_of` (without stats)."""
        if query.get("as_of") is None:
            return resource(desk.campaign(campaign_id))
        return resource({**desk.campaigns.get(campaign_id, as_of=query["as_of"]).view(), "stats": None})

    @bp.get("/v1/campaigns/<campaign_id>/history")
    @endpoint("read", query=HistoryQuery, response=HistoryEntry, many=True)
    def campaign_history(campaign_id: str, query: dict[str, Any]) -> Response:
        """Every change to a campaign: created, launched, targeted, paused, resumed, cancelled, completed."""
        return listing(*by_version(_history(desk.campaigns, campaign_id), query["limit"], query.get("cursor")))

    @bp.post("/v1/campaigns/<campaign_id>/launch")
    @endpoint("write", body=schemas.LaunchInput, response=schemas.CampaignView)
    def launch_campaign(campaign_id: str, body: dict[str, Any]) -> Response:
        """Launch now, or at `scheduled_at` (CampaignLaunched)."""
        desk.launch_campaign(campaign_id, body.get("scheduled_at"), metadata(), if_match())
        return resource(desk.campaign(campaign_id))

    for action in ("pause", "resume", "cancel"):
        bp.add_url_rule(
            f"/v1/campaigns/<campaign_id>/{action}",
            f"{action}_campaign",
            _campaign_action(desk, action),
            methods=["POST"],
        )


def trigger_routes(bp: Blueprint, desk: MessageDesk) -> None:
    """/v1/triggers: a template sent when another service's event matches."""

    @bp.post("/v1/triggers")
    @endpoint("write", body=schemas.TriggerInput, response=schemas.TriggerView, status=201, idempotent=True)
    def create_trigger(body: dict[str, Any]) -> Response:
        """When an event of `event_type` whose data matches `filter` happens, send the template to its contact."""
        trigger = desk.define_trigger(body, metadata())
        return resource(trigger.view(), 201, location=f"/v1/triggers/{trigger.id}")

    @bp.get("/v1/triggers")
    @endpoint("read", query=PageQuery, response=schemas.TriggerView, many=True)
    def list_triggers(query: dict[str, Any]) -> Response:
        """List triggers (the two defaults included)."""
        return listing(*_public(desk.list_triggers(query)))

    @bp.get("/v1/triggers/<trigger_id>")
    @endpoint("read", query=AsOfQuery, response=schemas.TriggerView)
    def get_trigger(trigger_id: str, query: dict[str, Any]) -> Response:
        """One trigger, now or as it was at `as_of`."""
        return resource(desk.triggers.get(trigger_id, as_of=query.get("as_of")).view())

    @bp.get("/v1/triggers/<trigger_id>/history")
    @endpoint("read", query=HistoryQuery, response=HistoryEntry, many=True)
    def trigger_history(trigger_id: str, query: dict[str, Any]) -> Response:
        """Every change to a trigger: defined, enabled, disabled (who, when, before and after)."""
        return listing(*by_version(_history(desk.triggers, trigger_id), query["limit"], query.get("cursor")))

    @bp.patch("/v1/triggers/<trigger_id>")
    @endpoint("write", body=schemas.TriggerPatch, response=schemas.TriggerView)
    def update_trigger(trigger_id: str, body: dict[str, Any]) -> Response:
        """Enable or disable a trigger."""
        return resource(desk.set_trigger_enabled(trigger_id, body["enabled"], metadata(), if_match()).view())


def unsubscribe_routes(bp: Blueprint, desk: MessageDesk) -> None:
    """/v1/unsubscribe/{token}: the signed link in every marketing message (pages, no token needed)."""

    @bp.get("/v1/unsubscribe/<token>")
    @endpoint(None, query=UnsubscribeQuery, openapi=UNSUBSCRIBE_PAGE)
    def unsubscribe_page(token: str, query: dict[str, Any]) -> Response:
        """The link in every marketing message (no token needed): a page in the contact's language
        asking to confirm; it changes nothing (mail scanners follow links)."""
        try:
            contact_id, channel = desk.unsubscribe_link(token)
        except NotFound:
            return _link_not_valid(query)
        lang = _language(query, desk.contact_variables(contact_id)["locale"])
        return _page(unsubscribe.page("confirm", lang, channel, action=_here()))

    @bp.post("/v1/unsubscribe/<token>")
    @endpoint(None, query=UnsubscribeQuery, openapi=ONE_CLICK)
    def unsubscribe_now(token: str, query: dict[str, Any]) -> Response:
        """One-click unsubscribe (RFC 8058; no token needed, the signed link is the credential):
        withdraws consent for the link's channel in contacts; a repeat is harmless."""
        try:
            contact_id, channel = desk.unsubscribe(token)
        except NotFound:
            return _link_not_valid(query)
        lang = _language(query, desk.contact_variables(contact_id)["locale"])
        return _page(unsubscribe.page("done", lang, channel))


def _history(repository: Repository[Any], record_id: str) -> list[dict[str, Any]]:
    """A record's events as changes (`crmkit.aggregate.changes_by_event`); 404 for an unknown id."""
    return changes_by_event(repository.kind, record_id, repository.history(record_id))


def _public(found: tuple[list[dict[str, Any]], str | None]) -> tuple[list[dict[str, Any]], str | None]:
    """A page of read-model documents as the API shows them: without the store's own key
    (`_id`; each carries its `id`)."""
    items, cursor = found
    return [{key: value for key, value in item.items() if key != "_id"} for item in items], cursor


def _require_contact_access() -> None:
    """A preview with a contact's data shows their name, email and phone: it needs what reading
    the contact needs (`GET /v1/contacts/{id}`), in the same token."""
    if not g.principal.may("contacts", "read"):
        raise Forbidden(
            "a preview with contact_id shows the contact's data: it also needs the role "
            f"{auth.needed_roles('contacts', 'read')}"
        )


def _page(html: str, status: int = 200) -> Response:
    return Response(html, status=status, mimetype="text/html", headers={"Cache-Control": "no-store"})


def _language(query: dict[str, Any], contact_locale: str | None = None) -> PageLanguage:
    return unsubscribe.language(query.get("lang"), contact_locale, request.accept_languages)


def _here() -> str:
    """This page's path with its query (`?lang=`), so the confirmation keeps the reader's language."""
    return request.full_path.rstrip("?")


def _link_not_valid(query: dict[str, Any]) -> Response:
    """A forged, damaged or foreign link: a 404 page in the reader's language, never an error."""
    return _page(unsubscribe.page("bad", _language(query)), 404)


def _campaign_action(desk: MessageDesk, action: str) -> Any:
    @endpoint("write", response=schemas.CampaignView)
    def act(campaign_id: str) -> Response:
        desk.campaign_action(campaign_id, action, metadata(), if_match())
        return resource(desk.campaign(campaign_id))

    act.__doc__ = {
        "pause": "Pause a running campaign.",
        "resume": "Resume a paused campaign.",
        "cancel": "Cancel a campaign; its unsent messages are suppressed.",
    }[action]
    act.__name__ = f"{action}_campaign"
    return act
