"""POST /v1/contacts/{id}/unmerge through the REST API (issue 16)."""

from __future__ import annotations

from crmkit.testing import ServiceHarness


def create(contacts: ServiceHarness, **fields: object) -> dict:
    response = contacts.client.post("/v1/contacts", json=fields, headers=contacts.headers())
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def post(contacts: ServiceHarness, path: str, body: object, *roles: str):
    return contacts.client.post(path, json=body, headers=contacts.headers(*roles))


def test_unmerge_restores_both_records_and_history_shows_both(contacts: ServiceHarness) -> None:
    survivor = create(contacts, first_name="Sara", email="sara@example.com", tags=["vip"])
    duplicate = create(contacts, first_name="S.", phone="+98 912 123 4567", tags=["b2b"], lifecycle_stage="customer")
    contacts.client.put(
        f"/v1/contacts/{duplicate['id']}/consents/sms", json={"status": "granted"}, headers=contacts.headers()
    )
    duplicate_before = contacts.client.get(f"/v1/contacts/{duplicate['id']}", headers=contacts.headers()).get_json()
    assert post(contacts, f"/v1/contacts/{survivor['id']}/merge", {"duplicate_id": duplicate["id"]}).status_code == 200

    response = post(contacts, f"/v1/contacts/{survivor['id']}/unmerge", {"duplicate_id": duplicate["id"]})
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["id"] == survivor["id"] and body["merged_from"] == []
    assert body["phone"] is None and body["tags"] == ["vip"] and body["lifecycle_stage"] == "lead"
    assert body["consents"] == {}
    assert response.headers["ETag"] == f'"{body["version"]}"'
    restored = contacts.client.get(f"/v1/contacts/{duplicate['id']}", headers=contacts.headers()).get_json()
    assert restored["id"] == duplicate["id"] and restored["status"] == "active" and restored["merged_into"] is None
    assert {k: v for k, v in restored.items() if k not in ("version", "updated_at")} == {
        k: v for k, v in duplicate_before.items() if k not in ("version", "updated_at")
    }

    history = contacts.client.get(f"/v1/contacts/{duplicate['id']}/history", headers=contacts.headers()).get_json()
    assert [e["type"] for e in history["items"]][-2:] == ["ContactMerged", "ContactUnmerged"]
    assert history["items"][-1]["changes"]["status"] == {"before": "merged", "after": "active"}
    mine = contacts.client.get(f"/v1/contacts/{survivor['id']}/history", headers=contacts.headers()).get_json()
    types = [e["type"] for e in mine["items"]]
    assert "ContactDuplicateAbsorbed" in types and "ContactDuplicateReleased" in types
    contacts.project()
    listed = contacts.client.get("/v1/contacts", query_string={"status": "merged"}, headers=contacts.headers())
    assert listed.get_json()["items"] == []
    published = [e for e in contacts.runtime.store.load(duplicate["id"]) if e.type == "ContactUnmerged"]
    assert published[0].data["survivor_id"] == survivor["id"]


def test_unmerge_is_harmless_to_repeat(contacts: ServiceHarness) -> None:
    survivor, duplicate = create(contacts, first_name="A"), create(contacts, first_name="B")
    post(contacts, f"/v1/contacts/{survivor['id']}/merge", {"duplicate_id": duplicate["id"]})
    first = post(contacts, f"/v1/contacts/{survivor['id']}/unmerge", {"duplicate_id": duplicate["id"]})
    again = post(contacts, f"/v1/contacts/{survivor['id']}/unmerge", {"duplicate_id": duplicate["id"]})
    assert first.status_code == again.status_code == 200
    assert again.get_json()["version"] == first.get_json()["version"]
    assert len(contacts.runtime.store.load(duplicate["id"])) == 3  # created, merged, unmerged: nothing more


def test_an_erased_duplicate_is_409(contacts: ServiceHarness) -> None:
    survivor, duplicate = create(contacts, first_name="A"), create(contacts, first_name="B")
    post(contacts, f"/v1/contacts/{survivor['id']}/merge", {"duplicate_id": duplicate["id"]})
    assert post(contacts, f"/v1/contacts/{survivor['id']}/erasure", {}, "admin").status_code == 200
    response = post(contacts, f"/v1/contacts/{survivor['id']}/unmerge", {"duplicate_id": duplicate["id"]})
    assert response.status_code == 409
    assert response.headers["Content-Type"].startswith("application/problem+json")


def test_bad_input_is_422_listing_every_field_and_stores_nothing(contacts: ServiceHarness) -> None:
    survivor, other = create(contacts, first_name="A"), create(contacts, first_name="B")
    before = contacts.runtime.db["events"].count_documents({})
    path = f"/v1/contacts/{survivor['id']}/unmerge"
    for body, fields in (
        ({}, {"duplicate_id"}),
        ({"duplicate_id": None, "extra": 1}, {"duplicate_id", "extra"}),
        ({"duplicate_id": "x" * 65}, {"duplicate_id"}),
        ({"duplicate_id": "nobody"}, {"duplicate_id"}),
        ({"duplicate_id": survivor["id"]}, {"duplicate_id"}),
        ({"duplicate_id": other["id"]}, {"duplicate_id"}),
    ):  # never merged into it
        response = post(contacts, path, body)
        assert response.status_code == 422, (body, response.get_json())
        assert set(response.get_json()["errors"]) == fields, body
    assert post(contacts, path, {"duplicate_id": other["id"]}, "contacts:read").status_code == 403
    assert contacts.client.post(path, json={"duplicate_id": other["id"]}).status_code == 401
    assert contacts.runtime.db["events"].count_documents({}) == before
    assert "/v1/contacts/{contact_id}/unmerge" in contacts.client.get("/openapi.json").get_json()["paths"]
