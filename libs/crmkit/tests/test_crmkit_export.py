"""The chassis side of a person's export: the export role, and ExportContactRecords' ids and answer."""

from __future__ import annotations

import json

import pytest

from crmkit import auth
from crmkit.errors import ValidationFailed
from crmkit.events import parse_time
from crmkit.export import MAX_CONTACT_IDS, records_json, requested_ids


@pytest.mark.parametrize(
    ("roles", "allowed"),
    [
        ({"contacts:read"}, False),
        ({"contacts:write"}, False),
        ({"contacts:erase"}, False),
        ({"sales:export"}, False),
        ({"contacts:export"}, True),
        ({"admin"}, True),
    ],
)
def test_an_export_needs_its_own_role_or_admin(roles: set[str], allowed: bool) -> None:
    assert auth.Principal("dpo", frozenset(roles)).may("contacts", "export") is allowed
    assert auth.needed_roles("contacts", "export") == "contacts:export (or admin)"


def test_only_contacts_service_token_may_export_from_the_others() -> None:
    assert {"sales:export", "servicedesk:export", "messaging:export"} <= auth.SERVICE_GRANTS["contacts"]
    assert not any(
        role.endswith(":export") for name, roles in auth.SERVICE_GRANTS.items() if name != "contacts" for role in roles
    )


def test_requested_ids_are_deduplicated_in_order_and_every_bad_one_is_named() -> None:
    assert requested_ids(["b", "a", "b"]) == ["b", "a"]
    with pytest.raises(ValidationFailed) as empty:
        requested_ids([])
    assert set(empty.value.errors) == {"contact_ids"}
    with pytest.raises(ValidationFailed) as bad:
        requested_ids(["ok", "", "x" * 129])
    assert set(bad.value.errors) == {"contact_ids[1]", "contact_ids[2]"}
    with pytest.raises(ValidationFailed) as many:
        requested_ids([str(n) for n in range(MAX_CONTACT_IDS + 1)])
    assert set(many.value.errors) == {"contact_ids"}


def test_records_json_keeps_text_and_integers_and_writes_times_as_rfc3339() -> None:
    text = records_json({"deals": [{"title": "لپ‌تاپ", "version": 3, "at": parse_time("2026-01-02T03:04:05Z")}]})
    assert "لپ‌تاپ" in text  # as is, not \\u-escaped
    assert json.loads(text) == {"deals": [{"title": "لپ‌تاپ", "version": 3, "at": "2026-01-02T03:04:05.000Z"}]}
