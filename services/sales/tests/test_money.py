"""Money: rounding per currency, exact totals, discounts and tax (unit and property tests)."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_sales import money

CURRENCIES = st.sampled_from(["IRR", "USD", "KWD", "JPY", "EUR"])
AMOUNTS = st.decimals(min_value=0, max_value=10**9, places=4, allow_nan=False, allow_infinity=False)
PERCENTS = st.decimals(min_value=0, max_value=100, places=2, allow_nan=False, allow_infinity=False)
QUANTITIES = st.decimals(min_value=Decimal("0.001"), max_value=10_000, places=3, allow_nan=False, allow_infinity=False)


def test_rounding_follows_the_currency_minor_unit() -> None:
    assert money.text(Decimal("1250000.5"), "IRR") == "1250001"
    assert money.text(Decimal("10.005"), "USD") == "10.01"  # half up
    assert money.text(Decimal("10.0049"), "USD") == "10.00"
    assert money.text(Decimal("1.2345"), "KWD") == "1.235"
    assert money.to_minor(Decimal("12.34"), "USD") == 1234
    assert money.from_minor(1234, "USD") == Decimal("12.34")
    assert money.from_minor(1250000, "IRR") == Decimal("1250000")


def test_exact_refuses_more_decimals_than_the_currency_has() -> None:
    with pytest.raises(money.MoneyError):
        money.exact(Decimal("10.5"), "IRR")
    with pytest.raises(money.MoneyError):
        money.exact(Decimal("10.001"), "USD")
    assert money.exact(Decimal("10.1"), "USD") == Decimal("10.10")


@pytest.mark.parametrize("bad", [1.5, True, "abc", "NaN", "Infinity", "1e30"])
def test_parse_refuses_floats_and_nonsense(bad: object) -> None:
    with pytest.raises(money.MoneyError):
        money.parse(bad)  # type: ignore[arg-type]


def test_unknown_currency() -> None:
    with pytest.raises(money.MoneyError):
        money.minor_unit("XYZ")


def test_a_worked_quote() -> None:
    lines = [
        money.Line(Decimal(3), Decimal("19.99"), Decimal(10), Decimal(9)),
        money.Line(Decimal("1.5"), Decimal("100.00"), Decimal(0), Decimal(0)),
    ]
    totals = money.price(lines, "USD")
    # 59.97 gross, 6.00 discount (5.997 rounded), 53.97 net, 4.86 tax (4.8573), 58.83
    assert totals.lines[0] == money.LineAmounts(
        Decimal("59.97"), Decimal("6.00"), Decimal("53.97"), Decimal("4.86"), Decimal("58.83")
    )
    assert totals.subtotal == Decimal("203.97") and totals.tax == Decimal("4.86")
    assert totals.total == Decimal("208.83")


@given(amount=AMOUNTS, currency=CURRENCIES)
def test_round_trip_through_minor_units(amount: Decimal, currency: str) -> None:
    rounded = money.round_to(amount, currency)
    assert money.from_minor(money.to_minor(amount, currency), currency) == rounded
    assert abs(rounded - amount) <= money.quantum(currency) / 2
    assert rounded.as_tuple().exponent == -money.minor_unit(currency)


@given(lines=st.lists(st.tuples(QUANTITIES, AMOUNTS, PERCENTS, PERCENTS), min_size=1, max_size=20), currency=CURRENCIES)
def test_totals_are_exact_sums_of_rounded_lines(lines: list, currency: str) -> None:
    priced = money.price([money.Line(q, money.round_to(p, currency), d, t) for q, p, d, t in lines], currency)
    q = money.quantum(currency)
    assert priced.total == priced.subtotal + priced.tax
    assert priced.total == sum(line.total for line in priced.lines)
    assert priced.subtotal == sum(line.net for line in priced.lines)
    for line in priced.lines:
        for amount in (line.gross, line.discount, line.net, line.tax, line.total):
            assert amount == amount.quantize(q) and amount >= 0
        assert line.discount <= line.gross and line.net == line.gross - line.discount


@given(amount=AMOUNTS, currency=CURRENCIES)
def test_a_full_discount_leaves_nothing_and_no_discount_leaves_everything(amount: Decimal, currency: str) -> None:
    price = money.round_to(amount, currency)
    assert money.price_line(money.Line(Decimal(1), price, Decimal(100)), currency).total == 0
    assert money.price_line(money.Line(Decimal(1), price, Decimal(0)), currency).total == price
