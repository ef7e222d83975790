"""Team ownership at the REST edge: confining a team-scoped caller to their team's records.

A token with `<service>:read:team` or `<service>:write:team` and a `team` claim sees and
changes only records whose `team` is that team (crmkit.auth). For such a caller:

- a list is filtered by the team; asking it for another team's records gives an empty page;
- another team's record (or one of no team) is a 404 naming no more than a missing one
  would, so a scoped caller cannot learn that it exists;
- a create is given the caller's team, and naming another team (or moving a record to
  one, or out of every team) is a 403: a request the caller may not make, not bad input.

Unscoped callers (`<service>:read`, `admin`) are left alone: every helper is a no-op.
"""

from __future__ import annotations

from typing import Any

from crmkit.errors import NotFound
from crmkit.web.endpoint import Forbidden, team_scope


def list_filters(filters: dict[str, Any], asked: str | None = None) -> dict[str, Any] | None:
    """`filters` with the team asked for (`?team=`) and the caller's scope; None when they differ
    (a scoped caller asking for another team's records: the answer is an empty page)."""
    scope = team_scope()
    if scope is not None and asked not in (None, scope):
        return None
    team = scope or asked
    return {**filters, "team": team} if team else filters


def require_visible(record_team: str | None, kind: str, record_id: str) -> None:
    """A 404 (as for a missing record) when the caller is confined to a team the record is not of."""
    scope = team_scope()
    if scope is not None and record_team != scope:
        raise NotFound(f"no {kind} with id {record_id}")


def claim_for_create(body: dict[str, Any]) -> dict[str, Any]:
    """A new record's fields: a scoped caller's team filled in; naming another team is a 403."""
    scope = team_scope()
    if scope is None:
        return body
    if body.get("team") not in (None, scope):
        raise Forbidden(f"a caller confined to team {scope!r} creates records of that team only")
    return {**body, "team": scope}


def check_change(body: dict[str, Any]) -> None:
    """A scoped caller's change may not give the record to another team (or to none)."""
    scope = team_scope()
    if scope is not None and "team" in body and body["team"] != scope:
        raise Forbidden(f"a caller confined to team {scope!r} cannot move a record out of it")
