"""Signed unsubscribe tokens: `<base64url(json)>.<base64url(hmac-sha256)>`.

The key is derived from the platform's JWT secret (so every process of the service
agrees without more configuration) but is distinct from it: a token cannot be turned
into a bearer token or the other way round. A token names a contact and a channel, and
nothing personal.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json


class BadToken(ValueError):
    pass


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"crm-messaging-unsubscribe-v1", hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: str, contact_id: str, channel: str) -> str:
    payload = _b64(json.dumps({"c": contact_id, "ch": channel}, separators=(",", ":")).encode())
    signature = _b64(hmac.new(_key(secret), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}"


def verify(secret: str, token: str) -> tuple[str, str]:
    """(contact_id, channel) from a token we signed; BadToken otherwise."""
    payload, _, signature = token.partition(".")
    if not payload or not signature or len(token) > 1000:
        raise BadToken("malformed token")
    expected = _b64(hmac.new(_key(secret), payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature):
        raise BadToken("bad signature")
    try:
        data = json.loads(_unb64(payload))
        return str(data["c"]), str(data["ch"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BadToken("malformed token") from exc
