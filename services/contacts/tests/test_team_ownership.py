"""Team ownership in contacts: a contact's owning team, and team-scoped roles confined to it."""

from __future__ import annotations

from typing import Any

from crmkit.events import new_id
from crmkit.testing import ServiceHarness

NORTH, SOUTH = "north", "south"


def north(contacts: ServiceHarness, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    return contacts.call(method, path, body, "contacts:write:team", team=NORTH, status=status)


def person(tag: str, **fields: Any) -> dict[str, Any]:
    return {"first_name": "Kian", "tags": [tag], **fields}


def test_contacts_carry_a_team_and_lists_filter_by_owner_and_team(contacts: ServiceHarness) -> None:
    tag = f"t{new_id()[-10:]}".lower()
    ours = contacts.call("POST", "/v1/contacts", person(tag, owner="ana", team=NORTH), "contacts:write", status=201)
    theirs = contacts.call("POST", "/v1/contacts", person(tag, team=SOUTH), "contacts:write", status=201)
    assert (ours["team"], theirs["team"]) == (NORTH, SOUTH)
    moved = contacts.call("PATCH", f"/v1/contacts/{theirs['id']}", {"team": "west"}, "contacts:write")
    assert moved["team"] == "west"
    contacts.project()
    listed = contacts.call("GET", f"/v1/contacts?tag={tag}&team=west", None, "contacts:read")
    assert [c["id"] for c in listed["items"]] == [theirs["id"]]
    by_owner = contacts.call("GET", f"/v1/contacts?tag={tag}&owner=ana", None, "contacts:read")
    assert [c["id"] for c in by_owner["items"]] == [ours["id"]]


def test_a_team_scoped_caller_sees_and_changes_only_its_teams_contacts(contacts: ServiceHarness) -> None:
    tag = f"t{new_id()[-10:]}".lower()
    theirs = contacts.call("POST", "/v1/contacts", person(tag, team=SOUTH), "contacts:write", status=201)
    ours = north(contacts, "POST", "/v1/contacts", person(tag), status=201)
    assert ours["team"] == NORTH
    north(contacts, "POST", "/v1/contacts", person(tag, team=SOUTH), status=403)
    contacts.project()
    assert [c["id"] for c in north(contacts, "GET", f"/v1/contacts?tag={tag}")["items"]] == [ours["id"]]
    assert north(contacts, "GET", f"/v1/contacts?tag={tag}&team={SOUTH}")["items"] == []
    consent = {"status": "granted", "source": "form", "legal_basis": "consent"}
    for method, path, body in (
        ("GET", "", None),
        ("GET", "/history", None),
        ("GET", "/consents", None),
        ("GET", "/360", None),
        ("PATCH", "", {"last_name": "X"}),
        ("PUT", "/consents/email", consent),
    ):
        answer = north(contacts, method, f"/v1/contacts/{theirs['id']}{path}", body, status=404)
        assert answer["detail"] == f"no contact with id {theirs['id']}"
    north(contacts, "POST", f"/v1/contacts/{ours['id']}/merge", {"duplicate_id": theirs["id"]}, status=404)
    assert contacts.call("GET", f"/v1/contacts/{theirs['id']}", None, "contacts:read")["status"] == "active"
    assert north(contacts, "PATCH", f"/v1/contacts/{ours['id']}", {"last_name": "Rad"})["last_name"] == "Rad"
    north(contacts, "PATCH", f"/v1/contacts/{ours['id']}", {"team": SOUTH}, status=403)
    no_team = contacts.call("GET", f"/v1/contacts/{ours['id']}", None, "contacts:read:team", status=403)
    assert "team claim" in no_team["detail"]


def test_what_is_not_confined_to_a_team_is_refused_to_a_scoped_caller(contacts: ServiceHarness) -> None:
    """Duplicates, segments, imports, insights, companies and unmerge span teams: a scoped role does
    not reach them (403, nothing changed), where contacts:read does."""
    for path in ("/v1/duplicates", "/v1/segments", "/v1/imports", "/v1/insights/stale-records", "/v1/companies"):
        refused = contacts.call("GET", path, None, "contacts:read:team", team=NORTH, status=403)
        assert "not confined to a team" in refused["detail"]
        contacts.call("GET", path, None, "contacts:read")
