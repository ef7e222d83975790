"""The page where a contact confirms (or corrects) their details, reached from the emailed link (no login).

Messaging's trigger on `ContactBecameStale` (crm_messaging.triggers, `trg-contact-stale-confirm`)
sends a link `<CRM_DETAILS_URL_BASE>/v1/confirmations/<token>`: a `crmkit.signing` token of
purpose `confirm-details` carrying the contact id (`c`) and the stale flag it answers (`s`, the
event's `since`), valid 30 days. `GET` shows the name, email and phone on record in a form
(English, Persian or Arabic, `lang`/`dir` from `crmkit.web.locale.choose`: `?lang=`, the
contact's locale, Accept-Language, English); it changes nothing (mail scanners follow links).
`POST` takes the form (or the same fields as JSON; a field left out stays, a blank one is
cleared) and records the corrections (`ContactUpdated`) and the confirmation
(`ContactDetailsVerified`, source `contact`), which clears the stale flag.

The link works while the flag it was sent for stands: once the details are confirmed (through
it, or by staff), it answers 409 "already confirmed". The page shows the details on record,
which a link must, so it carries no referrer and is never cached; the link is the person's own
and expires. A merged or erased contact's link is not valid (404).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from jinja2 import Environment, PackageLoader, select_autoescape
from marshmallow import RAISE, Schema, fields, validate
from marshmallow import ValidationError as MarshmallowError

from crm_contacts.records.commands import ContactBook
from crm_contacts.records.domain import IDENTIFYING, Contact
from crm_contacts.records.freshness import LINK_PURPOSE
from crm_contacts.records.schemas import Email, Phone, Text
from crmkit import clock
from crmkit.errors import Conflict, DomainError, NotFound, ValidationFailed
from crmkit.events import Metadata
from crmkit.web import endpoint, metadata
from crmkit.web.links import LinkNotValid, open_link
from crmkit.web.locale import PageLanguage, choose
from crmkit.web.problems import status_of

LANGUAGES = ("en", "fa", "ar")  # the first is the default
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "intro_title": "Are your details still right?",
        "intro": "Please check the details we hold about you, correct anything that has changed, and confirm.",
        "first_name": "First name",
        "last_name": "Last name",
        "email": "Email",
        "phone": "Phone",
        "send": "Confirm my details",
        "thanks_title": "Thank you",
        "thanks": "Your details are confirmed. Thank you for keeping them current.",
        "404_title": "Link not valid",
        "404": "This link is not valid.",
        "409_title": "Already confirmed",
        "409": "Your details have already been confirmed. Thank you.",
        "410_title": "Link expired",
        "410": "This link has expired.",
        "422_title": "Please check your details",
        "422": "Some details could not be accepted:",
        "other_title": "Something went wrong",
        "other": "Please try again later.",
    },
    "fa": {
        "intro_title": "آیا مشخصات شما هنوز درست است؟",
        "intro": "لطفاً مشخصاتی را که از شما داریم بررسی کنید، هر چه تغییر کرده را اصلاح و سپس تأیید کنید.",
        "first_name": "نام",
        "last_name": "نام خانوادگی",
        "email": "ایمیل",
        "phone": "تلفن",
        "send": "تأیید مشخصات",
        "thanks_title": "سپاسگزاریم",
        "thanks": "مشخصات شما تأیید شد. از اینکه آن را به‌روز نگه می‌دارید سپاسگزاریم.",
        "404_title": "پیوند نامعتبر است",
        "404": "این پیوند معتبر نیست.",
        "409_title": "قبلاً تأیید شده است",
        "409": "مشخصات شما قبلاً تأیید شده است. سپاسگزاریم.",
        "410_title": "پیوند منقضی شده است",
        "410": "مهلت این پیوند به پایان رسیده است.",
        "422_title": "لطفاً مشخصات را بررسی کنید",
        "422": "برخی از مشخصات پذیرفته نشد:",
        "other_title": "مشکلی پیش آمد",
        "other": "لطفاً بعداً دوباره تلاش کنید.",
    },
    "ar": {
        "intro_title": "هل ما زالت بياناتك صحيحة؟",
        "intro": "يرجى مراجعة البيانات التي نحتفظ بها عنك، وتصحيح ما تغيّر منها، ثم التأكيد.",
        "first_name": "الاسم الأول",
        "last_name": "اسم العائلة",
        "email": "البريد الإلكتروني",
        "phone": "الهاتف",
        "send": "تأكيد بياناتي",
        "thanks_title": "شكرًا لك",
        "thanks": "تم تأكيد بياناتك. شكرًا لإبقائها محدّثة.",
        "404_title": "الرابط غير صالح",
        "404": "هذا الرابط غير صالح.",
        "409_title": "تم التأكيد مسبقًا",
        "409": "تم تأكيد بياناتك مسبقًا. شكرًا لك.",
        "410_title": "انتهت صلاحية الرابط",
        "410": "انتهت صلاحية هذا الرابط.",
        "422_title": "يرجى مراجعة بياناتك",
        "422": "تعذّر قبول بعض البيانات:",
        "other_title": "حدث خطأ ما",
        "other": "يرجى المحاولة مرة أخرى لاحقًا.",
    },
}

_env = Environment(loader=PackageLoader("crm_contacts.records", "pages"), autoescape=select_autoescape(default=True))


class LinkQuery(Schema):
    lang = fields.String(
        validate=validate.Length(max=35),
        metadata={
            "description": "the page's language (en, fa or ar; fa-IR works too); default the contact's locale, "
            "then Accept-Language, then en"
        },
    )


class ConfirmationInput(Schema):
    """The details as the person confirms them: a field left out stays, a blank or null one is cleared."""

    class Meta:
        unknown = RAISE

    first_name = Text(100)
    last_name = Text(100)
    email = Email()
    phone = Phone()


class ConfirmedView(Schema):
    contact_id = fields.String()
    verified_at = fields.String()
    changed = fields.List(
        fields.String(metadata={"enum": list(IDENTIFYING)}), metadata={"description": "the fields the person corrected"}
    )


HTML = {"text/html": {"schema": {"type": "string"}}}
PROBLEM = {"application/problem+json": {"schema": "Problem"}}
TITLES = {
    404: "Link not valid",
    409: "Already confirmed",
    410: "Link expired",
    422: "Some details could not be accepted",
}


def _pages(*statuses: int, problems: bool = False) -> dict[str, Any]:
    """The link's error pages; with `problems`, a JSON request gets a problem instead."""
    return {
        str(status): {"description": TITLES[status], "content": {**HTML, **(PROBLEM if problems else {})}}
        for status in statuses
    }


