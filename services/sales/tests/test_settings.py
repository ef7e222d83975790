"""The sales service's settings (crm_sales/settings.py): defaults, and every bad variable named."""

from __future__ import annotations

from decimal import Decimal

import pytest

from crm_sales.settings import SalesSettings
from crmkit.settings import SettingsError, load


def test_defaults() -> None:
    knobs = load(SalesSettings.read, {})
    assert (knobs.contacts_deadline, knobs.reporting_currency, knobs.lifespan_years) == (2, "USD", Decimal(3))
    assert (knobs.value_interval, knobs.quote_expiry_interval, str(knobs.seller_time_zone)) == (30, 60, "UTC")
    assert knobs.seller_name is None


def test_every_bad_variable_is_named() -> None:
    with pytest.raises(SettingsError) as caught:
        load(
            SalesSettings.read,
            {
                "CRM_SALES_SELLER_TIME_ZONE": "Mars/Olympus",
                "CRM_SALES_VALUE_INTERVAL": "0",
                "CRM_SALES_EXPECTED_LIFESPAN_YEARS": "long",
            },
        )
    assert [name for name, _ in caught.value.problems] == [
        "CRM_SALES_SELLER_TIME_ZONE",
        "CRM_SALES_EXPECTED_LIFESPAN_YEARS",
        "CRM_SALES_VALUE_INTERVAL",
    ]
