"""Inputs the fuzzer (tests/fuzz) and its hand probes turned into 500s: each is now a 4xx naming the problem."""

from __future__ import annotations

from crmkit.testing import ServiceHarness

from .test_api import SARA, create, stored_events

NO_UTC_EQUIVALENT = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00")


def test_a_consent_given_at_a_time_with_no_utc_equivalent_is_422_and_changes_nothing(contacts: ServiceHarness) -> None:
    sara = create(contacts, SARA)
    before = stored_events(contacts)
    for moment in NO_UTC_EQUIVALENT:  # was a 500: OverflowError converting it to UTC
        response = contacts.client.put(
            f"/v1/contacts/{sara['id']}/consents/email",
            headers=contacts.headers(),
            json={"status": "granted", "at": moment},
        )
        assert response.status_code == 422 and set(response.get_json()["errors"]) == {"at"}, response.get_json()
    assert stored_events(contacts) == before


def test_a_name_with_a_lone_surrogate_or_a_body_nested_too_deep_is_400_and_creates_nothing(
    contacts: ServiceHarness,
) -> None:
    for raw in (
        b'{"first_name": "Sara\\ud800"}',  # was a 500: UnicodeEncodeError sealing the event
        b'{"first_name": "Sara", "attributes": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    ):  # RecursionError
        response = contacts.client.post(
            "/v1/contacts", data=raw, content_type="application/json", headers=contacts.headers()
        )
        assert response.status_code == 400, response.get_json()
        assert response.mimetype == "application/problem+json"
    assert stored_events(contacts) == 0
    paired = contacts.client.post(
        "/v1/contacts",
        data=b'{"first_name": "Sara \\ud83d\\ude00"}',
        content_type="application/json",
        headers=contacts.headers(),
    )
    assert paired.status_code == 201 and paired.get_json()["first_name"] == "Sara 😀"  # a valid pair is text
