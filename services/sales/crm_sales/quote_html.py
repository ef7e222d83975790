"""The printable quote (pro-forma invoice): Jinja2 with autoescape, right-to-left aware.

The page direction follows the quote's locale (or the contact's): Persian, Arabic,
Hebrew, Urdu and the like render `dir="rtl"`; every free-text cell also carries
`dir="auto"`, so a Latin product name inside a Persian quote (or the reverse) is laid
out by its own first strong character. Amounts are isolated with `dir="ltr"` so digits
and the currency code never flip.
"""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, select_autoescape

from crm_sales.commands import SalesBook
from crm_sales.domain import Quote

RTL_LANGUAGES = {"fa", "ar", "he", "ur", "ps", "ckb", "yi", "dv", "sd", "ug"}
LABELS = {
    "en": {"title": "Quote", "number": "Number", "date": "Date", "valid_until": "Valid until", "to": "To",
           "item": "Item", "quantity": "Qty", "unit_price": "Unit price", "discount": "Discount",
           "tax": "Tax", "total": "Total", "subtotal": "Subtotal", "status": "Status", "notes": "Notes"},
    "fa": {"title": "پیش‌فاکتور", "number": "شماره", "date": "تاریخ", "valid_until": "معتبر تا", "to": "خریدار",
           "item": "شرح کالا/خدمت", "quantity": "تعداد", "unit_price": "قیمت واحد", "discount": "تخفیف",
           "tax": "مالیات", "total": "جمع", "subtotal": "جمع پیش از مالیات", "status": "وضعیت",
           "notes": "توضیحات"},
    "ar": {"title": "عرض سعر", "number": "الرقم", "date": "التاريخ", "valid_until": "صالح حتى", "to": "إلى",
           "item": "البند", "quantity": "الكمية", "unit_price": "سعر الوحدة", "discount": "الخصم",
           "tax": "الضريبة", "total": "الإجمالي", "subtotal": "المجموع قبل الضريبة", "status": "الحالة",
           "notes": "ملاحظات"},
}

_env = Environment(loader=PackageLoader("crm_sales", "templates"), autoescape=select_autoescape(default=True))


def direction(locale: str | None) -> str:
    language = (locale or "").split("-")[0].lower()
    return "rtl" if language in RTL_LANGUAGES else "ltr"


def render(book: SalesBook, quote: Quote) -> str:
    contact = book.contact_summaries([quote.contact_id]).get(quote.contact_id) if quote.contact_id else None
    locale = quote.locale or (contact or {}).get("locale") or "en"
    language = locale.split("-")[0].lower()
    name = " ".join(p for p in ((contact or {}).get("first_name"), (contact or {}).get("last_name")) if p)
    return _env.get_template("quote.html").render(
        quote=quote.view(), lang=locale, dir=direction(locale), labels=LABELS.get(language, LABELS["en"]),
        customer=name or None,
    )
