"""The printable quote (pro-forma invoice): Jinja2 with autoescape, in the customer's locale.

The locale is, first that is set: `?locale=` on the request, the quote's own `locale`,
the contact's `locale` (from contacts, kept in sales' local copy of each contact), `en`.
It sets the page's language and direction (`crmkit.web.locale`: Persian, Arabic, Hebrew,
Urdu and the like render `dir="rtl"`) and how amounts and dates are written
(`crm_sales.localized`: for `fa`, Persian digits with grouping and Jalali dates).
Every free-text cell also carries `dir="auto"`, so a Latin product name inside a Persian
quote (or the reverse) is laid out by its own first strong character; amounts are
isolated so digits and the currency never flip.

The seller block (name, address, tax id) comes from the `CRM_SALES_SELLER_*` settings;
the issue date is the day the quote was sent (a draft: the day it was drafted), in the
seller's time zone `CRM_SALES_SELLER_TIME_ZONE`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, select_autoescape

from crm_sales import settings
from crm_sales.commands import SalesBook
from crm_sales.domain import Quote
from crm_sales.localized import Formatter
from crmkit.web.locale import direction, primary

log = logging.getLogger(__name__)

LABELS: dict[str, dict[str, Any]] = {
    "en": {
        "title": "Quote",
        "number": "Number",
        "issued": "Issue date",
        "valid_until": "Valid until",
        "seller": "Seller",
        "tax_id": "Tax ID",
        "to": "To",
        "item": "Item",
        "quantity": "Qty",
        "unit_price": "Unit price",
        "discount": "Discount",
        "tax": "Tax",
        "total": "Total",
        "subtotal": "Subtotal",
        "status": "Status",
        "notes": "Notes",
        "statuses": {
            "draft": "Draft",
            "sent": "Sent",
            "accepted": "Accepted",
            "rejected": "Rejected",
            "expired": "Expired",
        },
    },
    "fa": {
        "title": "پیش‌فاکتور",
        "number": "شماره",
        "issued": "تاریخ صدور",
        "valid_until": "معتبر تا",
        "seller": "فروشنده",
        "tax_id": "شناسه ملی / کد اقتصادی",
        "to": "خریدار",
        "item": "شرح کالا/خدمت",
        "quantity": "تعداد",
        "unit_price": "قیمت واحد",
        "discount": "تخفیف",
        "tax": "مالیات",
        "total": "جمع",
        "subtotal": "جمع پیش از مالیات",
        "status": "وضعیت",
        "notes": "توضیحات",
        "statuses": {
            "draft": "پیش‌نویس",
            "sent": "ارسال‌شده",
            "accepted": "پذیرفته‌شده",
            "rejected": "ردشده",
            "expired": "منقضی",
        },
    },
    "ar": {
        "title": "عرض سعر",
        "number": "الرقم",
        "issued": "تاريخ الإصدار",
        "valid_until": "صالح حتى",
        "seller": "البائع",
        "tax_id": "الرقم الضريبي",
        "to": "إلى",
        "item": "البند",
        "quantity": "الكمية",
        "unit_price": "سعر الوحدة",
        "discount": "الخصم",
        "tax": "الضريبة",
        "total": "الإجمالي",
        "subtotal": "المجموع قبل الضريبة",
        "status": "الحالة",
        "notes": "ملاحظات",
        "statuses": {
            "draft": "مسودة",
            "sent": "مرسل",
            "accepted": "مقبول",
            "rejected": "مرفوض",
            "expired": "منتهي الصلاحية",
        },
    },
}

_env = Environment(loader=PackageLoader("crm_sales", "templates"), autoescape=select_autoescape(default=True))


@dataclass(frozen=True)
class Seller:
    """Who issues the quotes: printed at the top of every quote."""

    name: str | None
    address: str | None
    tax_id: str | None
    time_zone: ZoneInfo

    @classmethod
    def from_env(cls) -> Seller:
        """The seller of the settings (settings.py: CRM_SALES_SELLER_*)."""
        knobs = settings.current()
        return cls(
            name=knobs.seller_name,
            address=knobs.seller_address,
            tax_id=knobs.seller_tax_id,
            time_zone=knobs.seller_time_zone,
        )


def issue_date(quote: Quote, zone: ZoneInfo) -> date | None:
    """The day the quote was sent (a draft's: the day it was drafted), where the seller is."""
    moment = quote.sent_at or quote.created_at
    if not moment:
        return None
    stamp = moment if isinstance(moment, datetime) else datetime.fromisoformat(str(moment).replace("Z", "+00:00"))
    return stamp.astimezone(zone).date() if stamp.tzinfo else stamp.date()


def quote_locale(book: SalesBook, quote: Quote, requested: str | None) -> tuple[str, dict[str, Any] | None]:
    """The locale to render in (see the module's docstring) and the contact's summary."""
    contact = book.contact_summaries([quote.contact_id]).get(quote.contact_id) if quote.contact_id else None
    return requested or quote.locale or (contact or {}).get("locale") or "en", contact


def render(book: SalesBook, quote: Quote, requested_locale: str | None = None, seller: Seller | None = None) -> str:
    locale, contact = quote_locale(book, quote, requested_locale)
    seller = seller or Seller.from_env()
    fmt = Formatter(locale)
    view = quote.view()
    currency = view["currency"]
    name = " ".join(p for p in ((contact or {}).get("first_name"), (contact or {}).get("last_name")) if p)
    lines = [
        {
            **line,
            "quantity": fmt.number(line["quantity"]),
            "unit_price": fmt.money(line["unit_price"], currency),
            "discount": fmt.money(line["discount"], currency),
            "discount_percent": fmt.number(line["discount_percent"]),
            "tax": fmt.money(line["tax"], currency),
            "tax_rate": fmt.number(line["tax_rate"]),
            "total": fmt.money(line["total"], currency),
        }
        for line in view["lines"]
    ]
    labels = LABELS.get(primary(locale), LABELS["en"])
    return _env.get_template("quote.html").render(
        quote=view,
        lang=locale,
        dir=direction(locale),
        labels=labels,
        customer=name or None,
        lines=lines,
        number=fmt.digits(view["number"] or ""),
        status=labels["statuses"].get(view["status"], view["status"]),
        issued=fmt.date(issue_date(quote, seller.time_zone)),
        valid_until=fmt.date(view["valid_until"]),
        totals={k: fmt.money(view.get(k), currency) for k in ("subtotal", "tax", "total")},
        seller=seller,
        seller_tax_id=fmt.digits(seller.tax_id or ""),
    )
