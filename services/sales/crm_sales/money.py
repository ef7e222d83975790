"""Money: Decimal end to end, rounded to each currency's minor unit, totals exact.

Amounts travel as decimal strings at the API and in events, and as integer minor units
(plus the currency) in read models: nx-27017 cannot store Decimal128, and integers sum
exactly on every server. Rounding is half-up (the commercial rule people check
invoices with), always to the currency's minor unit, and a total is the sum of
already-rounded parts, so the lines of a quote always add up to its total.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# ISO 4217 minor units for the currencies we accept. IRR is kept without a minor unit
# (the rial has no coin in use); add a currency here to accept it.
MINOR_UNITS: dict[str, int] = {
    "IRR": 0,
    "IQD": 0,
    "JPY": 0,
    "KRW": 0,
    "AFN": 0,
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "CHF": 2,
    "CAD": 2,
    "AUD": 2,
    "CNY": 2,
    "INR": 2,
    "TRY": 2,
    "AED": 2,
    "SAR": 2,
    "QAR": 2,
    "RUB": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "KWD": 3,
    "BHD": 3,
    "OMR": 3,
    "JOD": 3,
}
MAX_DIGITS = 18  # integral digits we accept: minor units stay within a signed 64-bit integer


class MoneyError(ValueError):
    """An amount or currency the service does not accept."""


def minor_unit(currency: str) -> int:
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise MoneyError(f"unsupported currency {currency!r}; one of {', '.join(sorted(MINOR_UNITS))}") from None


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-minor_unit(currency))


def parse(text: str | int | Decimal) -> Decimal:
    """A decimal from a string (never a float); raises MoneyError."""
    if isinstance(text, float | bool):
        raise MoneyError("must be a decimal string, not a number")
    try:
        value = Decimal(str(text).strip())
    except (InvalidOperation, ValueError):
        raise MoneyError("not a decimal number") from None
    if not value.is_finite():
        raise MoneyError("must be a finite number")
    if value.adjusted() >= MAX_DIGITS:
        raise MoneyError(f"must be less than 10^{MAX_DIGITS}")
    return value


def round_to(value: Decimal, currency: str) -> Decimal:
    """Half-up to the currency's minor unit."""
    return value.quantize(quantum(currency), rounding=ROUND_HALF_UP)


def exact(value: Decimal, currency: str) -> Decimal:
    """`value` if it has no more decimals than the currency allows; raises MoneyError."""
    if value != round_to(value, currency):
        places = minor_unit(currency)
        raise MoneyError(f"{currency} amounts have {places} decimal place{'s' if places != 1 else ''} at most")
    return round_to(value, currency)


def to_minor(value: Decimal, currency: str) -> int:
    return int(round_to(value, currency).scaleb(minor_unit(currency)))


def from_minor(units: int, currency: str) -> Decimal:
    return Decimal(units).scaleb(-minor_unit(currency)).quantize(quantum(currency))


def text(value: Decimal, currency: str) -> str:
    """The API form: a plain decimal string with exactly the currency's decimals."""
    return f"{round_to(value, currency):f}"


@dataclass(frozen=True)
class Line:
    """One priced line: quantity × unit price, less a discount, plus tax (per line, rounded)."""

    quantity: Decimal
    unit_price: Decimal
    discount_percent: Decimal = Decimal(0)
    tax_rate: Decimal = Decimal(0)  # percent


@dataclass(frozen=True)
class LineAmounts:
    gross: Decimal  # quantity × unit price, rounded
    discount: Decimal  # rounded
    net: Decimal  # gross − discount (exact)
    tax: Decimal  # net × tax rate, rounded
    total: Decimal  # net + tax (exact)


def price_line(line: Line, currency: str) -> LineAmounts:
    gross = round_to(line.quantity * line.unit_price, currency)
    discount = round_to(gross * line.discount_percent / 100, currency)
    net = gross - discount
    tax = round_to(net * line.tax_rate / 100, currency)
    return LineAmounts(gross, discount, net, tax, net + tax)


@dataclass(frozen=True)
class Totals:
    lines: list[LineAmounts]
    subtotal: Decimal  # Σ net
    discount: Decimal  # Σ discount
    tax: Decimal  # Σ tax
    total: Decimal  # subtotal + tax == Σ line totals


def price(lines: Iterable[Line], currency: str) -> Totals:
    priced = [price_line(line, currency) for line in lines]
    zero = round_to(Decimal(0), currency)
    subtotal = sum((p.net for p in priced), zero)
    tax = sum((p.tax for p in priced), zero)
    return Totals(priced, subtotal, sum((p.discount for p in priced), zero), tax, subtotal + tax)


def weighted(amount_minor: int, probability: Decimal) -> Decimal:
    """An amount in minor units weighted by a percentage, kept exact (round once, at the end)."""
    return Decimal(amount_minor) * probability / 100
