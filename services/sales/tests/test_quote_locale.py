"""The printable quote in the customer's locale: Persian digits, grouping, Jalali dates,
the seller block and the issue date; `?locale=` overrides, the contact's locale is the fallback."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crm_sales.localized import Formatter
from crmkit.events import new_id, utcnow
from crmkit.testing import ServiceHarness


def test_persian_amounts_have_persian_digits_grouping_and_the_rial_name() -> None:
    fa = Formatter("fa-IR")
    assert fa.money("125000000", "IRR") == "\u200eریال\xa0۱۲۵٬۰۰۰٬۰۰۰"
    assert fa.money(Decimal("208.83"), "USD") == "\u200e$\xa0۲۰۸٫۸۳"
    assert fa.number("1.5") == "۱٫۵" and fa.number("1500") == "۱٬۵۰۰"
    assert fa.digits("Q-2024-000012") == "Q-۲۰۲۴-۰۰۰۰۱۲"


def test_persian_dates_are_jalali_other_locales_gregorian_in_their_own_words() -> None:
    assert Formatter("fa-IR").date("2024-08-03") == "۱۴۰۳/۰۵/۱۳"
    assert Formatter("fa").date(date(2025, 3, 21)) == "۱۴۰۴/۰۱/۰۱"  # Nowruz
    assert Formatter("en").date("2024-08-03") == "August 3, 2024"
    assert Formatter("ar").date("2024-08-03") == "3 أغسطس 2024"


def test_other_locales_group_in_their_own_way_and_unknown_ones_fall_back_to_english() -> None:
    assert Formatter("en-US").money("125000000", "IRR") == "IRR125,000,000"
    assert Formatter("de-DE").money("1234.5", "EUR") == "1.234,50\xa0€"
    assert Formatter("ar").money("125000000", "IRR").startswith("\u200f125,000,000")
    assert Formatter("zz-ZZ").money("1000", "USD") == "$1,000.00"
    assert Formatter(None).date("2024-08-03") == "August 3, 2024"
    assert Formatter("fa").money(None, "IRR") == "" and Formatter("fa").date(None) == ""


def _quote(sales: ServiceHarness, contact: str, **extra: Any) -> dict:
    headers = sales.headers()
    made = sales.client.post(
        "/v1/deals",
        json={"title": "Servers", "contact_id": contact, "amount": "125000000", "currency": "IRR"},
        headers=headers,
    )
    assert made.status_code == 201, made.get_json()
    body = {
        "deal_id": made.get_json()["id"],
        "valid_until": (utcnow().date() + timedelta(days=30)).isoformat(),
        "lines": [{"description": "سرور", "quantity": "1", "unit_price": "125000000", "tax_rate": "0"}],
        **extra,
    }
    quote = sales.client.post("/v1/quotes", json=body, headers=headers)
    assert quote.status_code == 201, quote.get_json()
    return quote.get_json()


def _page(sales: ServiceHarness, quote: dict, query: str = "") -> str:
    response = sales.client.get(f"/v1/quotes/{quote['id']}?format=html{query}", headers=sales.headers("sales:read"))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def test_a_persian_contacts_quote_prints_persian_digits_jalali_dates_and_the_seller(
    sales: ServiceHarness, people, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_SALES_SELLER_NAME", "شرکت نمونه")
    monkeypatch.setenv("CRM_SALES_SELLER_ADDRESS", "تهران، خیابان آزادی، پلاک ۱۰")
    monkeypatch.setenv("CRM_SALES_SELLER_TAX_ID", "411111111111")
    monkeypatch.setenv("CRM_SALES_SELLER_TIME_ZONE", "Asia/Tehran")
    contact = people.add(new_id(), first_name="علی", last_name="رضایی", locale="fa-IR")
    quote = _quote(sales, contact)  # no locale of its own: the contact's
    page = _page(sales, quote)
    assert 'lang="fa-IR"' in page and 'dir="rtl"' in page
    assert "۱۲۵٬۰۰۰٬۰۰۰" in page and "ریال" in page
    assert "125000000" not in page and "125,000,000" not in page
    valid = date.fromisoformat(quote["valid_until"])
    assert Formatter("fa").date(valid) in page and quote["valid_until"] not in page
    today_in_tehran = datetime.now(ZoneInfo("Asia/Tehran")).date()
    assert "تاریخ صدور" in page and Formatter("fa").date(today_in_tehran) in page
    assert "شرکت نمونه" in page and "تهران، خیابان آزادی" in page and "۴۱۱۱۱۱۱۱۱۱۱۱" in page
    assert "پیش‌نویس" in page  # the status in Persian, not "draft"


def test_locale_query_overrides_and_english_is_the_last_resort(sales: ServiceHarness, people) -> None:
    persian = people.add(new_id(), first_name="Sara", locale="fa-IR")
    quote = _quote(sales, persian)
    english = _page(sales, quote, "&locale=en-US")
    assert 'lang="en-US"' in english and 'dir="ltr"' in english and "IRR125,000,000" in english
    assert "Seller" not in english  # no seller configured: no empty block
    nobody = people.add(new_id(), first_name="Sam")
    plain = _page(sales, _quote(sales, nobody))
    assert 'lang="en"' in plain and "IRR125,000,000" in plain
    arabic = _page(sales, _quote(sales, nobody, locale="ar"))
    assert 'dir="rtl"' in arabic and "عرض سعر" in arabic
    bad = sales.client.get(f"/v1/quotes/{quote['id']}?format=html&locale=<script>", headers=sales.headers())
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"locale"}
