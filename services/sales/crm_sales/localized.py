"""Amounts and dates as a customer reads them, in the quote's locale.

Babel (CLDR) gives each locale its grouping, decimal sign, currency name and date
patterns. Two things it does not do, done here:

- digits: Babel switches the separators to a locale's numbering system but still writes
  Latin digits, so for a locale whose default system is not `latn` (Persian: `arabext`,
  ۰–۹) the digits are transliterated. Arabic's CLDR default is `latn`, so it keeps 0–9.
- the calendar: Persian readers date documents in the Solar Hijri (Jalali) calendar
  (`jdatetime`), e.g. ۱۴۰۳/۰۵/۱۳ for 2024-08-03; every other locale gets the Gregorian
  date in its own long form ("August 3, 2024").

A locale Babel does not know falls back to its language, then to English: a page never
fails because of a stored locale.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import jdatetime
from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal

DIGITS = {"arabext": "۰۱۲۳۴۵۶۷۸۹", "arab": "٠١٢٣٤٥٦٧٨٩"}
JALALI_LANGUAGES = frozenset({"fa"})


def locale_of(tag: str | None) -> Locale:
    """The Babel locale for a BCP 47 tag (`fa-IR`), else its language (`fa`), else English."""
    for candidate in ((tag or "").replace("-", "_"), (tag or "").replace("-", "_").split("_")[0]):
        if not candidate:
            continue
        try:
            return Locale.parse(candidate)
        except (UnknownLocaleError, ValueError, TypeError):
            continue
    return Locale.parse("en")


class Formatter:
    """Numbers, money and dates for one locale."""

    def __init__(self, tag: str | None) -> None:
        self.locale = locale_of(tag)
        self.numbering = self.locale.default_numbering_system or "latn"
        if self.numbering not in self.locale.number_symbols:
            self.numbering = "latn"
        self._digits = str.maketrans("0123456789", DIGITS[self.numbering]) if self.numbering in DIGITS else None

    def digits(self, text: str) -> str:
        """`text` with its Latin digits in the locale's own (Persian ۰–۹ for fa)."""
        return text.translate(self._digits) if self._digits else text

    def number(self, value: str | Decimal | None) -> str:
        """A quantity or percentage, grouped, without trailing zeros (`1,500.5`)."""
        if value is None or value == "":
            return ""
        return self.digits(
            format_decimal(
                Decimal(value), locale=self.locale, numbering_system=self.numbering, decimal_quantization=False
            )
        )

    def money(self, value: str | Decimal | None, currency: str) -> str:
        """An amount with its currency as the locale writes it (`‎ریال ۱۲۵٬۰۰۰٬۰۰۰`)."""
        if value is None or value == "":
            return ""
        return self.digits(
            format_currency(Decimal(value), currency, locale=self.locale, numbering_system=self.numbering)
        )

    def date(self, value: date | str | None) -> str:
        """A calendar date: Jalali with the locale's digits for Persian, the long CLDR form otherwise."""
        if value in (None, ""):
            return ""
        day = date.fromisoformat(value[:10]) if isinstance(value, str) else value
        if self.locale.language in JALALI_LANGUAGES:
            return self.digits(jdatetime.date.fromgregorian(date=day).strftime("%Y/%m/%d"))
        return self.digits(format_date(day, "long", locale=self.locale))
