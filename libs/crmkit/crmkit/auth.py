"""Bearer tokens: JWTs with a `roles` claim and an audience (contract.md).

Roles are `admin` or `<service>:read` / `<service>:write` / `<service>:erase` /
`<service>:export`. A read needs `:read` or `:write`, a write needs `:write`, erasure needs
`:erase`, a person's whole-record export (their data subject access request) `:export`, and
`admin` passes everything.

Roles may be narrowed to a team (contract.md): `<service>:read:team` and
`<service>:write:team` grant read or write only on records whose `team` is the token's
`team` claim, while the unscoped roles and `admin` see every record. A scoped role in a
token without a `team` claim grants nothing. `Principal.team_scope` tells a view which
records a request may touch: None for all of them, else the team's name.

Two kinds of token verify:

- People's tokens (`crm token`): HS256, signed with one key of a key ring and naming it
  in the `kid` header, so a new signing key can be added while the old ones still verify
  until they are retired (rotation without logging everyone out, docs/operations.md).
  A token without `kid` is checked against the `default` key (`CRM_JWT_SECRET`).
- Service tokens (one service calling another over gRPC): EdDSA, signed with the calling
  service's own private key (`kid: service:<name>`), short-lived, and never carrying a
  role beyond what `SERVICE_GRANTS` gives that service. A service holds only its own
  private key, so it cannot speak for another service.

`aud` names the services a token is for (their slugs); `crm` means every service.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crmkit.events import utcnow

ISSUER = "crm"
ALGORITHM = "HS256"
SERVICE_ALGORITHM = "EdDSA"
DEFAULT_KID = "default"  # the key CRM_JWT_SECRET names, and the one a token without `kid` is checked with
EVERY_SERVICE = "crm"  # the audience of a token for every service of the installation
SERVICE_KID_PREFIX = "service:"
SERVICE_TOKEN_TTL = 300  # seconds; callers re-mint well before expiry
SINGLE_ROLE_ACCESS = ("erase", "export")  # each needs its own role (or admin): no other role implies it
TEAM_SUFFIX = ":team"  # `<service>:read:team`: the role narrowed to the token's team
TEAM_MAX = 100  # characters of a team name, the claim's and a record's `team` field's bound

# What each service may do when it calls another one: the only roles its tokens carry.
SERVICE_GRANTS: Mapping[str, frozenset[str]] = {
    # the customer 360; and a person's export, which gathers their records from the other three
    "contacts": frozenset(
        {"sales:read", "servicedesk:read", "messaging:read", "sales:export", "servicedesk:export", "messaging:export"}
    ),
    "sales": frozenset({"contacts:read"}),
    # contact checks; the sender of a support mail or SMS nobody knew becomes a contact (CreateContact)
    "service-desk": frozenset({"contacts:read", "contacts:write"}),
    "messaging": frozenset({"contacts:read", "contacts:write"}),  # consent checks; unsubscribe records consent
}


class InvalidToken(Exception):
    """No token, a malformed one, a bad signature, an expired one, or one for another service."""


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]
    team: str | None = None  # the token's `team` claim: where its team-scoped roles apply

    def may(self, service: str, access: str) -> bool:
        """Whether this principal may `access` ("read", "write", "erase" or "export") `service`.

        Erasure destroys a person's data for good, so `:write` does not imply it: it takes
        `<service>:erase` or admin (contract.md). An export hands over everything held on a
        person at once (a data subject access request), so neither `:read` nor `:write`
        implies it: it takes `<service>:export` or admin. A team-scoped role counts only
        with a `team` claim, and then only for that team's records (`team_scope`).
        """
        return self._grants(service, access, "") or (
            self.team is not None and self._grants(service, access, TEAM_SUFFIX)
        )

    def team_scope(self, service: str, access: str) -> str | None:
        """The team whose records `access` is confined to, or None for every record.

        Meaningful once `may` said yes: an unscoped role (or admin) wins over a scoped one,
        so a token with `sales:read` and `sales:write:team` reads all and writes its team's.
        """
        return None if self._grants(service, access, "") else self.team

    def allows(self, service: str, access: str, record_team: str | None) -> bool:
        """Whether this principal may `access` a record of `record_team` (None: a record of no team)."""
        if not self.may(service, access):
            return False
        scope = self.team_scope(service, access)
        return scope is None or scope == record_team

    def scoped_without_team(self, service: str) -> bool:
        """A team-scoped role on `service` in a token that names no team: why it was refused."""
        return self.team is None and any(
            role.startswith(f"{service}:") and role.endswith(TEAM_SUFFIX) for role in self.roles
        )

    def _grants(self, service: str, access: str, suffix: str) -> bool:
        if "admin" in self.roles:
            return not suffix  # admin is never narrowed
        if access in SINGLE_ROLE_ACCESS:
            return not suffix and f"{service}:{access}" in self.roles
        return f"{service}:write{suffix}" in self.roles or (
            access == "read" and f"{service}:read{suffix}" in self.roles
        )


@dataclass(frozen=True)
class KeyRing:
    """The keys tokens verify with: HS256 secrets by `kid` (one of them signs) and services' public keys."""

    keys: Mapping[str, str]
    signing: str
    services: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def single(cls, secret: str) -> KeyRing:
        """One secret, as `CRM_JWT_SECRET` gives it (and `issue(secret, ...)` takes it)."""
        return cls({DEFAULT_KID: secret}, DEFAULT_KID)


