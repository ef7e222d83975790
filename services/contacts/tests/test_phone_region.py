"""CRM_DEFAULT_PHONE_REGION: Iran unless configured, so a number written the local way is accepted."""

from __future__ import annotations

import pytest

from crmkit.testing import ServiceHarness


def _post(contacts: ServiceHarness, phone: str):
    return contacts.client.post(
        "/v1/contacts", json={"first_name": "مینا", "phone": phone}, headers=contacts.headers("contacts:write")
    )


def test_a_local_iranian_number_is_accepted_under_the_default(
    contacts: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRM_DEFAULT_PHONE_REGION", raising=False)
    made = _post(contacts, "0912 345 6789")
    assert made.status_code == 201, made.get_json()
    assert made.get_json()["phone"] == "+989123456789"
    assert _post(contacts, "۰۹۱۲ ۳۴۵ ۶۷۸۹").get_json()["phone"] == "+989123456789"  # Persian digits too


def test_another_region_or_none_at_all(contacts: ServiceHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_DEFAULT_PHONE_REGION", "de")
    assert _post(contacts, "030 901820").get_json()["phone"] == "+4930901820"
    monkeypatch.setenv("CRM_DEFAULT_PHONE_REGION", "")
    refused = _post(contacts, "0912 345 6789")
    assert refused.status_code == 422 and set(refused.get_json()["errors"]) == {"phone"}
    assert _post(contacts, "+98 912 345 6789").status_code == 201