FORM_FIELDS = {
    name: {"type": "string", "maxLength": length}
    for name, length in (("first_name", 100), ("last_name", 100), ("email", 254), ("phone", 40))
}
CONFIRMATION_FORM = {
    "responses": {
        "200": {"description": "The details on record, in a form to confirm", "content": HTML},
        **_pages(404, 409, 410),
    }
}
CONFIRMATION_ANSWER = {
    "requestBody": {
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": FORM_FIELDS}},
            "application/json": {"schema": ConfirmationInput},
        },
    },
    "responses": {
        "200": {
            "description": "Confirmed: a thank-you page, or (JSON) what was recorded",
            "content": {**HTML, "application/json": {"schema": ConfirmedView}},
        },
        **_pages(404, 409, 410, 422, problems=True),
    },
}


class AlreadyConfirmed(Conflict):
    """The stale flag the link was sent for no longer stands: the details were confirmed since."""


def contact_for(book: ContactBook, token: str) -> tuple[Contact, str]:
    """The contact a valid, unexpired link names, and the stale flag (`since`) it was sent for
    (whether that flag still stands is `_require_unconfirmed`'s, so its page is in their language)."""
    contact_id, since = open_link(LINK_PURPOSE, token, ("c", "s"))
    try:
        contact = book.contacts.get(contact_id)
    except NotFound:
        raise LinkNotValid("this link is not valid") from None
    if contact.status != "active":
        raise LinkNotValid("this link is not valid")
    return contact, since


def _require_unconfirmed(contact: Contact, since: str) -> None:
    if not contact.stale or contact.stale_since != since:
        raise AlreadyConfirmed("these details have already been confirmed; thank you")


