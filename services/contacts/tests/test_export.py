"""GET /v1/contacts/{id}/export: the person's whole record, from every service, or a 503.

The other services are fakes behind the real gRPC server and its token checks
(conftest.record_keepers), so these tests also prove contacts calls them as itself with the
`<service>:export` roles, asks each once for the person and their merged records, and keeps
to a deadline. The real services' side: each service's test_export_grpc.py; all four
together: tests/e2e/test_contact_export.py.
"""

from __future__ import annotations

import logging

import pytest

from crmkit.testing import ServiceHarness

DEAL = {"id": "deal-1", "title": "Big order", "amount": "1250000.00", "currency": "IRR", "version": 3}


def person(contacts: ServiceHarness) -> tuple[dict, dict]:
    """Shirin, at Acme, email consent granted, with a duplicate merged into her: (survivor, duplicate)."""
    company = contacts.client.post("/v1/companies", json={"name": "Acme"}, headers=contacts.headers()).get_json()
    a = contacts.client.post(
        "/v1/contacts",
        headers=contacts.headers(),
        json={"first_name": "Shirin", "email": "shirin.farahani@example.com", "company_id": company["id"]},
    ).get_json()
    b = contacts.client.post("/v1/contacts", json={"last_name": "Farahani"}, headers=contacts.headers()).get_json()
    contacts.client.put(
        f"/v1/contacts/{a['id']}/consents/email", json={"status": "granted"}, headers=contacts.headers()
    )
    contacts.client.post(f"/v1/contacts/{a['id']}/merge", json={"duplicate_id": b["id"]}, headers=contacts.headers())
    return a, b


def test_the_export_holds_what_every_service_holds_on_the_person(
    exporting_contacts: ServiceHarness, record_keepers: dict
) -> None:
    contacts = exporting_contacts
    record_keepers["sales"].records = {"deals": [DEAL], "quotes": [], "activities": []}
    record_keepers["service-desk"].records = {"tickets": [{"id": "ticket-1", "comments": [{"body": "سلام"}]}]}
    record_keepers["messaging"].records = {"messages": [{"id": "message-1", "consent_proof": {"consent": None}}]}
    a, b = person(contacts)

    response = contacts.client.get(f"/v1/contacts/{b['id']}/export", headers=contacts.headers("contacts:export"))
    export = response.get_json()

    assert response.status_code == 200, export
    assert response.headers["Content-Disposition"] == f'attachment; filename="contact-{a["id"]}.json"'
    assert response.headers["Cache-Control"] == "no-store"
    assert export["contact"]["id"] == a["id"]  # the duplicate's id leads to the survivor
    assert export["contact"]["first_name"] == "Shirin" and export["contact"]["last_name"] == "Farahani"
    assert export["contact"]["consents"]["email"]["status"] == "granted"
    assert export["company"]["name"] == "Acme"
    assert [e["type"] for e in export["history"]][:2] == ["ContactCreated", "ContactConsentChanged"]
    assert export["merged_records"][0]["id"] == b["id"]
    assert export["merged_records"][0]["history"][0]["changes"]["last_name"]["after"] == "Farahani"
    assert export["sales"] == {"deals": [DEAL], "quotes": [], "activities": []}
    assert export["service-desk"] == {"tickets": [{"id": "ticket-1", "comments": [{"body": "سلام"}]}]}
    assert export["messaging"] == {"messages": [{"id": "message-1", "consent_proof": {"consent": None}}]}
    # one call per service, for the person and the record merged into them at once
    assert {service: keeper.asked for service, keeper in record_keepers.items()} == {
        service: [[a["id"], b["id"]]] for service in record_keepers
    }


@pytest.mark.parametrize("failure", ["slow", "down"])
def test_a_service_that_cannot_answer_makes_it_a_503_naming_it_never_a_partial_export(
    exporting_contacts: ServiceHarness, record_keepers: dict, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    contacts = exporting_contacts
    a, _ = person(contacts)
    if failure == "slow":
        record_keepers["messaging"].slow = True  # answers after the 1 s deadline
    else:
        record_keepers["service-desk"].server.stop(grace=None)  # nobody listens where the service desk is

    caplog.set_level(logging.INFO)
    response = contacts.client.get(f"/v1/contacts/{a['id']}/export", headers=contacts.headers("contacts:export"))
    problem = response.get_json()

    assert response.status_code == 503
    assert response.headers["Content-Type"] == "application/problem+json"
    failed = "messaging" if failure == "slow" else "service-desk"
    assert set(problem["errors"]) == {failed}
    assert problem["errors"][failed] == (
        ["did not answer within its deadline (1 s)"] if failure == "slow" else ["unreachable"]
    )
    assert failed in problem["detail"] and "contact" not in problem.get("errors", {})
    assert "Shirin" not in response.get_data(as_text=True)  # nothing of the person in part
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert a["id"] not in logged and "Shirin" not in logged and "shirin.farahani" not in logged


def test_the_export_needs_the_export_role_not_read_or_write(exporting_contacts: ServiceHarness) -> None:
    contacts = exporting_contacts
    a, _ = person(contacts)
    answers = {
        role: contacts.client.get(f"/v1/contacts/{a['id']}/export", headers=contacts.headers(role)).status_code
        for role in ("contacts:read", "contacts:write", "contacts:erase", "sales:export", "contacts:export", "admin")
    }
    assert answers == {
        "contacts:read": 403,
        "contacts:write": 403,
        "contacts:erase": 403,
        "sales:export": 403,
        "contacts:export": 200,
        "admin": 200,
    }
    refused = contacts.client.get(f"/v1/contacts/{a['id']}/export", headers=contacts.headers("contacts:read"))
    assert "contacts:export" in refused.get_json()["detail"]


def test_the_export_of_an_unknown_contact_is_404_and_asks_nobody(
    exporting_contacts: ServiceHarness, record_keepers: dict
) -> None:
    response = exporting_contacts.client.get("/v1/contacts/nobody/export", headers=exporting_contacts.headers())
    assert response.status_code == 404
    assert all(keeper.asked == [] for keeper in record_keepers.values())
