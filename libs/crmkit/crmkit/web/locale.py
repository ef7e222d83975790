"""Which language a page for people is shown in, and which way it is written.

Every service renders a few HTML pages for customers (sales' printable quote, the service
desk's satisfaction survey, messaging's unsubscribe page), each with its own texts. They
all pick the language the same way, so it lives here, and only that: the texts and the
formatting stay with the page that needs them.

The choice, first that applies: the reader's explicit `?lang=` (someone the link was
forwarded to may not read the contact's language), the contact's `locale`, the browser's
`Accept-Language`, then the page's default (its first supported language). A tag is
matched by its primary language, so `fa-IR` picks `fa`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from werkzeug.datastructures import LanguageAccept

# Scripts written right to left (BCP 47 primary subtags): Persian, Arabic, Hebrew, Urdu,
# Pashto, Sorani Kurdish, Yiddish, Dhivehi, Sindhi, Uyghur.
RTL_LANGUAGES = frozenset({"fa", "ar", "he", "ur", "ps", "ckb", "yi", "dv", "sd", "ug"})


def primary(tag: str | None) -> str:
    """The primary language subtag, lower case: `fa-IR` → `fa`, `pt_BR` → `pt`, None → ``."""
    return (tag or "").strip().replace("_", "-").split("-")[0].lower()


def direction(tag: str | None) -> str:
    """`rtl` for a right-to-left language, else `ltr` (the value of an HTML `dir` attribute)."""
    return "rtl" if primary(tag) in RTL_LANGUAGES else "ltr"


@dataclass(frozen=True)
class PageLanguage:
    """What a page's `<html lang=… dir=…>` says."""

    lang: str
    dir: str


def choose(
    supported: Sequence[str],
    *,
    explicit: str | None = None,
    contact: str | None = None,
    accept: LanguageAccept | None = None,
) -> PageLanguage:
    """The first of `explicit`, `contact`, `accept` that names a `supported` language, else `supported[0]`."""
    for tag in (explicit, contact):
        if primary(tag) in supported:
            return _page(primary(tag))
    for tag, _quality in accept or ():  # best first; `ar-SA` counts as `ar`, ahead of a lesser exact `en`
        if primary(tag) in supported:
            return _page(primary(tag))
    return _page(supported[0])


def _page(language: str) -> PageLanguage:
    return PageLanguage(language, direction(language))
