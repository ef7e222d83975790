"""The satisfaction survey a solved ticket's customer reaches from the emailed link (no login).

`GET /v1/surveys/{token}` shows a small form (CSAT 1–5, NPS 0–10, a comment; `dir="auto"`
so Persian or Arabic text reads right) in English, Persian or Arabic (`templates/survey.html`,
`lang` and `dir` from `crmkit.web.locale.choose`: `?lang=`, the contact's locale,
Accept-Language, English); `POST /v1/surveys/{token}` takes the form (or the
same fields as JSON) and records `SatisfactionRated` through the same command as
`POST /v1/tickets/{id}/satisfaction`. The token is a `crmkit.signing` token of purpose
`survey` carrying `ticket_id` and `contact_id`, minted by messaging when the ticket-solved
trigger fires (`crm_messaging.triggers`), with an expiry. The link works once: a ticket is
rated once, so a second answer is a 409 (an "already rated" page for a browser).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from jinja2 import Environment, PackageLoader, select_autoescape
from marshmallow import Schema, fields, validate
from marshmallow import ValidationError as MarshmallowError

from crm_servicedesk import schemas
from crm_servicedesk.commands import TicketDesk
from crm_servicedesk.domain import Ticket
from crmkit.errors import Conflict, DomainError, NotFound, ValidationFailed
from crmkit.events import Metadata
from crmkit.web import endpoint, jsonable, metadata
from crmkit.web.links import LinkNotValid, open_link
from crmkit.web.locale import PageLanguage, choose
from crmkit.web.problems import status_of

PURPOSE = "survey"

LANGUAGES = ("en", "fa", "ar")  # the first is the default
DIGITS = {"fa": "۰۱۲۳۴۵۶۷۸۹"}  # the scores' labels in the reader's digits (the values stay 0-9)
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "intro_title": "How did we do?",
        "intro": "Your request has been solved. Please tell us how we did.",
        "csat": "How satisfied are you with how we handled it? (1 = not at all, 5 = very)",
        "nps": "How likely are you to recommend us to a friend? (0 = not at all, 10 = extremely)",
        "comment": "Anything you would like to tell us?",
        "send": "Send",
        "thanks_title": "Thank you",
        "thanks": "Your answer has been recorded. Thank you for telling us.",
        "404_title": "Link not valid",
        "404": "This survey link is not valid.",
        "409_title": "Already rated",
        "409": "This request has already been rated. Thank you.",
        "410_title": "Link expired",
        "410": "This survey link has expired.",
        "422_title": "Please check your answers",
        "422": "Please choose a satisfaction score from 1 to 5; the recommendation score (0 to 10) is optional.",
        "other_title": "Something went wrong",
        "other": "Please try again later.",
    },
    "fa": {
        "intro_title": "کار ما چطور بود؟",
        "intro": "درخواست شما رسیدگی شد. لطفاً بگویید کار ما چطور بود.",
        "csat": "چقدر از نحوهٔ رسیدگی ما راضی هستید؟ (۱ = اصلاً، ۵ = بسیار)",
        "nps": "چقدر احتمال دارد ما را به یک دوست پیشنهاد کنید؟ (۰ = اصلاً، ۱۰ = حتماً)",
        "comment": "چیزی هست که بخواهید به ما بگویید؟",
        "send": "ارسال",
        "thanks_title": "سپاسگزاریم",
        "thanks": "پاسخ شما ثبت شد. از اینکه نظرتان را گفتید سپاسگزاریم.",
        "404_title": "پیوند نامعتبر است",
        "404": "این پیوند نظرسنجی معتبر نیست.",
        "409_title": "قبلاً امتیاز داده‌اید",
        "409": "به این درخواست قبلاً امتیاز داده شده است. سپاسگزاریم.",
        "410_title": "پیوند منقضی شده است",
        "410": "مهلت این پیوند نظرسنجی به پایان رسیده است.",
        "422_title": "لطفاً پاسخ‌ها را بررسی کنید",
        "422": "لطفاً میزان رضایت را از ۱ تا ۵ انتخاب کنید؛ امتیاز پیشنهاد (۰ تا ۱۰) اختیاری است.",
        "other_title": "مشکلی پیش آمد",
        "other": "لطفاً بعداً دوباره تلاش کنید.",
    },
    "ar": {
        "intro_title": "كيف كان أداؤنا؟",
        "intro": "تم حل طلبك. يرجى إخبارنا بتقييمك لأدائنا.",
        "csat": "ما مدى رضاك عن طريقة معالجتنا لطلبك؟ (1 = غير راضٍ إطلاقًا، 5 = راضٍ جدًا)",
        "nps": "ما مدى احتمال أن توصي بنا لصديق؟ (0 = غير محتمل إطلاقًا، 10 = محتمل جدًا)",
        "comment": "هل هناك ما تود إخبارنا به؟",
        "send": "إرسال",
        "thanks_title": "شكرًا لك",
        "thanks": "تم تسجيل إجابتك. شكرًا لمشاركتنا رأيك.",
        "404_title": "الرابط غير صالح",
        "404": "رابط الاستبيان هذا غير صالح.",
        "409_title": "تم التقييم مسبقًا",
        "409": "تم تقييم هذا الطلب مسبقًا. شكرًا لك.",
        "410_title": "انتهت صلاحية الرابط",
        "410": "انتهت صلاحية رابط الاستبيان هذا.",
        "422_title": "يرجى مراجعة إجاباتك",
        "422": "يرجى اختيار درجة الرضا من 1 إلى 5؛ درجة التوصية (0 إلى 10) اختيارية.",
        "other_title": "حدث خطأ ما",
        "other": "يرجى المحاولة مرة أخرى لاحقًا.",
    },
}

_env = Environment(loader=PackageLoader("crm_servicedesk", "templates"), autoescape=select_autoescape(default=True))


class SurveyQuery(Schema):
    lang = fields.String(
        validate=validate.Length(max=35),
        metadata={
            "description": "the page's language (en, fa or ar; fa-IR works too); default the contact's locale, "
            "then Accept-Language, then en"
        },
    )


def _scores(lang: str, low: int, high: int) -> list[tuple[int, str]]:
    """(value, label) of each radio button, the label in the reader's digits."""
    digits = str.maketrans("0123456789", DIGITS[lang]) if lang in DIGITS else None
    return [(n, str(n).translate(digits) if digits else str(n)) for n in range(low, high + 1)]


