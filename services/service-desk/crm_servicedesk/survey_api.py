"""The satisfaction survey a solved ticket's customer reaches from the emailed link (no login).

`GET /v1/surveys/{token}` shows a small form (CSAT 1–5, NPS 0–10, a comment; `dir="auto"`
so Persian or Arabic text reads right); `POST /v1/surveys/{token}` takes the form (or the
same fields as JSON) and records `SatisfactionRated` through the same command as
`POST /v1/tickets/{id}/satisfaction`. The token is a `crmkit.signing` token of purpose
`survey` carrying `ticket_id` and `contact_id`, minted by messaging when the ticket-solved
trigger fires (`crm_messaging.triggers`), with an expiry. The link works once: a ticket is
rated once, so a second answer is a 409 (an "already rated" page for a browser).
"""

from __future__ import annotations

from html import escape
from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import ValidationError as MarshmallowError

from crm_servicedesk import schemas
from crm_servicedesk.commands import TicketDesk
from crm_servicedesk.domain import Ticket
from crmkit import signing
from crmkit.errors import Conflict, DomainError, NotFound, ValidationFailed
from crmkit.events import Metadata
from crmkit.web import endpoint, jsonable, metadata

PURPOSE = "survey"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 3em auto; padding: 0 1em">
<h1 dir="auto">{title}</h1>{content}</body></html>"""

FORM = """<p dir="auto">{intro}</p>
<form method="post" accept-charset="utf-8">
<fieldset><legend>How satisfied are you with how we handled it? (1 = not at all, 5 = very)</legend>
{csat}</fieldset>
<fieldset><legend>How likely are you to recommend us to a friend? (0 = not at all, 10 = extremely)</legend>
{nps}</fieldset>
<p><label for="comment">Anything you would like to tell us?</label><br>
<textarea id="comment" name="comment" dir="auto" rows="5" cols="50" maxlength="5000"></textarea></p>
<p><button type="submit">Send</button></p>
</form>"""


class LinkNotValid(NotFound):
    """Forged, malformed, foreign or for a ticket that is gone: a plain 404."""


class LinkExpired(DomainError):
    status = 410
    title = "Gone"


def _radios(name: str, low: int, high: int, required: bool) -> str:
    need = " required" if required else ""
    return " ".join(f'<label><input type="radio" name="{name}" value="{n}"{need}> {n}</label>'
                    for n in range(low, high + 1))


def ticket_for(desk: TicketDesk, token: str) -> Ticket:
    """The ticket a valid, unexpired survey token names, for the contact it was sent to."""
    try:
        data = signing.verify(PURPOSE, token)
    except signing.BadToken as exc:
        if str(exc) == "expired":
            raise LinkExpired("this survey link has expired") from None
        raise LinkNotValid("this survey link is not valid") from None
    ticket_id, contact_id = data.get("ticket_id"), data.get("contact_id")
    if not isinstance(ticket_id, str) or not isinstance(contact_id, str):
        raise LinkNotValid("this survey link is not valid")
    try:
        ticket = desk.ticket(ticket_id)
    except NotFound:
        raise LinkNotValid("this survey link is not valid") from None
    # the person it was sent to; a merge since then moved the ticket to the survivor
    if contact_id != ticket.contact_id and contact_id not in ticket.previous_contact_ids:
        raise LinkNotValid("this survey link is not valid")
    if contact_id in ticket.erased_contacts:
        raise LinkNotValid("this survey link is not valid")
    return ticket


def _require_unrated(ticket: Ticket) -> None:
    """Single use, said explicitly (the ticket's own rule enforces it under races too)."""
    if ticket.satisfaction is not None:
        raise Conflict("this ticket has already been rated; thank you")


def _wants_json() -> bool:
    return request.mimetype == "application/json"


def _rating(raw: dict[str, Any]) -> dict[str, Any]:
    """Form fields arrive as text: numbers become numbers, blanks become absent."""
    if _wants_json():
        return {k: raw[k] for k in ("csat", "nps", "comment") if k in raw}
    rating: dict[str, Any] = {}
    for name in ("csat", "nps"):
        value = (raw.get(name) or "").strip()
        if value:
            rating[name] = int(value) if value.lstrip("-").isdigit() else value
    if (raw.get("comment") or "").strip():
        rating["comment"] = raw["comment"]
    return rating


def _page(title: str, text: str, status: int) -> Response:
    content = f'<p dir="auto">{escape(text)}</p>'
    return Response(PAGE.format(title=escape(title), content=content), status=status, mimetype="text/html")


def _error_page(error: DomainError) -> Response:
    titles = {404: "Link not valid", 409: "Already rated", 410: "Link expired", 422: "Please check your answers"}
    return _page(titles.get(error.status, "Something went wrong"), str(error.detail), error.status)


def blueprint(desk: TicketDesk) -> Blueprint:
    bp = Blueprint("servicedesk_surveys", __name__)

    @bp.get("/v1/surveys/<token>")
    @endpoint(None)
    def survey_form(token: str) -> Response:
        """The survey page behind the emailed link (no token needed; the link is signed)."""
        try:
            ticket = ticket_for(desk, token)
            _require_unrated(ticket)
        except DomainError as error:
            return _error_page(error)
        del ticket  # the page shows nothing of the request itself: the link may be forwarded
        content = FORM.format(intro="Your request has been solved. Please tell us how we did.",
                              csat=_radios("csat", 1, 5, True), nps=_radios("nps", 0, 10, False))
        return Response(PAGE.format(title="How did we do?", content=content), mimetype="text/html")

    @bp.post("/v1/surveys/<token>")
    @endpoint(None)
    def survey_answer(token: str) -> Response:
        """Record the rating from the survey link (form or JSON `csat`, `nps`, `comment`); once, again is 409."""
        try:
            ticket = ticket_for(desk, token)
            _require_unrated(ticket)
            raw = request.get_json(silent=True) if _wants_json() else request.form.to_dict()
            if not isinstance(raw, dict):
                raise ValidationFailed("the body must be a JSON object", {"_body": ["must be a JSON object"]})
            try:
                rating = schemas.SatisfactionInput().load(_rating(raw))
            except MarshmallowError as exc:
                raise ValidationFailed("the answers are not valid", exc.normalized_messages()) from None
            meta = Metadata(actor=f"contact:{ticket.contact_id}", correlation_id=metadata().correlation_id)
            rated = desk.rate(ticket.id, rating, meta, None)
        except DomainError as error:
            if _wants_json():
                raise
            return _error_page(error)
        if _wants_json():
            answer = jsonify(jsonable({"ticket_id": rated.id, "satisfaction": rated.satisfaction}))
            answer.status_code = 201
            return answer
        return _page("Thank you", "Your answer has been recorded. Thank you for telling us.", 201)

    return bp

