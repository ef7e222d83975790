"""Bearer tokens: HS256 JWTs with a `roles` claim (contract.md).

Roles are `admin` or `<service>:read` / `<service>:write` / `<service>:erase`. A read
needs `:read` or `:write`, a write needs `:write`, erasure needs `:erase`, and `admin`
passes everything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ISSUER = "crm"
ALGORITHM = "HS256"


class InvalidToken(Exception):
    """No token, a malformed one, a bad signature, or an expired one."""


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]

    def may(self, service: str, access: str) -> bool:
        """Whether this principal may `access` ("read", "write" or "erase") `service`.

        Erasure destroys a person's data for good, so `:write` does not imply it: it takes
        `<service>:erase` or admin (contract.md).
        """
        if "admin" in self.roles:
            return True
        if access == "erase":
            return f"{service}:erase" in self.roles
        return f"{service}:write" in self.roles or (access == "read" and f"{service}:read" in self.roles)


def needed_roles(service: str, access: str) -> str:
    """The roles that allow `access`, as an error message names them."""
    if access == "erase":
        return f"{service}:erase (or admin)"
    return f"{service}:{access} (or {service}:write, or admin)"


def issue(secret: str, subject: str, roles: list[str], ttl_seconds: int = 12 * 3600) -> str:
    now = int(time.time())
    claims = {"sub": subject, "roles": roles, "iss": ISSUER, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], issuer=ISSUER, options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    roles = claims.get("roles")
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise InvalidToken("the roles claim must be a list of strings")
    return Principal(subject=str(claims["sub"]), roles=frozenset(roles))


def from_header(secret: str, header: str | None) -> Principal:
    if not header:
        raise InvalidToken("missing Authorization header")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("expected 'Authorization: Bearer <token>'")
    return verify(secret, token.strip())