def ticket_for(desk: TicketDesk, token: str) -> Ticket:
    """The ticket a valid, unexpired survey token names, for the contact it was sent to."""
    ticket_id, contact_id = open_link(PURPOSE, token, ("ticket_id", "contact_id"), "survey link")
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


def page_language(desk: TicketDesk, ticket: Ticket | None, explicit: str | None) -> PageLanguage:
    """`?lang=`, else the contact's locale (this service's copy of contacts), else Accept-Language, else en."""
    contact = desk.contacts.find([ticket.contact_id]).get(ticket.contact_id) if ticket and ticket.contact_id else None
    return choose(LANGUAGES, explicit=explicit, contact=(contact or {}).get("locale"), accept=request.accept_languages)


def _page(page: PageLanguage, kind: str, status: int, form: bool = False) -> Response:
    texts = TEXTS[page.lang]
    scores = {"csat": _scores(page.lang, 1, 5), "nps": _scores(page.lang, 0, 10)} if form else None
    html = _env.get_template("survey.html").render(
        page=page, t=texts, title=texts[f"{kind}_title"], text=texts[kind], form=scores
    )
    return Response(html, status=status, mimetype="text/html", headers={"Cache-Control": "no-store"})


def _error_page(page: PageLanguage, error: DomainError) -> Response:
    status = status_of(error)
    kind = str(status) if str(status) in TEXTS["en"] else "other"
    return _page(page, kind, status)


def blueprint(desk: TicketDesk) -> Blueprint:
    bp = Blueprint("servicedesk_surveys", __name__)

    @bp.get("/v1/surveys/<token>")
    @endpoint(None, query=SurveyQuery, openapi=schemas.SURVEY_FORM)
    def survey_form(token: str, query: dict[str, Any]) -> Response:
        """The survey page behind the emailed link (no token needed; the link is signed), in the contact's language."""
        ticket: Ticket | None = None
        try:
            ticket = ticket_for(desk, token)
            _require_unrated(ticket)
        except DomainError as error:
            return _error_page(page_language(desk, ticket, query.get("lang")), error)
        # the page shows nothing of the request itself: the link may be forwarded
        return _page(page_language(desk, ticket, query.get("lang")), "intro", 200, form=True)

    @bp.post("/v1/surveys/<token>")
    @endpoint(None, query=SurveyQuery, status=201, openapi=schemas.SURVEY_ANSWER)  # no 200: a rating is created
    def survey_answer(token: str, query: dict[str, Any]) -> Response:
        """Record the rating from the survey link (form or JSON `csat`, `nps`, `comment`); once, again is 409."""
        ticket: Ticket | None = None
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
            return _error_page(page_language(desk, ticket, query.get("lang")), error)
        if _wants_json():
            answer = jsonify(jsonable({"ticket_id": rated.id, "satisfaction": rated.satisfaction}))
            answer.status_code = 201
            return answer
        return _page(page_language(desk, rated, query.get("lang")), "thanks", 201)

    return bp
