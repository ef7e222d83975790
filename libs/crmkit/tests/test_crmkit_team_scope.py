"""Team-scoped roles (`<service>:read:team`, contract.md): the rule, and that it never widens a role."""

from __future__ import annotations

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crmkit import auth
from crmkit.auth import InvalidToken, Principal

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
SERVICES = ("contacts", "sales", "servicedesk", "messaging")
ACCESSES = ("read", "write", "erase", "export")


@pytest.mark.parametrize(
    ("roles", "team", "access", "record_team", "allowed"),
    [
        ({"sales:read:team"}, "north", "read", "north", True),
        ({"sales:read:team"}, "north", "read", "south", False),
        ({"sales:read:team"}, "north", "read", None, False),
        ({"sales:read:team"}, "north", "write", "north", False),
        ({"sales:write:team"}, "north", "read", "north", True),
        ({"sales:write:team"}, "north", "write", "north", True),
        ({"sales:write:team"}, "north", "write", "south", False),
        ({"sales:read:team"}, None, "read", "north", False),  # scoped without a team claim: nothing
        ({"sales:read:team"}, None, "read", None, False),
        ({"sales:read"}, "north", "read", "south", True),  # unscoped sees all, team claim or not
        ({"sales:read", "sales:write:team"}, "north", "read", "south", True),
        ({"sales:read", "sales:write:team"}, "north", "write", "south", False),
        ({"sales:read", "sales:write:team"}, "north", "write", "north", True),
        ({"admin"}, "north", "write", "south", True),
        ({"sales:erase:team"}, "north", "erase", "north", False),  # erase and export are never scoped
        ({"contacts:read:team"}, "north", "read", "north", True),
        ({"contacts:read:team"}, "north", "read", "south", False),
        ({"sales:read:team"}, "north", "read", "North", False),  # exact names
    ],
)
def test_allows(roles: set[str], team: str | None, access: str, record_team: str | None, allowed: bool) -> None:
    service = next(role.split(":")[0] for role in roles) if roles != {"admin"} else "sales"
    assert Principal("p", frozenset(roles), team).allows(service, access, record_team) is allowed


def test_team_scope_is_none_for_an_unscoped_grant_and_the_team_otherwise() -> None:
    assert Principal("p", frozenset({"sales:read"}), "north").team_scope("sales", "read") is None
    assert Principal("p", frozenset({"admin"}), "north").team_scope("sales", "write") is None
    assert Principal("p", frozenset({"sales:read:team"}), "north").team_scope("sales", "read") == "north"
    mixed = Principal("p", frozenset({"sales:read", "sales:write:team"}), "north")
    assert mixed.team_scope("sales", "write") == "north" and mixed.team_scope("sales", "read") is None


def test_a_scoped_role_without_a_team_claim_says_so() -> None:
    assert Principal("p", frozenset({"sales:read:team"})).scoped_without_team("sales")
    assert not Principal("p", frozenset({"sales:read:team"}), "north").scoped_without_team("sales")
    assert not Principal("p", frozenset({"sales:read:team"})).scoped_without_team("contacts")


def test_the_team_claim_round_trips_and_is_left_out_when_not_given() -> None:
    principal = auth.verify(SECRET, auth.issue(SECRET, "ann", ["sales:read:team"], team="north"))
    assert principal == Principal("ann", frozenset({"sales:read:team"}), "north")
    claims = jwt.decode(auth.issue(SECRET, "bob", ["admin"]), SECRET, algorithms=["HS256"], audience="crm")
    assert "team" not in claims and auth.verify(SECRET, auth.issue(SECRET, "bob", ["admin"])).team is None


@pytest.mark.parametrize("team", [7, "", "   ", ["north"], "x" * (auth.TEAM_MAX + 1)])
def test_a_bad_team_claim_makes_the_token_invalid(team: object) -> None:
    token = jwt.encode(
        {"sub": "ann", "roles": ["sales:read:team"], "iss": "crm", "exp": 2**40, "team": team},
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(InvalidToken, match="team claim"):
        auth.verify(SECRET, token)


def _unscoped(role: str) -> str:
    return role.removesuffix(auth.TEAM_SUFFIX)


ROLE = st.builds(
    lambda service, access, scoped: f"{service}:{access}{':team' if scoped else ''}",
    st.sampled_from(SERVICES),
    st.sampled_from(ACCESSES),
    st.booleans(),
) | st.just("admin")


@given(
    roles=st.frozensets(ROLE, max_size=5),
    team=st.none() | st.sampled_from(["north", "south"]),
    service=st.sampled_from(SERVICES),
    access=st.sampled_from(ACCESSES),
    record_team=st.none() | st.sampled_from(["north", "south", "west"]),
)
def test_a_scoped_role_never_grants_more_than_its_unscoped_one(
    roles: frozenset[str], team: str | None, service: str, access: str, record_team: str | None
) -> None:
    """Whatever a token with scoped roles may touch, the same token with them unscoped may too."""
    scoped = Principal("p", roles, team)
    unscoped = Principal("p", frozenset(_unscoped(role) for role in roles), team)
    if scoped.allows(service, access, record_team):
        assert unscoped.allows(service, access, record_team)
        assert unscoped.team_scope(service, access) is None


@given(
    roles=st.frozensets(ROLE, max_size=5),
    service=st.sampled_from(SERVICES),
    access=st.sampled_from(ACCESSES),
    record_team=st.none() | st.sampled_from(["north", "south"]),
)
def test_without_a_team_claim_scoped_roles_add_nothing(
    roles: frozenset[str], service: str, access: str, record_team: str | None
) -> None:
    with_scoped = Principal("p", roles)
    without = Principal("p", frozenset(role for role in roles if not role.endswith(auth.TEAM_SUFFIX)))
    assert with_scoped.allows(service, access, record_team) == without.allows(service, access, record_team)
