"""Unsubscribe links: the chassis' signed tokens (`crmkit.signing`) of purpose "unsubscribe",
and the pages behind them (`pages/unsubscribe.html`) in English, Persian or Arabic, with
`lang` and `dir` from `crmkit.web.locale.choose`: `?lang=`, the contact's locale,
Accept-Language, then English.

A token names a contact and a channel, and nothing personal; it does not expire (a
person may use an old mail's link). The key is derived from the link secret (crmkit.keys).
"""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, select_autoescape
from werkzeug.datastructures import LanguageAccept

from crmkit import signing
from crmkit.web.locale import PageLanguage, choose

PURPOSE = "unsubscribe"
BadToken = signing.BadToken


def sign(secret: str, contact_id: str, channel: str) -> str:
    return signing.sign(PURPOSE, {"c": contact_id, "ch": channel}, secret=secret)


def verify(secret: str, token: str) -> tuple[str, str]:
    """(contact_id, channel) from a token we signed; BadToken otherwise."""
    data = signing.verify(PURPOSE, token, secret=secret)
    try:
        return str(data["c"]), str(data["ch"])
    except KeyError as exc:
        raise BadToken("malformed token") from exc


# --- the pages behind the link ---------------------------------------------------------
# GET shows a confirmation form and changes nothing (mail scanners and link previews follow
# links); the form, and a mail client's one-click request (RFC 8058), POST to the same URL.

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "confirm_title": "Unsubscribe",
        "confirm": "Stop receiving {channel} messages from us?",
        "button": "Unsubscribe",
        "done_title": "You are unsubscribed",
        "done": "You will no longer receive {channel} messages from us.",
        "bad_title": "Link not valid",
        "bad": "This unsubscribe link is not valid.",
        "email": "email",
        "sms": "SMS",
        "fax": "fax",
    },
    "fa": {
        "confirm_title": "لغو اشتراک",
        "confirm": "آیا می‌خواهید دیگر پیام‌های {channel} ما را دریافت نکنید؟",
        "button": "لغو اشتراک",
        "done_title": "اشتراک شما لغو شد",
        "done": "از این پس پیام‌های {channel} ما برای شما فرستاده نمی‌شود.",
        "bad_title": "پیوند نامعتبر است",
        "bad": "این پیوند لغو اشتراک معتبر نیست.",
        "email": "ایمیل",
        "sms": "پیامکی",
        "fax": "فکس",
    },
    "ar": {
        "confirm_title": "إلغاء الاشتراك",
        "confirm": "هل تريد التوقف عن تلقي رسائل {channel} منا؟",
        "button": "إلغاء الاشتراك",
        "done_title": "تم إلغاء اشتراكك",
        "done": "لن تتلقى رسائل {channel} منا بعد الآن.",
        "bad_title": "الرابط غير صالح",
        "bad": "رابط إلغاء الاشتراك هذا غير صالح.",
        "email": "البريد الإلكتروني",
        "sms": "الرسائل النصية",
        "fax": "الفاكس",
    },
}
LANGUAGES = tuple(TEXTS)  # the first is the default

_env = Environment(loader=PackageLoader("crm_messaging", "pages"), autoescape=select_autoescape(default=True))


def language(explicit: str | None, contact_locale: str | None, accept: LanguageAccept | None) -> PageLanguage:
    """The page's language and direction: `?lang=`, the contact's locale, Accept-Language, English."""
    return choose(LANGUAGES, explicit=explicit, contact=contact_locale, accept=accept)


def page(kind: str, lang: PageLanguage, channel: str = "", action: str | None = None) -> str:
    """The HTML of a page: `confirm` (with the form posting to `action`), `done` or `bad`."""
    texts = TEXTS[lang.lang]
    return _env.get_template("unsubscribe.html").render(
        page=lang,
        title=texts[f"{kind}_title"],
        text=texts[kind].format(channel=texts.get(channel, channel)),
        button=texts["button"],
        action=action if kind == "confirm" else None,
    )
