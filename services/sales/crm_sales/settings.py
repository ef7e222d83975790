"""The sales service's own settings, every one from the environment here (README: Configuration).

Built when a process starts (`ServiceSpec.configure`: a value that cannot work stops it,
naming every bad variable) and reached through `current()` by the code that needs one.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crmkit.settings import Current, Env


@dataclass(frozen=True)
class SalesSettings:
    contacts_deadline: float  # CRM_SALES_CONTACTS_DEADLINE: seconds a contact lookup over gRPC may take
    seller_name: str | None  # CRM_SALES_SELLER_NAME, _ADDRESS, _TAX_ID: printed at the top of every quote
    seller_address: str | None
    seller_tax_id: str | None
    seller_time_zone: ZoneInfo  # CRM_SALES_SELLER_TIME_ZONE: where a quote's date is the seller's day
    reporting_currency: str  # CRM_SALES_REPORTING_CURRENCY: the currency reports total in (nothing is converted)
    lifespan_years: Decimal  # CRM_SALES_EXPECTED_LIFESPAN_YEARS: the predicted customer value's horizon
    value_interval: float  # CRM_SALES_VALUE_INTERVAL: how often the worker recomputes customer values
    quote_expiry_interval: float  # CRM_SALES_QUOTE_EXPIRY_INTERVAL: how often it expires quotes past their date

    @classmethod
    def read(cls, env: Env) -> SalesSettings:
        return cls(
            contacts_deadline=env.number("CRM_SALES_CONTACTS_DEADLINE", 2, above=0),
            seller_name=env.text("CRM_SALES_SELLER_NAME") or None,
            seller_address=env.text("CRM_SALES_SELLER_ADDRESS") or None,
            seller_tax_id=env.text("CRM_SALES_SELLER_TAX_ID") or None,
            seller_time_zone=_zone(env),
            reporting_currency=env.text("CRM_SALES_REPORTING_CURRENCY", "USD").upper(),
            lifespan_years=_years(env),
            value_interval=env.number("CRM_SALES_VALUE_INTERVAL", 30, above=0),
            quote_expiry_interval=env.number("CRM_SALES_QUOTE_EXPIRY_INTERVAL", 60, above=0),
        )


def _zone(env: Env) -> ZoneInfo:
    name = env.text("CRM_SALES_SELLER_TIME_ZONE") or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        env.problem("CRM_SALES_SELLER_TIME_ZONE", f"{name!r} is not a time zone (e.g. Asia/Tehran, UTC)")
        return ZoneInfo("UTC")


def _years(env: Env) -> Decimal:
    raw = env.text("CRM_SALES_EXPECTED_LIFESPAN_YEARS", "3").strip() or "3"
    try:
        years = Decimal(raw)
    except InvalidOperation:
        years = Decimal("NaN")
    if not years.is_finite() or years < 0:
        env.problem("CRM_SALES_EXPECTED_LIFESPAN_YEARS", f"{raw!r} is not a number of years")
        return Decimal(3)
    return years


current = Current(SalesSettings.read)
"""The settings now (built once per environment): `settings.current().reporting_currency`."""