def needed_roles(service: str, access: str) -> str:
    """The roles that allow `access`, as an error message names them."""
    if access in SINGLE_ROLE_ACCESS:
        return f"{service}:{access} (or admin)"
    return f"{service}:{access} (or {service}:write, or admin)"


def issue(
    secret: str | KeyRing,
    subject: str,
    roles: list[str],
    ttl_seconds: int = 12 * 3600,
    *,
    audience: str | Sequence[str] = EVERY_SERVICE,
    team: str | None = None,
) -> str:
    """A person's token, signed with the ring's signing key (or `secret`); for `audience` (slugs, or `crm`).

    `team` is the claim team-scoped roles (`sales:read:team`) are confined to.
    """
    ring = _ring(secret)
    now = int(utcnow().timestamp())  # the wall clock (crmkit.clock): a moved test clock must not expire tokens
    claims = {
        "sub": subject,
        "roles": roles,
        "iss": ISSUER,
        "iat": now,
        "exp": now + ttl_seconds,
        "aud": [audience] if isinstance(audience, str) else list(audience),
    }
    if team is not None:
        claims["team"] = team
    return jwt.encode(claims, ring.keys[ring.signing], algorithm=ALGORITHM, headers={"kid": ring.signing})


def service_token(service: str, key: Ed25519PrivateKey, audience: str, ttl_seconds: int = SERVICE_TOKEN_TTL) -> str:
    """A token for `service` calling `audience` (a slug): only its granted roles on that service."""
    roles = sorted(role for role in SERVICE_GRANTS.get(service, ()) if role.startswith(f"{audience}:"))
    now = int(utcnow().timestamp())  # the wall clock (crmkit.clock): a moved test clock must not expire tokens
    claims = {
        "sub": f"{SERVICE_KID_PREFIX}{service}",
        "roles": roles,
        "iss": ISSUER,
        "iat": now,
        "exp": now + ttl_seconds,
        "aud": [audience],
    }
    return jwt.encode(claims, key, algorithm=SERVICE_ALGORITHM, headers={"kid": f"{SERVICE_KID_PREFIX}{service}"})


def verify(secret: str | KeyRing, token: str, *, audience: str | None = None) -> Principal:
    """The principal of a token we signed, for `audience` when given (a service's slug); InvalidToken otherwise."""
    ring = _ring(secret)
    try:
        kid = jwt.get_unverified_header(token).get("kid", DEFAULT_KID)
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    if not isinstance(kid, str):
        raise InvalidToken("the kid header must be a string")
    if kid.startswith(SERVICE_KID_PREFIX):
        return _verify_service(ring, kid, token, audience)
    if kid not in ring.keys:
        raise InvalidToken(f"unknown signing key {kid!r} (retired, or never issued here)")
    return _principal(_decode(token, ring.keys[kid], ALGORITHM, audience))


def from_header(secret: str | KeyRing, header: str | None, *, audience: str | None = None) -> Principal:
    """The principal of an `Authorization: Bearer <token>` header (HTTP header or gRPC metadata)."""
    if not header:
        raise InvalidToken("missing Authorization header")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("expected 'Authorization: Bearer <token>'")
    return verify(secret, token.strip(), audience=audience)


def derive_service_key(root: str, service: str) -> Ed25519PrivateKey:
    """A service's private key derived from a root secret (the local stack: nothing to configure)."""
    seed = HKDF(hashes.SHA256(), 32, salt=None, info=f"crm-service-key:{service}".encode()).derive(root.encode())
    return Ed25519PrivateKey.from_private_bytes(seed)


def private_key_from_text(text: str) -> Ed25519PrivateKey:
    """A private key written as base64url of its 32-byte seed (CRM_SERVICE_KEY)."""
    return Ed25519PrivateKey.from_private_bytes(_unb64(text))


def public_key_from_text(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_unb64(text))


def public_key_text(key: Ed25519PublicKey) -> str:
    return _b64(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def private_key_text(key: Ed25519PrivateKey) -> str:
    return _b64(key.private_bytes_raw())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))


def _ring(secret: str | KeyRing) -> KeyRing:
    return secret if isinstance(secret, KeyRing) else KeyRing.single(secret)


def _verify_service(ring: KeyRing, kid: str, token: str, audience: str | None) -> Principal:
    service = kid.removeprefix(SERVICE_KID_PREFIX)
    if service not in ring.services:
        raise InvalidToken(f"unknown service {service!r}")
    principal = _principal(_decode(token, ring.services[service], SERVICE_ALGORITHM, audience))
    if principal.subject != kid:
        raise InvalidToken("a service token's subject must be its service")
    if not principal.roles <= SERVICE_GRANTS.get(service, frozenset()):
        raise InvalidToken(f"roles beyond what {service} is granted")
    return principal


def _decode(token: str, key: str | Ed25519PublicKey, algorithm: str, audience: str | None) -> dict[str, Any]:
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=ISSUER,
            audience=[audience, EVERY_SERVICE] if audience else None,
            options={"require": ["exp", "sub"], "verify_aud": audience is not None},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc


def _principal(claims: dict[str, Any]) -> Principal:
    roles = claims.get("roles")
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise InvalidToken("the roles claim must be a list of strings")
    team = claims.get("team")
    if team is not None and (not isinstance(team, str) or not team.strip() or len(team) > TEAM_MAX):
        raise InvalidToken(f"the team claim must be a non-empty string of at most {TEAM_MAX} characters")
    return Principal(subject=str(claims["sub"]), roles=frozenset(roles), team=team)
