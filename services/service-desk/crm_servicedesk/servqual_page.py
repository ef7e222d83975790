"""The SERVQUAL questionnaire a contact reaches from the emailed link (no login).

`GET /v1/surveys/servqual/{token}` shows the survey's statements in two parts, as the
instrument is administered: first what the contact expects of an excellent company of
this kind, then what they perceive of this one, each statement on a 1–7 scale (1 =
strongly disagree, 7 = strongly agree). In English, or in Persian right to left
(`lang="fa" dir="rtl"`, Persian digits on the labels; the values sent stay 1–7), chosen
like the CSAT page (`?lang=`, the contact's locale, Accept-Language, English;
`crmkit.web.locale`). `POST` takes the form (`expectations.q1` … `perceptions.q22`) or
JSON (`{"expectations": {"q1": 6, …}, "perceptions": {…}}`) and records
`ServqualResponseRecorded` with the gaps.

Every statement of the survey must be answered on both sides, a whole number from 1
to 7: a gap needs both answers, and a partly answered questionnaire would make its
dimension means incomparable with the others (an admin shortens the instrument instead,
`PUT /v1/servqual/instrument`). Anything else is a 422 that stores nothing: a problem
naming every missing or bad answer (`expectations.q3`), or for a browser the form again
with the answers given kept and the missing ones marked. The token is a
`crmkit.signing` token of purpose `servqual` carrying `survey_id` and `contact_id`,
minted by messaging when it emails the survey; it works once (a second answer is 409,
"already answered"), forged or foreign 404, expired 410.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from jinja2 import Environment, PackageLoader, select_autoescape
from marshmallow import Schema, fields, validate

from crm_servicedesk.servqual import DIMENSIONS, LIKERT, ServqualSurvey
from crm_servicedesk.servqual_desk import ServqualDesk
from crm_servicedesk.servqual_schemas import PAGE_ANSWER, PAGE_FORM
from crm_servicedesk.survey_api import DIGITS
from crmkit.errors import Conflict, DomainError, NotFound, ValidationFailed
from crmkit.events import Metadata
from crmkit.web import endpoint, jsonable, metadata
from crmkit.web.links import LinkNotValid, open_link
from crmkit.web.locale import PageLanguage, choose
from crmkit.web.problems import status_of

PURPOSE = "servqual"
LANGUAGES = ("en", "fa")  # the first is the default
SIDES = ("expectations", "perceptions")
MAX_ANSWERS = 200  # answers one body may carry on a side (a survey asks at most 22)

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "intro_title": "How good is our service?",
        "intro": "This short questionnaire has two parts. There are no right or wrong answers: we want to "
        "know how you see it.",
        "expectations_title": "Part 1: what you expect",
        "expectations": "Think of excellent companies that offer services like ours. How much do you agree "
        "with each statement?",
        "perceptions_title": "Part 2: what you experience with us",
        "perceptions": "Now think of our company. How much do you agree with each statement?",
        "low": "1 = strongly disagree",
        "high": "7 = strongly agree",
        "answer_this": "Please answer this.",
        "send": "Send",
        "thanks_title": "Thank you",
        "thanks": "Your answers have been recorded. Thank you for your time.",
        "404_title": "Link not valid",
        "404": "This survey link is not valid.",
        "409_title": "Already answered",
        "409": "This survey has already been answered. Thank you.",
        "410_title": "Link expired",
        "410": "This survey link has expired.",
        "422_title": "Please check your answers",
        "422": "Please answer every statement in both parts with a number from 1 to 7; the statements still "
        "to answer are marked.",
        "other_title": "Something went wrong",
        "other": "Please try again later.",
    },
    "fa": {
        "intro_title": "کیفیت خدمات ما چطور است؟",
        "intro": "این پرسش‌نامهٔ کوتاه دو بخش دارد. پاسخ درست یا نادرست وجود ندارد: می‌خواهیم دیدگاه شما را بدانیم.",
        "expectations_title": "بخش ۱: انتظارات شما",
        "expectations": "به شرکت‌های عالی‌ای فکر کنید که خدماتی مانند ما ارائه می‌دهند. چقدر با هر جمله موافقید؟",
        "perceptions_title": "بخش ۲: تجربهٔ شما از ما",
        "perceptions": "اکنون به شرکت ما فکر کنید. چقدر با هر جمله موافقید؟",
        "low": "۱ = کاملاً مخالفم",
        "high": "۷ = کاملاً موافقم",
        "answer_this": "لطفاً به این جمله پاسخ دهید.",
        "send": "ارسال",
        "thanks_title": "سپاسگزاریم",
        "thanks": "پاسخ‌های شما ثبت شد. از وقتی که گذاشتید سپاسگزاریم.",
        "404_title": "پیوند نامعتبر است",
        "404": "این پیوند نظرسنجی معتبر نیست.",
        "409_title": "قبلاً پاسخ داده‌اید",
        "409": "به این نظرسنجی قبلاً پاسخ داده شده است. سپاسگزاریم.",
        "410_title": "پیوند منقضی شده است",
        "410": "مهلت این پیوند نظرسنجی به پایان رسیده است.",
        "422_title": "لطفاً پاسخ‌ها را بررسی کنید",
        "422": "لطفاً به همهٔ جمله‌های هر دو بخش با عددی از ۱ تا ۷ پاسخ دهید؛ جمله‌هایی که هنوز پاسخ "
        "نگرفته‌اند علامت خورده‌اند.",
        "other_title": "مشکلی پیش آمد",
        "other": "لطفاً بعداً دوباره تلاش کنید.",
    },
}


class ServqualPageQuery(Schema):
    lang = fields.String(
        validate=validate.Length(max=35),
        metadata={
            "description": "the page's language (en or fa; fa-IR works too); default the contact's locale, "
            "then Accept-Language, then en"
        },
    )


_env = Environment(loader=PackageLoader("crm_servicedesk", "templates"), autoescape=select_autoescape(default=True))


def survey_for(servqual: ServqualDesk, token: str) -> ServqualSurvey:
    """The survey a valid, unexpired token names, for the contact it was sent to (who is not erased)."""
    survey_id, contact_id = open_link(PURPOSE, token, ("survey_id", "contact_id"), "survey link")
    try:
        survey = servqual.survey(survey_id)
    except NotFound:
        raise LinkNotValid("this survey link is not valid") from None
    contact = servqual.desk.contacts.find([contact_id]).get(contact_id) or {}
    if contact_id != survey.contact_id or contact.get("status") == "erased":
        raise LinkNotValid("this survey link is not valid")
    return survey


def _require_unanswered(survey: ServqualSurvey) -> None:
    if survey.answered_at is not None:
        raise Conflict("this survey has already been answered; thank you")


def page_language(servqual: ServqualDesk, survey: ServqualSurvey | None, explicit: str | None) -> PageLanguage:
    """`?lang=`, else the contact's locale (this service's copy of contacts), else Accept-Language, else en."""
    contact = servqual.desk.contacts.find([survey.contact_id]).get(survey.contact_id) if survey else None
    return choose(LANGUAGES, explicit=explicit, contact=(contact or {}).get("locale"), accept=request.accept_languages)


def _wants_json() -> bool:
    return request.mimetype == "application/json"


def _typed(side: str, answers: Any) -> dict[str, Any]:
    """A JSON side as sent: an object of item → whole number (true, 6.5 or "6" are refused, not coerced)."""
    if not isinstance(answers, dict):
        raise ValidationFailed("the answers are not valid", {side: ["an object: statement id → 1 to 7"]})
    if len(answers) > MAX_ANSWERS:
        raise ValidationFailed("the answers are not valid", {side: [f"at most {MAX_ANSWERS} answers"]})
    return dict(answers)


def _json_answers() -> tuple[dict[str, Any], dict[str, Any]]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object", {"_body": ["must be a JSON object"]})
    unknown = {name: ["unknown field"] for name in body if name not in SIDES}
    if unknown:
        raise ValidationFailed("the answers are not valid", unknown)
    return _typed("expectations", body.get("expectations", {})), _typed("perceptions", body.get("perceptions", {}))


def _form_answers() -> tuple[dict[str, Any], dict[str, Any]]:
    """`expectations.q1=6` … from the form: digits become numbers, blanks are unanswered."""
    sides: dict[str, dict[str, Any]] = {side: {} for side in SIDES}
    for name, raw in request.form.items():
        side, dot, item = name.partition(".")
        value = (raw or "").strip()
        if side in sides and dot and value and len(sides[side]) < MAX_ANSWERS:
            sides[side][item] = int(value) if value.isascii() and value.isdigit() and len(value) < 4 else value
    return sides["expectations"], sides["perceptions"]


def _scale(lang: str) -> list[tuple[int, str]]:
    digits = str.maketrans("0123456789", DIGITS[lang]) if lang in DIGITS else None
    return [(n, str(n).translate(digits) if digits else str(n)) for n in range(LIKERT[0], LIKERT[1] + 1)]


def _form(
    page: PageLanguage,
    survey: ServqualSurvey,
    answers: dict[str, dict[str, Any]] | None = None,
    problems: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The two parts, each with the survey's statements in the scale's order, numbered."""
    digits = str.maketrans("0123456789", DIGITS[page.lang]) if page.lang in DIGITS else None
    parts = []
    for side in SIDES:
        questions = []
        for number, item in enumerate(survey.questions(), start=1):
            name = f"{side}.{item.id}"
            texts = item.expectation if side == "expectations" else item.perception
            questions.append(
                {
                    "name": name,
                    "number": str(number).translate(digits) if digits else str(number),
                    "text": texts.get(page.lang) or texts["en"],
                    "value": (answers or {}).get(side, {}).get(item.id),
                    "problem": name in (problems or {}),
                }
            )
        parts.append({"side": side, "questions": questions})
    return {"parts": parts, "scale": _scale(page.lang)}


