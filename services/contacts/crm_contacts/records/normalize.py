"""Normalisation of the identifiers people are found and matched by.

Pure functions, used on the write side (what is stored) and the read side (what is
searched), so a search for "علي" finds "علی" and "ALI@Example.com " is "ali@example.com".
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

# Arabic code points and the Persian letters people type for the same sound/shape.
LETTER_VARIANTS = str.maketrans(
    {
        "\u064a": "\u06cc",  # ي Arabic yeh → ی Persian yeh
        "\u0649": "\u06cc",  # ى alef maksura → ی
        "\u0643": "\u06a9",  # ك Arabic kaf → ک keheh
        "\u0629": "\u0647",  # ة teh marbuta → ه
        "\u0623": "\u0627",  # أ → ا
        "\u0625": "\u0627",  # إ → ا
        "\u0622": "\u0627",  # آ → ا
        "\u0671": "\u0627",  # ٱ → ا
        "\u0624": "\u0648",  # ؤ → و
        "\u0626": "\u06cc",  # ئ → ی
        "\u06c0": "\u0647",  # ۀ → ه
        "\u200c": " ",  # zero-width non-joiner separates word parts: treat as a space
        "\u0640": None,  # tatweel (kashida) is decoration
    }
)
ARABIC_MARKS = re.compile("[\u064b-\u065f\u0670\u06d6-\u06ed]")  # harakat and Quranic marks
SPACES = re.compile(r"\s+")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def fold(text: str) -> str:
    """A matching key for names: letter variants unified, marks dropped, case folded.

    Persian and Arabic digits become ASCII through NFKC, so "۰۹۱۲" matches "0912".
    """
    text = unicodedata.normalize("NFKC", text).translate(LETTER_VARIANTS)
    text = ARABIC_MARKS.sub("", text)
    text = "".join(str(unicodedata.digit(ch)) if ch.isdigit() else ch for ch in text)
    return SPACES.sub(" ", text).strip().casefold()


def email(text: str) -> str:
    """Lower-cased, trimmed address; raises ValueError if it is not one."""
    value = unicodedata.normalize("NFKC", text).strip().lower()
    if len(value) > 254 or not EMAIL.match(value):
        raise ValueError("not a valid email address")
    return value


def phone(text: str, default_region: str | None = None) -> str:
    """E.164 (+989121234567); raises ValueError if it is not a possible, valid number."""
    try:
        parsed = phonenumbers.parse(fold(text), default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number (use +<country code><number>)") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def terms(*values: str | None) -> list[str]:
    """Search terms for a record: folded words of every value, without repeats."""
    seen: dict[str, None] = {}
    for value in values:
        if value:
            for word in fold(value).replace("@", " ").split(" "):
                if word:
                    seen[word] = None
    return list(seen)
