"""Unsubscribe links: the chassis' signed tokens (`crmkit.signing`) of purpose "unsubscribe",
and the pages behind them in the contact's language.

A token names a contact and a channel, and nothing personal; it does not expire (a
person may use an old mail's link). The key is derived from the link secret (crmkit.keys).
"""

from __future__ import annotations

from html import escape

from crmkit import signing

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

PAGE = """<!doctype html>
<html lang="{lang}" dir="{dir}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="robots" content="noindex">
<title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 4em auto">
<h1>{title}</h1><p>{text}</p>{form}</body></html>"""
FORM = ('<form method="post" action="{action}"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">{button}</button></form>')
RIGHT_TO_LEFT = frozenset({"fa", "ar"})
TEXTS: dict[str, dict[str, str]] = {
    "en": {"confirm_title": "Unsubscribe", "confirm": "Stop receiving {channel} messages from us?",
           "button": "Unsubscribe", "done_title": "You are unsubscribed",
           "done": "You will no longer receive {channel} messages from us.",
           "bad_title": "Link not valid", "bad": "This unsubscribe link is not valid.",
           "email": "email", "sms": "SMS", "fax": "fax"},
    "fa": {"confirm_title": "لغو اشتراک", "confirm": "آیا می‌خواهید دیگر پیام‌های {channel} ما را دریافت نکنید؟",
           "button": "لغو اشتراک", "done_title": "اشتراک شما لغو شد",
           "done": "از این پس پیام‌های {channel} ما برای شما فرستاده نمی‌شود.",
           "bad_title": "پیوند نامعتبر است", "bad": "این پیوند لغو اشتراک معتبر نیست.",
           "email": "ایمیل", "sms": "پیامکی", "fax": "فکس"},
    "ar": {"confirm_title": "إلغاء الاشتراك", "confirm": "هل تريد التوقف عن تلقي رسائل {channel} منا؟",
           "button": "إلغاء الاشتراك", "done_title": "تم إلغاء اشتراكك",
           "done": "لن تتلقى رسائل {channel} منا بعد الآن.",
           "bad_title": "الرابط غير صالح", "bad": "رابط إلغاء الاشتراك هذا غير صالح.",
           "email": "البريد الإلكتروني", "sms": "الرسائل النصية", "fax": "الفاكس"},
}
LANGUAGES = tuple(TEXTS)


def language(locale: str | None) -> str:
    """The page language for a contact's locale (`fa-IR` → `fa`); English when we have no text for it."""
    chosen = (locale or "").split("-")[0].lower()
    return chosen if chosen in TEXTS else "en"


def page(kind: str, lang: str, channel: str = "", action: str | None = None) -> str:
    """The HTML of a page: `confirm` (with the form posting to `action`), `done` or `bad`."""
    texts = TEXTS[lang]
    form = FORM.format(action=escape(action or ""), button=escape(texts["button"])) if kind == "confirm" else ""
    return PAGE.format(lang=lang, dir="rtl" if lang in RIGHT_TO_LEFT else "ltr", title=escape(texts[f"{kind}_title"]),
                       text=escape(texts[kind].format(channel=texts.get(channel, channel))), form=form)