def _page(page: PageLanguage, kind: str, status: int, form: dict[str, Any] | None = None) -> Response:
    texts = TEXTS[page.lang]
    html = _env.get_template("servqual_survey.html").render(
        page=page, t=texts, title=texts[f"{kind}_title"], text=texts[kind], form=form
    )
    return Response(html, status=status, mimetype="text/html", headers={"Cache-Control": "no-store"})


def _error_page(page: PageLanguage, error: DomainError) -> Response:
    status = status_of(error)
    kind = str(status) if str(status) in TEXTS["en"] else "other"
    return _page(page, kind, status)


def blueprint(servqual: ServqualDesk) -> Blueprint:
    bp = Blueprint("servicedesk_servqual_page", __name__)

    @bp.get("/v1/surveys/servqual/<token>")
    @endpoint(None, query=ServqualPageQuery, openapi=PAGE_FORM)
    def servqual_form(token: str, query: dict[str, Any]) -> Response:
        """The SERVQUAL questionnaire behind the emailed link (no token needed; the link is signed)."""
        survey: ServqualSurvey | None = None
        try:
            survey = survey_for(servqual, token)
            _require_unanswered(survey)
        except DomainError as error:
            return _error_page(page_language(servqual, survey, query.get("lang")), error)
        page = page_language(servqual, survey, query.get("lang"))
        return _page(page, "intro", 200, form=_form(page, survey))

    @bp.post("/v1/surveys/servqual/<token>")
    @endpoint(None, query=ServqualPageQuery, status=201, openapi=PAGE_ANSWER)
    def servqual_answer(token: str, query: dict[str, Any]) -> Response:
        """Record the answers from the survey link (form or JSON); once, again is 409; incomplete is 422."""
        survey: ServqualSurvey | None = None
        expectations: dict[str, Any] = {}
        perceptions: dict[str, Any] = {}
        try:
            survey = survey_for(servqual, token)
            _require_unanswered(survey)
            expectations, perceptions = _json_answers() if _wants_json() else _form_answers()
            meta = Metadata(actor=f"contact:{survey.contact_id}", correlation_id=metadata().correlation_id)
            answered = servqual.answer(survey.id, expectations, perceptions, meta)
        except DomainError as error:
            if _wants_json():
                raise
            page = page_language(servqual, survey, query.get("lang"))
            if isinstance(error, ValidationFailed) and survey is not None:
                answers = {"expectations": expectations, "perceptions": perceptions}
                return _page(page, "422", 422, form=_form(page, survey, answers, error.errors))
            return _error_page(page, error)
        if _wants_json():
            result = {
                "survey_id": answered.id,
                "status": answered.status,
                "dimension_gaps": {d: (answered.result or {}).get("dimension_gaps", {}).get(d) for d in DIMENSIONS},
                "overall_gap": (answered.result or {}).get("overall_gap"),
            }
            response = jsonify(jsonable(result))
            response.status_code = 201
            return response
        return _page(page_language(servqual, answered, query.get("lang")), "thanks", 201)

    return bp
