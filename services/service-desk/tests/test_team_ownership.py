"""Team ownership on the service desk: a ticket's owning team (beside the agent group that works it)
and the confinement of team-scoped roles (`servicedesk:write:team` with a `team` claim)."""

from __future__ import annotations

from typing import Any

from crmkit.events import new_id
from crmkit.testing import ServiceHarness

NORTH, SOUTH = "north", "south"


def north(desk: ServiceHarness, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    return desk.call(method, path, body, "servicedesk:write:team", team=NORTH, status=status)


def ticket(contact: str, **fields: Any) -> dict[str, Any]:
    return {"subject": "Printer jams", "contact_id": contact, "channel": "web", "type": "incident", **fields}


def test_tickets_carry_a_team_apart_from_their_group_and_lists_filter_by_it(desk: ServiceHarness, directory) -> None:
    contact = directory.add(new_id())
    ours = desk.call(
        "POST",
        "/v1/tickets",
        ticket(contact, team=NORTH, group="billing", assignee="ana"),
        "servicedesk:write",
        status=201,
    )
    theirs = desk.call(
        "POST", "/v1/tickets", ticket(contact, team=SOUTH, group="billing"), "servicedesk:write", status=201
    )
    untagged = desk.call("POST", "/v1/tickets", ticket(contact), "servicedesk:write", status=201)
    assert (ours["team"], ours["group"], untagged["team"]) == (NORTH, "billing", None)
    desk.project()
    listed = desk.call("GET", f"/v1/tickets?contact_id={contact}&team={SOUTH}", None, "servicedesk:read")
    assert [t["id"] for t in listed["items"]] == [theirs["id"]]
    by_owner = desk.call("GET", f"/v1/tickets?contact_id={contact}&assignee=ana", None, "servicedesk:read")
    assert [t["id"] for t in by_owner["items"]] == [ours["id"]]


def test_a_team_scoped_caller_sees_and_changes_only_its_teams_tickets(desk: ServiceHarness, directory) -> None:
    contact = directory.add(new_id())
    theirs = desk.call("POST", "/v1/tickets", ticket(contact, team=SOUTH), "servicedesk:write", status=201)
    ours = north(desk, "POST", "/v1/tickets", ticket(contact), status=201)
    assert ours["team"] == NORTH
    north(desk, "POST", "/v1/tickets", ticket(contact, team=SOUTH), status=403)
    desk.project()
    assert [t["id"] for t in north(desk, "GET", f"/v1/tickets?contact_id={contact}")["items"]] == [ours["id"]]
    assert north(desk, "GET", f"/v1/tickets?contact_id={contact}&team={SOUTH}")["items"] == []
    for method, path, body in (
        ("GET", "", None),
        ("GET", "/history", None),
        ("POST", "/comments", {"body": "hello", "public": True}),
        ("POST", "/assign", {"assignee": "me"}),
        ("POST", "/status", {"status": "open"}),
    ):
        answer = north(desk, method, f"/v1/tickets/{theirs['id']}{path}", body, status=404)
        assert answer["detail"] == f"no ticket with id {theirs['id']}"
    assert desk.call("GET", f"/v1/tickets/{theirs['id']}", None, "servicedesk:read")["comments"] == []
    commented = north(desk, "POST", f"/v1/tickets/{ours['id']}/comments", {"body": "on it", "public": True}, status=201)
    assert commented["comments"][0]["body"] == "on it"
    assert north(desk, "GET", f"/v1/tickets/{ours['id']}/history")["items"]
    no_team = desk.call("GET", f"/v1/tickets/{ours['id']}", None, "servicedesk:read:team", status=403)
    assert "team claim" in no_team["detail"]
