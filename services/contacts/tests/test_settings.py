"""The contacts service's settings (crm_contacts/settings.py): defaults, and every bad variable named."""

from __future__ import annotations

from datetime import timedelta

import pytest

from crm_contacts.settings import ContactsSettings
from crmkit.settings import SettingsError, load


def test_defaults() -> None:
    knobs = load(ContactsSettings.read, {})
    assert (knobs.phone_region, knobs.import_max_bytes, knobs.import_batch) == ("IR", 52428800, 1000)
    assert (knobs.at_risk_after, knobs.churn_after, knobs.lifecycle_interval) == (
        timedelta(days=365),
        timedelta(days=90),
        60,
    )
    assert knobs.stale.default == timedelta(days=365) and knobs.xlsx_max_unpacked == 10 * 52428800
    assert load(ContactsSettings.read, {"CRM_DEFAULT_PHONE_REGION": ""}).phone_region is None


def test_every_bad_variable_is_named() -> None:
    with pytest.raises(SettingsError) as caught:
        load(
            ContactsSettings.read,
            {
                "CRM_CONTACTS_IMPORT_BATCH": "0",
                "CRM_360_DEADLINE_SECONDS": "soon",
                "CRM_CONTACTS_STALE_AFTER_DAYS_BY_STAGE": "vip=30",
            },
        )
    assert [name for name, _ in caught.value.problems] == [
        "CRM_360_DEADLINE_SECONDS",
        "CRM_CONTACTS_IMPORT_BATCH",
        "CRM_CONTACTS_STALE_AFTER_DAYS_BY_STAGE",
    ]
