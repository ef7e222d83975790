"""Team ownership in sales: deals and activities carry a team; team-scoped roles are confined to it."""

from __future__ import annotations

from typing import Any

from crmkit.events import new_id, utcnow
from crmkit.testing import ServiceHarness

NORTH, SOUTH = "north", "south"


def north(sales: ServiceHarness, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    """A caller holding only sales:write:team in team north."""
    return sales.call(method, path, body, "sales:write:team", team=NORTH, status=status)


def new_deal(sales: ServiceHarness, contact: str, **fields: Any) -> dict[str, Any]:
    body = {"title": "Laptops", "contact_id": contact, "amount": "10.00", "currency": "USD", **fields}
    return sales.call("POST", "/v1/deals", body, "sales:write", status=201)


def test_deals_carry_a_team_and_lists_filter_by_owner_and_team(sales: ServiceHarness, people) -> None:
    contact = people.add(new_id(), first_name="Tina")
    ours = new_deal(sales, contact, owner="ana", team=NORTH)
    theirs = new_deal(sales, contact, owner="bob", team=SOUTH)
    assert ours["team"] == NORTH and theirs["team"] == SOUTH
    moved = sales.call("PATCH", f"/v1/deals/{theirs['id']}", {"team": "west"}, "sales:write")
    assert moved["team"] == "west"
    sales.project()
    everyone = sales.call("GET", f"/v1/deals?contact_id={contact}", None, "sales:read")
    assert {d["id"] for d in everyone["items"]} == {ours["id"], theirs["id"]}
    by_team = sales.call("GET", f"/v1/deals?contact_id={contact}&team=west", None, "sales:read")
    assert [d["id"] for d in by_team["items"]] == [theirs["id"]]
    by_owner = sales.call("GET", f"/v1/deals?contact_id={contact}&owner=ana", None, "sales:read")
    assert [d["id"] for d in by_owner["items"]] == [ours["id"]]
    history = sales.call("GET", f"/v1/deals/{theirs['id']}/history", None, "sales:read")
    assert history["items"][-1]["changes"]["team"] == {"before": SOUTH, "after": "west"}


def test_a_team_scoped_caller_sees_and_changes_only_its_teams_deals(sales: ServiceHarness, people) -> None:
    contact = people.add(new_id(), first_name="Omid")
    ours = new_deal(sales, contact, team=NORTH)
    theirs = new_deal(sales, contact, team=SOUTH)
    nobodys = new_deal(sales, contact)
    sales.project()
    listed = north(sales, "GET", f"/v1/deals?contact_id={contact}")
    assert [d["id"] for d in listed["items"]] == [ours["id"]]
    assert north(sales, "GET", f"/v1/deals?contact_id={contact}&team={SOUTH}")["items"] == []
    assert north(sales, "GET", f"/v1/deals/{ours['id']}")["id"] == ours["id"]
    assert north(sales, "GET", f"/v1/deals/{ours['id']}/history")["items"]
    for other in (theirs, nobodys):
        # the same answer as for an id of no deal: whether it exists is not told
        assert north(sales, "GET", f"/v1/deals/{other['id']}", status=404)["detail"] == f"no deal with id {other['id']}"
        north(sales, "GET", f"/v1/deals/{other['id']}/history", status=404)
        north(sales, "PATCH", f"/v1/deals/{other['id']}", {"title": "mine now"}, status=404)
        north(sales, "POST", f"/v1/deals/{other['id']}/stage", {"stage": "proposal"}, status=404)
        north(sales, "POST", f"/v1/deals/{other['id']}/lost", {"reason": "x"}, status=404)
        north(sales, "POST", f"/v1/deals/{other['id']}/won", {}, status=404)
    unknown = new_id()
    assert north(sales, "GET", f"/v1/deals/{unknown}", status=404)["detail"] == f"no deal with id {unknown}"
    assert sales.call("GET", f"/v1/deals/{theirs['id']}", None, "sales:read")["title"] == "Laptops"  # unchanged
    assert north(sales, "PATCH", f"/v1/deals/{ours['id']}", {"title": "Desks"})["title"] == "Desks"
    north(sales, "PATCH", f"/v1/deals/{ours['id']}", {"team": SOUTH}, status=403)
    north(sales, "PATCH", f"/v1/deals/{ours['id']}", {"team": None}, status=403)
    assert north(sales, "POST", f"/v1/deals/{ours['id']}/won", {})["status"] == "won"


def test_a_team_scoped_create_gets_the_callers_team(sales: ServiceHarness, people) -> None:
    contact = people.add(new_id(), first_name="Neda")
    body = {"title": "Chairs", "contact_id": contact, "currency": "USD"}
    assert north(sales, "POST", "/v1/deals", body, status=201)["team"] == NORTH
    assert north(sales, "POST", "/v1/deals", {**body, "team": NORTH}, status=201)["team"] == NORTH
    refused = north(sales, "POST", "/v1/deals", {**body, "team": SOUTH}, status=403)
    assert "north" in refused["detail"]
    sales.project()
    assert len(sales.call("GET", f"/v1/deals?contact_id={contact}", None, "sales:read")["items"]) == 2


def test_read_scope_and_a_scoped_role_without_a_team(sales: ServiceHarness, people) -> None:
    contact = people.add(new_id(), first_name="Reza")
    ours = new_deal(sales, contact, team=NORTH)
    sales.project()
    reader = ("sales:read:team",)
    assert sales.call("GET", f"/v1/deals/{ours['id']}", None, *reader, team=NORTH)["id"] == ours["id"]
    sales.call("PATCH", f"/v1/deals/{ours['id']}", {"title": "x"}, *reader, team=NORTH, status=403)
    no_team = sales.call("GET", f"/v1/deals/{ours['id']}", None, *reader, status=403)
    assert "team claim" in no_team["detail"]
    # unscoped read and scoped write: reads everything, writes only its team's
    mixed = ("sales:read", "sales:write:team")
    theirs = new_deal(sales, contact, team=SOUTH)
    assert sales.call("GET", f"/v1/deals/{theirs['id']}", None, *mixed, team=NORTH)["id"] == theirs["id"]
    sales.call("PATCH", f"/v1/deals/{theirs['id']}", {"title": "x"}, *mixed, team=NORTH, status=404)


def test_activities_and_the_board_are_confined_too(sales: ServiceHarness, people) -> None:
    contact = people.add(new_id(), first_name="Leila")
    due = utcnow().isoformat()
    pipeline = sales.call(
        "POST",
        "/v1/pipelines",
        {"name": f"p-{new_id()}", "stages": [{"key": "first", "name": "First", "probability": "10"}]},
        "sales:write",
        status=201,
    )
    new_deal(sales, contact, team=NORTH, pipeline_id=pipeline["id"], amount="5.00")
    new_deal(sales, contact, team=SOUTH, pipeline_id=pipeline["id"], amount="7.00")
    mine = north(
        sales,
        "POST",
        "/v1/activities",
        {"type": "call", "subject": "hi", "due_at": due, "contact_id": contact},
        status=201,
    )
    other = sales.call(
        "POST",
        "/v1/activities",
        {"type": "call", "subject": "yo", "due_at": due, "contact_id": contact, "team": SOUTH},
        "sales:write",
        status=201,
    )
    assert mine["team"] == NORTH and other["team"] == SOUTH
    sales.project()
    listed = north(sales, "GET", f"/v1/activities?contact_id={contact}")
    assert [a["id"] for a in listed["items"]] == [mine["id"]]
    everyone = sales.call("GET", f"/v1/activities?contact_id={contact}&team={SOUTH}", None, "sales:read")
    assert [a["id"] for a in everyone["items"]] == [other["id"]]
    north(sales, "GET", f"/v1/activities/{other['id']}", status=404)
    theirs = sales.call("GET", f"/v1/deals?contact_id={contact}&team={SOUTH}", None, "sales:read")["items"][0]
    refused = north(
        sales,
        "POST",
        "/v1/activities",
        {"type": "task", "subject": "s", "due_at": due, "deal_id": theirs["id"]},
        status=422,
    )
    assert refused["errors"] == {"deal_id": [f"no deal with id {theirs['id']}"]}
    north(sales, "POST", f"/v1/activities/{other['id']}/complete", {}, status=404)
    assert north(sales, "POST", f"/v1/activities/{mine['id']}/complete", {})["status"] == "completed"
    board = north(sales, "GET", f"/v1/pipelines/{pipeline['id']}/board")
    first = board["columns"][0]
    assert first["count"] == 1 and first["sums"] == [{"amount": "5.00", "currency": "USD"}]
    whole = sales.call("GET", f"/v1/pipelines/{pipeline['id']}/board", None, "sales:read")["columns"][0]
    assert whole["count"] == 2
    assert (
        sales.call("GET", f"/v1/pipelines/{pipeline['id']}/board?team={SOUTH}", None, "sales:read")["columns"][0][
            "count"
        ]
        == 1
    )
    assert north(sales, "GET", f"/v1/pipelines/{pipeline['id']}/board?team={SOUTH}")["columns"][0]["count"] == 0


def test_what_is_not_confined_to_a_team_is_refused_to_a_scoped_caller(sales: ServiceHarness, people) -> None:
    """Quotes, the forecast and customer value span teams: a scoped role does not reach them (403),
    while products and pipelines (no team's) stay readable and their changes are not its to make."""
    contact = people.add(new_id(), first_name="Uma")
    new_deal(sales, contact, owner="ana", team=SOUTH)
    for path in ("/v1/quotes", "/v1/forecast", f"/v1/customers/{contact}/value"):
        refused = sales.call("GET", path, None, "sales:read:team", team=NORTH, status=403)
        assert "not confined to a team" in refused["detail"]
    sales.call("GET", "/v1/products", None, "sales:read:team", team=NORTH)
    sales.call("GET", "/v1/pipelines", None, "sales:read:team", team=NORTH)
    north(
        sales,
        "POST",
        "/v1/products",
        {"name": "Desk", "sku": "D-1", "unit_price": "5.00", "currency": "USD"},
        status=403,
    )
    assert sales.call("GET", "/v1/quotes", None, "sales:read")["items"] == []
