"""Preview with a contact's data shows that contact's name, email and phone: it needs the
right to read contacts as well, the same as `GET /v1/contacts/{id}`."""

from __future__ import annotations

from .conftest import World

TEMPLATE = {"body": "{{ name }} <{{ email }}> {{ phone }}"}


def test_preview_with_a_contact_needs_contacts_read_too(world: World) -> None:
    sara = world.contact(first_name="Sara", last_name="Rezaei", email="sara@example.com", phone="+989121234567")
    with_contact = {**TEMPLATE, "contact_id": sara["id"]}

    def preview(body: dict, *roles: str):
        return world.messaging.client.post("/v1/templates/preview", json=body, headers=world.messaging.headers(*roles))

    refused = preview(with_contact, "messaging:read")
    assert refused.status_code == 403
    assert "contacts:read" in refused.get_json()["detail"] and "sara" not in refused.get_data(as_text=True).lower()
    assert (
        world.contacts.client.get(
            f"/v1/contacts/{sara['id']}", headers=world.contacts.headers("messaging:read")
        ).status_code
        == 403
    )

    for roles in (("messaging:read", "contacts:read"), ("messaging:write", "contacts:write"), ("admin",)):
        allowed = preview(with_contact, *roles)
        assert allowed.status_code == 200, (roles, allowed.get_json())
        assert allowed.get_json()["body"] == "Sara Rezaei <sara@example.com> +989121234567"

    plain = preview({**TEMPLATE, "variables": {"name": "Ali"}}, "messaging:read")  # no contact: as before
    assert plain.status_code == 200 and plain.get_json()["body"] == "Ali <> "
