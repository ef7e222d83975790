"""Signed tokens for links that act without a login: `<base64url(json)>.<base64url(hmac-sha256)>`.

Used for messaging's unsubscribe links and the public pages (the surveys, the details
confirmation; `crmkit.web.links` opens them with the pages' 404/410).
The JSON holds the purpose (`p`), an optional expiry (`x`, epoch seconds) and the data
(`d`, small and not personal: ids). The key is derived with HKDF from the link secret
(`CRM_LINK_SECRET`, see crmkit.keys) and the purpose, so every process of every service
can mint and check a purpose's tokens, a token of one purpose is refused for another, and
the token signing keys never sign a link (rotating those leaves links alone; a leaked
link key signs no bearer token). Changing the link secret invalidates every link issued
before. Expiry is judged on `crmkit.clock`, the clock tests move.

A token is authentic, not secret: anyone holding the link can read its data. Single use,
where wanted, is the receiving command's rule (e.g. a ticket is rated once).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crmkit import clock
from crmkit.keys import link_secret

MAX_TOKEN_LENGTH = 2000


class BadToken(ValueError):
    """Malformed, forged, of another purpose, or expired; `str()` says which (never echo the token)."""


def _key(secret: str, purpose: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=b"crm-links", info=f"crm-signed-token:{purpose}".encode()).derive(
        secret.encode()
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, purpose: str, payload: str) -> str:
    return _b64(hmac.new(_key(secret, purpose), payload.encode(), hashlib.sha256).digest())


def sign(
    purpose: str,
    data: dict[str, Any],
    *,
    ttl: timedelta | None = None,
    secret: str | None = None,
    now: datetime | None = None,
) -> str:
    """A token carrying `data` for `purpose`, valid for `ttl` from `now` (None: no expiry)."""
    expires = None if ttl is None else int(((now or clock.now()) + ttl).timestamp())
    body = json.dumps({"p": purpose, "x": expires, "d": data}, separators=(",", ":"), sort_keys=True)
    payload = _b64(body.encode())
    return f"{payload}.{_signature(secret or link_secret(), purpose, payload)}"


def verify(purpose: str, token: str, *, secret: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The data of a token we signed for `purpose` that has not expired; BadToken otherwise."""
    payload, _, signature = token.partition(".")
    # both halves are base64url; anything else (a link may carry any Unicode) is refused before
    # hmac.compare_digest, which raises TypeError on non-ASCII text
    if not payload or not signature or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise BadToken("malformed token")
    if not hmac.compare_digest(_signature(secret or link_secret(), purpose, payload), signature):
        raise BadToken("bad signature")
    try:
        body = json.loads(_unb64(payload))
        claimed, expires, data = body["p"], body["x"], body["d"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BadToken("malformed token") from exc
    if claimed != purpose or not isinstance(data, dict):
        raise BadToken("malformed token")
    if expires is not None and (now or clock.now()).timestamp() >= float(expires):
        raise BadToken("expired")
    return data
