"""Data freshness over REST on the contacts app: a create that says when the details were confirmed,
staff verification, the stale-records report, and the public page behind the signed link (what the
person sees and what their answer records). Bad input to each is refused field by field, storing nothing."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from crm_contacts.records.freshness import LINK_PURPOSE
from crmkit import signing
from crmkit.events import parse_time, rfc3339, utcnow
from crmkit.testing import ServiceHarness

LONG_AGO = rfc3339(utcnow() - timedelta(days=400))


def create(contacts: ServiceHarness, **fields: Any) -> dict:
    response = contacts.client.post("/v1/contacts", json=fields, headers=contacts.headers("contacts:write"))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def get(contacts: ServiceHarness, contact_id: str) -> dict:
    return contacts.client.get(f"/v1/contacts/{contact_id}", headers=contacts.headers("contacts:read")).get_json()


def events(contacts: ServiceHarness, contact_id: str) -> list[str]:
    return [event.type for event in contacts.runtime.store.load(contact_id)]


def report(contacts: ServiceHarness, **query: Any) -> dict:
    response = contacts.client.get(
        "/v1/insights/stale-records", query_string=query, headers=contacts.headers("contacts:read")
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def link(contact: dict, **kwargs: Any) -> str:
    return "/v1/confirmations/" + signing.sign(
        LINK_PURPOSE, {"c": contact["id"], "s": contact["stale_since"]}, **kwargs
    )


def test_a_contact_confirmed_long_ago_is_stale_from_its_creation(contacts: ServiceHarness) -> None:
    fresh = create(contacts, first_name="Fresh")
    assert fresh["stale"] is False and fresh["stale_since"] is None
    assert fresh["verified_at"] is None and fresh["verified_by"] is None  # not since the creation, which counts
    old = create(contacts, first_name="Old", verified_at=LONG_AGO)
    assert old["stale"] is True and old["verified_at"] == LONG_AGO
    assert old["stale_since"] == rfc3339(parse_time(LONG_AGO) + timedelta(days=365))
    assert events(contacts, old["id"]) == ["ContactCreated", "ContactBecameStale"]


def test_a_create_with_bad_freshness_fields_stores_nothing(contacts: ServiceHarness) -> None:
    before = contacts.runtime.store.count()
    future = rfc3339(utcnow() + timedelta(days=2))
    response = contacts.client.post(
        "/v1/contacts",
        json={"first_name": "X", "verified_at": future, "stale": True},
        headers=contacts.headers("contacts:write"),
    )
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert set(response.get_json()["errors"]) == {"verified_at", "stale"}
    for value in ("last year", "2026-01-01T10:00:00", "0001-01-01T00:00:00+14:00"):  # no zone; no UTC equivalent
        bad = contacts.client.post(
            "/v1/contacts", json={"first_name": "X", "verified_at": value}, headers=contacts.headers("contacts:write")
        )
        assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"verified_at"}, value
    assert contacts.runtime.store.count() == before


def test_staff_verify_clears_the_flag_and_refuses_bad_input(contacts: ServiceHarness) -> None:
    old = create(contacts, first_name="Old", verified_at=LONG_AGO)
    headers = contacts.headers("contacts:write", subject="ana")
    bad = contacts.client.post(
        f"/v1/contacts/{old['id']}/verify", json={"method": "pigeon", "note": "x"}, headers=headers
    )
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"method", "note"}
    assert events(contacts, old["id"]) == ["ContactCreated", "ContactBecameStale"]  # nothing stored
    assert (
        contacts.client.post(
            f"/v1/contacts/{old['id']}/verify", json={}, headers=contacts.headers("contacts:read")
        ).status_code
        == 403
    )
    stale_version = old["version"]
    assert (
        contacts.client.post(
            f"/v1/contacts/{old['id']}/verify", json={}, headers={**headers, "If-Match": '"1"'}
        ).status_code
        == 412
    )
    done = contacts.client.post(
        f"/v1/contacts/{old['id']}/verify",
        json={"method": "phone"},
        headers={**headers, "If-Match": f'"{stale_version}"'},
    )
    assert done.status_code == 200, done.get_json()
    view = done.get_json()
    assert (view["stale"], view["stale_since"], view["verified_by"]) == (False, None, "user:ana")
    assert view["verified_at"] > LONG_AGO
    assert contacts.client.post(f"/v1/contacts/{old['id']}/verify", headers=headers).status_code == 200  # no body
    assert contacts.client.post("/v1/contacts/nobody/verify", json={}, headers=headers).status_code == 404
    survivor = create(contacts, first_name="Survivor")
    assert (
        contacts.client.post(
            f"/v1/contacts/{survivor['id']}/merge", json={"duplicate_id": old["id"]}, headers=headers
        ).status_code
        == 200
    )
    assert contacts.client.post(f"/v1/contacts/{old['id']}/verify", json={}, headers=headers).status_code == 409


def test_stale_records_per_owner_filtered_and_paged(contacts: ServiceHarness) -> None:
    for index in range(3):
        create(contacts, first_name=f"Ana's {index}", owner="ana", verified_at=LONG_AGO)
    customer = create(contacts, first_name="Bo's", owner="bo", lifecycle_stage="customer", verified_at=LONG_AGO)
    create(contacts, first_name="Nobody's", verified_at=LONG_AGO)
    create(contacts, first_name="Fresh", owner="ana")
    contacts.project()
    everyone = report(contacts)
    assert everyone["report"] == "stale-records" and everyone["total"] == 5
    assert everyone["by_owner"] == [
        {"owner": "ana", "count": 3},
        {"owner": "bo", "count": 1},
        {"owner": None, "count": 1},
    ]
    assert len(everyone["items"]) == 5 and everyone["next_cursor"] is None
    assert set(everyone["items"][0]) == {
        "id",
        "first_name",
        "last_name",
        "email",
        "phone",
        "owner",
        "lifecycle_stage",
        "created_at",
        "verified_at",
        "stale_since",
    }
    assert all(
        re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", item["created_at"])  # RFC 3339, as documented
        for item in everyone["items"]
    )
    first = report(contacts, owner="ana", limit=2)
    assert first["total"] == 3 and len(first["items"]) == 2 and first["next_cursor"]
    rest = report(contacts, owner="ana", limit=2, cursor=first["next_cursor"])
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert {i["first_name"] for i in first["items"] + rest["items"]} == {"Ana's 0", "Ana's 1", "Ana's 2"}
    customers = report(contacts, lifecycle_stage="customer")
    assert [i["id"] for i in customers["items"]] == [customer["id"]] and customers["owner"] is None
    contacts.client.post(f"/v1/contacts/{customer['id']}/verify", json={}, headers=contacts.headers())
    contacts.project()
    assert report(contacts, lifecycle_stage="customer")["total"] == 0

    bad = contacts.client.get(
        "/v1/insights/stale-records",
        query_string={"limit": 0, "lifecycle_stage": "vip", "owner": "x" * 101, "team": "a"},
        headers=contacts.headers(),
    )
    assert bad.status_code == 422
    assert set(bad.get_json()["errors"]) == {"limit", "lifecycle_stage", "owner", "team"}
    assert contacts.client.get("/v1/insights/stale-records").status_code == 401


def test_the_person_confirms_through_the_page_in_their_language(contacts: ServiceHarness) -> None:
    sara = create(
        contacts,
        first_name="سارا",
        last_name="Karimi",
        email="sara@example.com",
        phone="+989121234567",
        locale="fa-IR",
        verified_at=LONG_AGO,
    )
    page = contacts.client.get(link(sara))
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert 'lang="fa" dir="rtl"' in html and 'value="sara@example.com"' in html and "سارا" in html
    assert page.headers["Cache-Control"] == "no-store" and page.headers["Referrer-Policy"] == "no-referrer"
    english = contacts.client.get(link(sara) + "?lang=en").get_data(as_text=True)
    assert 'lang="en" dir="ltr"' in english and "Are your details still right?" in english
    assert events(contacts, sara["id"]) == ["ContactCreated", "ContactBecameStale"]  # a look changes nothing

    answer = contacts.client.post(
        link(sara),
        data={"first_name": "سارا", "last_name": "Karimi", "email": "sara@example.com", "phone": "0935 123 4567"},
    )
    assert answer.status_code == 200 and "سپاسگزاریم" in answer.get_data(as_text=True)
    view = get(contacts, sara["id"])
    assert view["phone"] == "+989351234567" and view["stale"] is False
    assert view["verified_by"] == f"contact:{sara['id']}"
    assert events(contacts, sara["id"])[-2:] == ["ContactUpdated", "ContactDetailsVerified"]
    stored = contacts.runtime.store.load(sara["id"])
    assert stored[-2].data["changes"] == {"phone": "+989351234567"} and stored[-1].actor == f"contact:{sara['id']}"

    again = contacts.client.post(link(sara), data={"phone": "+989121234567"})
    assert again.status_code == 409 and "قبلاً تأیید شده" in again.get_data(as_text=True)
    assert contacts.client.get(link(sara)).status_code == 409
    assert get(contacts, sara["id"])["phone"] == "+989351234567"


def test_json_answers_and_bad_input_store_nothing(contacts: ServiceHarness) -> None:
    bo = create(contacts, first_name="Bo", email="bo@example.com", verified_at=LONG_AGO)
    version = get(contacts, bo["id"])["version"]
    bad = contacts.client.post(
        link(bo), json={"email": "not an email", "phone": "call me", "nickname": "B", "first_name": "\x00"}
    )
    assert bad.status_code == 422 and bad.mimetype == "application/problem+json"
    assert set(bad.get_json()["errors"]) == {"email", "phone", "nickname", "first_name"}
    form = contacts.client.post(link(bo), data={"email": "not an email", "first_name": "Bo"})
    assert form.status_code == 422 and form.mimetype == "text/html"
    html = form.get_data(as_text=True)
    assert "not a valid email address" in html and 'value="not an email"' in html  # shown back to fix
    cleared = contacts.client.post(link(bo), json={"first_name": None, "email": ""})
    assert cleared.status_code == 422 and set(cleared.get_json()["errors"]) >= {"first_name"}
    assert contacts.client.post(link(bo), data=b"[1]", content_type="application/json").status_code == 422
    assert get(contacts, bo["id"])["version"] == version  # nothing stored

    done = contacts.client.post(link(bo), json={"last_name": "Brown"})
    assert done.status_code == 200
    body = done.get_json()
    assert body["contact_id"] == bo["id"] and body["changed"] == ["last_name"]
    assert re.match(r"^\d{4}-\d\d-\d\dT", body["verified_at"])
    assert contacts.client.post(link(bo), json={}).status_code == 409


def test_links_that_are_not_valid(contacts: ServiceHarness) -> None:
    ali = create(contacts, first_name="Ali", verified_at=LONG_AGO)
    forged = link(ali)[:-3] + "abc"
    page = contacts.client.get(forged)
    assert page.status_code == 404 and "Link not valid" in page.get_data(as_text=True)
    assert contacts.client.post(forged, json={}).status_code == 404
    assert contacts.client.get("/v1/confirmations/" + "é" * 30).status_code == 404
    other_purpose = "/v1/confirmations/" + signing.sign("survey", {"c": ali["id"], "s": ali["stale_since"]})
    assert contacts.client.get(other_purpose).status_code == 404
    expired = link(ali, ttl=timedelta(days=30), now=utcnow() - timedelta(days=31))
    assert contacts.client.get(expired).status_code == 410
    assert contacts.client.post(expired, json={}).get_json()["status"] == 410
    fresh = create(contacts, first_name="Fresh")  # never stale: a link for it answers nothing
    assert contacts.client.get(link({**fresh, "stale_since": LONG_AGO})).status_code == 409
    contacts.client.post(f"/v1/contacts/{ali['id']}/erasure", json={}, headers=contacts.headers())
    assert contacts.client.get(link(ali)).status_code == 404
    assert contacts.client.get(link({"id": "nobody", "stale_since": LONG_AGO})).status_code == 404


def test_the_document_states_the_new_operations(contacts: ServiceHarness) -> None:
    paths = contacts.client.get("/openapi.json").get_json()["paths"]
    form = paths["/v1/confirmations/{token}"]
    assert set(form["get"]["responses"]) >= {"200", "404", "409", "410"}
    assert set(form["post"]["responses"]) >= {"200", "404", "409", "410", "422"}
    assert "security" not in form["get"] or form["get"]["security"] == []
    assert "/v1/contacts/{contact_id}/verify" in paths and "/v1/insights/stale-records" in paths
