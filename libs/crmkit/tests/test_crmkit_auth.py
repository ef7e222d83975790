"""Bearer tokens and the role rules of contract.md (no servers)."""

from __future__ import annotations

import time

import jwt
import pytest

from crmkit import auth
from crmkit.auth import InvalidToken, Principal

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def test_issue_then_verify_gives_the_subject_and_roles() -> None:
    token = auth.issue(SECRET, "alice", ["contacts:read", "sales:write"])
    principal = auth.verify(SECRET, token)
    assert principal == Principal("alice", frozenset({"contacts:read", "sales:write"}))


def test_issued_claims() -> None:
    before = int(time.time())
    claims = jwt.decode(
        auth.issue(SECRET, "bob", ["admin"], ttl_seconds=60), SECRET, algorithms=["HS256"], issuer="crm", audience="crm"
    )
    assert claims["sub"] == "bob" and claims["roles"] == ["admin"] and claims["iss"] == "crm"
    assert claims["aud"] == ["crm"]  # no audience named: every service
    assert before <= claims["iat"] <= claims["exp"] - 60 + 1


@pytest.mark.parametrize(
    ("roles", "service", "access", "allowed"),
    [
        ({"admin"}, "contacts", "read", True),
        ({"admin"}, "servicedesk", "write", True),
        ({"contacts:read"}, "contacts", "read", True),
        ({"contacts:read"}, "contacts", "write", False),
        ({"contacts:write"}, "contacts", "read", True),
        ({"contacts:write"}, "contacts", "write", True),
        ({"contacts:write"}, "sales", "read", False),
        ({"contacts:read"}, "sales", "read", False),
        ({"sales:read", "contacts:write"}, "sales", "write", False),
        ({"sales:read", "contacts:write"}, "sales", "read", True),
        (set(), "contacts", "read", False),
        ({"contacts"}, "contacts", "read", False),
        ({"ADMIN"}, "contacts", "read", False),
        ({"contacts:admin"}, "contacts", "write", False),
        ({"admin"}, "contacts", "erase", True),
        ({"contacts:erase"}, "contacts", "erase", True),
        ({"contacts:write"}, "contacts", "erase", False),
        ({"contacts:erase"}, "contacts", "write", False),
        ({"contacts:erase"}, "contacts", "read", False),
        ({"sales:erase"}, "contacts", "erase", False),
    ],
)
def test_principal_may(roles: set[str], service: str, access: str, allowed: bool) -> None:
    assert Principal("p", frozenset(roles)).may(service, access) is allowed


def test_expired_token_is_invalid() -> None:
    token = auth.issue(SECRET, "alice", ["admin"], ttl_seconds=-10)
    with pytest.raises(InvalidToken, match="xpired"):
        auth.verify(SECRET, token)


def test_bad_signature_is_invalid() -> None:
    token = auth.issue("another-secret-of-sufficient-length-32b", "alice", ["admin"])
    with pytest.raises(InvalidToken):
        auth.verify(SECRET, token)


def test_tampered_payload_is_invalid() -> None:
    header, payload, signature = auth.issue(SECRET, "alice", ["contacts:read"]).split(".")
    forged = jwt.encode(
        {"sub": "alice", "roles": ["admin"], "iss": "crm", "exp": int(time.time()) + 60}, "x" * 32, algorithm="HS256"
    ).split(".")[1]
    assert auth.verify(SECRET, f"{header}.{payload}.{signature}").roles == {"contacts:read"}
    with pytest.raises(InvalidToken):
        auth.verify(SECRET, f"{header}.{forged}.{signature}")  # admin claimed, original signature


def _token(claims: dict, algorithm: str = "HS256", key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "a", "iss": "crm"},  # no roles claim
        {"sub": "a", "iss": "crm", "roles": "admin"},  # not a list
        {"sub": "a", "iss": "crm", "roles": ["admin", 7]},  # not all strings
        {"sub": "a", "iss": "crm", "roles": None},
        {"iss": "crm", "roles": ["admin"]},  # no subject
        {"sub": "a", "roles": ["admin"]},  # no issuer
        {"sub": "a", "iss": "someone-else", "roles": ["admin"]},
    ],
)
def test_claims_that_make_a_token_invalid(claims: dict) -> None:
    with pytest.raises(InvalidToken):
        auth.verify(SECRET, _token({"exp": int(time.time()) + 60, **claims}))


def test_token_without_expiry_is_invalid() -> None:
    with pytest.raises(InvalidToken):
        auth.verify(SECRET, _token({"sub": "a", "iss": "crm", "roles": ["admin"]}))


def test_unsigned_token_is_invalid() -> None:
    unsigned = jwt.encode(
        {"sub": "a", "iss": "crm", "roles": ["admin"], "exp": int(time.time()) + 60}, None, algorithm="none"
    )
    with pytest.raises(InvalidToken):
        auth.verify(SECRET, unsigned)


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "Bearer x"])
def test_malformed_token_is_invalid(token: str) -> None:
    with pytest.raises(InvalidToken):
        auth.verify(SECRET, token)


class TestHeader:
    def test_bearer_header(self) -> None:
        token = auth.issue(SECRET, "alice", ["admin"])
        assert auth.from_header(SECRET, f"Bearer {token}").subject == "alice"
        assert auth.from_header(SECRET, f"bearer  {token} ").subject == "alice"

    @pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc"])
    def test_missing_or_other_schemes_are_invalid(self, header: str | None) -> None:
        with pytest.raises(InvalidToken):
            auth.from_header(SECRET, header)
