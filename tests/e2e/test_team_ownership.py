"""Issue 17: team ownership on `crm up`, through public APIs and `crm token --team` only.

A manager of team north holds `sales:write:team` with a `team` claim: the deals they open are
north's, their deal list and pipeline board ("my team's pipeline") hold north's deals only, and
a deal of team south is a 404 to them, as an unknown id is, while an unscoped reader sees both.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from crmkit.events import new_id
from crmkit.testing import wait_until

from .conftest import LocalStack

pytestmark = pytest.mark.e2e
SLOW = 60  # seconds: the deals read model is folded from the topic


def as_team(crm: LocalStack, roles: str, team: str) -> LocalStack:
    """The stack as seen with a token `crm token` mints for `team` (the shared fixture untouched)."""
    minted = subprocess.run(
        [sys.executable, "-m", "crmkit.cli", "token", "--roles", roles, "--team", team, "--subject", f"manager-{team}"],
        env=crm.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    scoped = copy.copy(crm)
    scoped.token = minted.stdout.strip()
    return scoped


def test_a_team_scoped_manager_sees_and_changes_only_their_teams_deals(crm: LocalStack) -> None:
    north, south = f"north-{new_id()[-8:]}", f"south-{new_id()[-8:]}"
    manager = as_team(crm, "sales:write:team", north)
    contact = crm.ok("contacts", "POST", "/v1/contacts", {"first_name": "Parisa", "email": f"{north}@example.com"}, 201)
    pipeline = crm.ok(
        "sales", "POST", "/v1/pipelines", {"name": "Teams", "stages": [{"name": "Pitch", "probability": "50"}]}, 201
    )
    body = {"title": "Fleet", "contact_id": contact["id"], "pipeline_id": pipeline["id"], "currency": "EUR"}
    ours = manager.ok("sales", "POST", "/v1/deals", {**body, "amount": "100.00", "owner": "neda"}, 201)
    assert ours["team"] == north
    theirs = crm.ok("sales", "POST", "/v1/deals", {**body, "amount": "900.00", "team": south}, 201)
    code, _ = manager.call("sales", "POST", "/v1/deals", {**body, "team": south})
    assert code == 403

    def listed(stack: LocalStack, query: str = "") -> set[str]:
        page = stack.ok("sales", "GET", f"/v1/deals?contact_id={contact['id']}{query}")
        return {deal["id"] for deal in page["items"]}

    wait_until(lambda: listed(crm) == {ours["id"], theirs["id"]}, timeout=SLOW, what="both deals to be listed")
    assert listed(manager) == {ours["id"]}
    assert listed(crm, f"&team={south}") == {theirs["id"]}
    assert listed(crm, "&owner=neda") == {ours["id"]}
    assert listed(manager, f"&team={south}") == set()

    for path in (f"/v1/deals/{theirs['id']}", f"/v1/deals/{theirs['id']}/history"):
        code, problem = manager.call("sales", "GET", path)
        assert code == 404 and problem["detail"] == f"no deal with id {theirs['id']}"
    code, _ = manager.call("sales", "POST", f"/v1/deals/{theirs['id']}/won", {})
    assert code == 404
    assert crm.ok("sales", "GET", f"/v1/deals/{theirs['id']}")["status"] == "open"
    assert manager.ok("sales", "PATCH", f"/v1/deals/{ours['id']}", {"title": "Fleet 2"})["title"] == "Fleet 2"

    board = manager.ok("sales", "GET", f"/v1/pipelines/{pipeline['id']}/board")
    assert board["columns"][0]["count"] == 1
    assert board["columns"][0]["sums"] == [{"amount": "100.00", "currency": "EUR"}]
    assert crm.ok("sales", "GET", f"/v1/pipelines/{pipeline['id']}/board")["columns"][0]["count"] == 2
    # what spans teams (quotes, the forecast, customer value) is closed to a team-scoped role
    assert manager.call("sales", "GET", "/v1/quotes")[0] == 403
    assert crm.call("sales", "GET", "/v1/quotes")[0] == 200
