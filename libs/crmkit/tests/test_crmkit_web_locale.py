"""crmkit.web.locale: a page's language and direction, the same rule in every service."""

from __future__ import annotations

from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

from crmkit.web.locale import PageLanguage, choose, direction, primary

PAGES = ("en", "fa", "ar")


def accept(header: str) -> LanguageAccept:
    return parse_accept_header(header, LanguageAccept)


def test_primary_and_direction() -> None:
    assert primary("fa-IR") == "fa" and primary("pt_BR") == "pt" and primary(" AR ") == "ar" and primary(None) == ""
    assert [direction(t) for t in ("fa-IR", "ar", "he", "ur-PK", "en", "de-DE", None, "")] == [
        "rtl",
        "rtl",
        "rtl",
        "rtl",
        "ltr",
        "ltr",
        "ltr",
        "ltr",
    ]


def test_explicit_then_contact_then_browser_then_default() -> None:
    assert choose(PAGES, explicit="ar", contact="fa-IR", accept=accept("en")) == PageLanguage("ar", "rtl")
    assert choose(PAGES, explicit="de", contact="fa-IR", accept=accept("en")) == PageLanguage("fa", "rtl")
    assert choose(PAGES, contact="de-DE", accept=accept("ar-SA,en;q=0.5")) == PageLanguage("ar", "rtl")
    assert choose(PAGES, contact=None, accept=accept("de, fr;q=0.8")) == PageLanguage("en", "ltr")
    assert choose(PAGES) == PageLanguage("en", "ltr")
    assert choose(("fa", "en")) == PageLanguage("fa", "rtl")  # a page's default is its first language