def _wants_json() -> bool:
    return request.mimetype == "application/json"


def _submitted() -> dict[str, Any]:
    """The body: JSON as sent (unknown fields are refused), or the form's four fields as typed."""
    if _wants_json():
        raw = request.get_json(silent=True)
        if not isinstance(raw, dict):
            raise ValidationFailed("the body must be a JSON object", {"_body": ["must be a JSON object"]})
        return raw
    form = request.form.to_dict()
    return {name: form[name] for name in IDENTIFYING if name in form}


def _load(raw: dict[str, Any]) -> dict[str, Any]:
    try:
        return ConfirmationInput().load(raw)
    except MarshmallowError as exc:
        raise ValidationFailed("some details are not valid", exc.normalized_messages()) from None


def _language(contact: Contact | None, explicit: str | None) -> PageLanguage:
    return choose(
        LANGUAGES, explicit=explicit, contact=contact.locale if contact else None, accept=request.accept_languages
    )


def _page(
    lang: PageLanguage,
    kind: str,
    status: int,
    form: dict[str, Any] | None = None,
    problems: dict[str, Any] | None = None,
) -> Response:
    texts = TEXTS[lang.lang]
    listed = sorted(
        (field, messages if isinstance(messages, list) else [str(messages)])
        for field, messages in (problems or {}).items()
    )
    html = _env.get_template("confirm.html").render(
        page=lang, t=texts, title=texts[f"{kind}_title"], text=texts[kind], form=form, problems=listed
    )
    return Response(
        html,
        status=status,
        mimetype="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _error_page(lang: PageLanguage, error: DomainError, form: dict[str, Any] | None = None) -> Response:
    status = status_of(error)
    kind = str(status) if str(status) in TEXTS["en"] else "other"
    if status == 422:
        return _page(lang, kind, 422, form=form, problems=error.errors)
    return _page(lang, kind, status)


def blueprint(book: ContactBook) -> Blueprint:
    bp = Blueprint("confirmations", __name__)

    @bp.get("/v1/confirmations/<token>")
    @endpoint(None, query=LinkQuery, openapi=CONFIRMATION_FORM)
    def confirmation_form(token: str, query: dict[str, Any]) -> Response:
        """The page behind the emailed link (no token needed; the link is signed): the details on record, to confirm."""
        contact: Contact | None = None
        try:
            contact, since = contact_for(book, token)
            _require_unconfirmed(contact, since)
        except DomainError as error:
            return _error_page(_language(contact, query.get("lang")), error)
        details = {name: getattr(contact, name) for name in IDENTIFYING}
        return _page(_language(contact, query.get("lang")), "intro", 200, form=details)

    @bp.post("/v1/confirmations/<token>")
    @endpoint(None, query=LinkQuery, openapi=CONFIRMATION_ANSWER)
    def confirm_details(token: str, query: dict[str, Any]) -> Response:
        """Confirm the details from the link (form or JSON `first_name`, `last_name`, `email`, `phone`: corrections)."""
        contact: Contact | None = None
        raw: dict[str, Any] = {}
        try:
            contact, since = contact_for(book, token)
            _require_unconfirmed(contact, since)
            raw = _submitted()
            corrections = _load(raw)
            changed: list[list[str]] = []

            def confirm(fresh: Contact) -> None:
                _require_unconfirmed(fresh, since)  # a confirmation that raced this one wins
                changed.append(fresh.confirm_details(corrections, clock.now()))

            meta = Metadata(actor=f"contact:{contact.id}", correlation_id=metadata().correlation_id)
            confirmed = book.contacts.change(contact.id, confirm, meta)
        except DomainError as error:
            if _wants_json():
                raise
            shown = {name: raw.get(name, getattr(contact, name, None)) for name in IDENTIFYING}
            refill = contact is not None and isinstance(error, ValidationFailed)
            return _error_page(_language(contact, query.get("lang")), error, form=shown if refill else None)
        if _wants_json():
            return jsonify({"contact_id": confirmed.id, "verified_at": confirmed.verified_at, "changed": changed[-1]})
        return _page(_language(confirmed, query.get("lang")), "thanks", 200)

    return bp
