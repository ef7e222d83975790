"""Where the keys come from: the token key ring, each service's own key, and the link secret.

- Token key ring (people's tokens, `crmkit.auth`): `CRM_JWT_KEYS` (JSON, on Kubernetes
  from the `crm-jwt` Secret), else `CRM_JWT_SECRET` as the one key `default`, else the
  local ring `var/jwt-keys.json`, created on first use around the local secret
  (`var/jwt-secret`, so tokens minted before the ring existed still verify). The JSON is
  `{"signing": KID, "keys": {KID: {"secret": ..., "created": ...}}}`; `crm keys rotate`
  adds a signing key and `crm keys retire` drops an old one (docs/operations.md).
- A service's own key (service-to-service calls): `CRM_SERVICE_KEY` (its Secret), and
  every service's public key in `CRM_SERVICE_PUBLIC_KEYS` (JSON `{service: key}`); locally
  both are derived from the local secret, so nothing needs configuring.
- The link secret (`crmkit.signing`: surveys, unsubscribe links, receipts):
  `CRM_LINK_SECRET`, else generated once into `var/link-secret`. It is not the token
  secret, so rotating token keys leaves links alone and a link key never signs a token.

The ring is read again when its source changes (a rotated local file needs no restart).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from crmkit import auth
from crmkit.config import data_dir, jwt_secret, local_secret
from crmkit.events import utcnow
from crmkit.settings import credentials

_cache: dict[tuple[object, ...], auth.KeyRing] = {}
_lock = threading.Lock()
RECHECK_SECONDS = 1.0  # how often a process looks at the ring file again (rotations from another process)
_checked: dict[str | None, tuple[float, tuple[int, int, int] | None]] = {}  # per CRM_DATA_DIR: when, what stamp


class KeyRingError(ValueError):
    """A rotation or retirement that would break the ring (e.g. retiring the signing key)."""


def ring_path() -> Path:
    return data_dir() / "jwt-keys.json"


def ring() -> auth.KeyRing:
    """The keys tokens verify with, from wherever this installation keeps them."""
    known = credentials()
    source = (known.jwt_keys, known.jwt_secret, known.service_public_keys, _recent_stamp())
    with _lock:
        if source not in _cache:
            _cache.clear()
            _cache[source] = _load()
        return _cache[source]


def _recent_stamp() -> tuple[int, int, int] | None:
    """The ring file's stamp, looked at again at most every RECHECK_SECONDS: every request verifies
    a token, and resolving the data dir and stat-ing the file cost a millisecond of each create
    (bench/README.md). A rotation here is seen at once (`_write_file` forgets the last look)."""
    where, now = credentials().data_dir, time.monotonic()
    with _lock:
        looked = _checked.get(where)
        if looked is None or now - looked[0] >= RECHECK_SECONDS:
            looked = _checked[where] = (now, _stamp(ring_path()))
        return looked[1]


def identity() -> str | None:
    """The service this process runs as (set by `crm serve`, the test harness), None for tools."""
    return credentials().service_name


def own_key(service: str) -> Ed25519PrivateKey:
    """The private key `service` signs its calls with."""
    configured = credentials().service_key
    return auth.private_key_from_text(configured) if configured else auth.derive_service_key(jwt_secret(), service)


def link_secret() -> str:
    return local_secret("CRM_LINK_SECRET", "link-secret")


def rotate(path: Path | None = None) -> str:
    """Add a new signing key to the ring file (old keys keep verifying); its kid."""
    path = path or ring_path()
    document = _read_file(path)
    kid = f"k{utcnow():%Y%m%d}-{secrets.token_hex(3)}"
    document["keys"][kid] = {"secret": secrets.token_urlsafe(48), "created": _now()}
    document["signing"] = kid
    _write_file(path, document)
    return kid


def retire(kid: str | None = None, *, older_than: timedelta | None = None, path: Path | None = None) -> list[str]:
    """Drop `kid`, or every key created more than `older_than` ago, from the ring file; never the signing key."""
    path = path or ring_path()
    document = _read_file(path)
    keys, signing = document["keys"], document["signing"]
    if kid is not None:
        if kid not in keys:
            raise KeyRingError(f"no key {kid!r} in {path}")
        if kid == signing:
            raise KeyRingError(f"{kid!r} signs new tokens: rotate first, then retire it")
        chosen = [kid]
    else:
        cutoff = utcnow() - (older_than or timedelta(0))
        chosen = [k for k, v in keys.items() if k != signing and datetime.fromisoformat(v["created"]) < cutoff]
    for name in chosen:
        del keys[name]
    _write_file(path, document)
    return chosen


def describe(path: Path | None = None) -> list[dict[str, Any]]:
    """The ring file's keys (kid, created, signing), never the secrets."""
    document = _read_file(path or ring_path())
    return [
        {"kid": kid, "created": value["created"], "signing": kid == document["signing"]}
        for kid, value in document["keys"].items()
    ]


def new_service_credentials(services: list[str]) -> dict[str, tuple[str, str]]:
    """Fresh (private, public) key texts per service, for their Kubernetes Secrets."""
    made = {}
    for service in services:
        private = Ed25519PrivateKey.generate()
        made[service] = (auth.private_key_text(private), auth.public_key_text(private.public_key()))
    return made


def _load() -> auth.KeyRing:
    known = credentials()
    keys_json, single = known.jwt_keys, known.jwt_secret
    if keys_json:
        document = _parse(json.loads(keys_json))
    elif single:
        document = {"signing": auth.DEFAULT_KID, "keys": {auth.DEFAULT_KID: {"secret": single}}}
    else:
        document = _read_file(ring_path())
    keys = {kid: value["secret"] for kid, value in document["keys"].items()}
    return auth.KeyRing(keys, document["signing"], _service_public_keys())


def _service_public_keys() -> Mapping[str, Ed25519PublicKey]:
    configured = credentials().service_public_keys
    if configured:
        return {name: auth.public_key_from_text(text) for name, text in json.loads(configured).items()}
    root = jwt_secret()
    return {name: auth.derive_service_key(root, name).public_key() for name in auth.SERVICE_GRANTS}


def _parse(document: dict[str, Any]) -> dict[str, Any]:
    """A ring document, its keys normalised to {"secret", "created"}; the signing kid must be one of them."""
    keys = {
        kid: value if isinstance(value, dict) else {"secret": value, "created": _now()}
        for kid, value in document["keys"].items()
    }
    if document.get("signing") not in keys:
        raise KeyRingError("the ring's signing kid is not one of its keys")
    return {"signing": document["signing"], "keys": keys}


def _read_file(path: Path) -> dict[str, Any]:
    """The ring file, created around the local secret on first use."""
    if not path.exists():
        seeded = {"signing": auth.DEFAULT_KID, "keys": {auth.DEFAULT_KID: {"secret": jwt_secret(), "created": _now()}}}
        with contextlib.suppress(FileExistsError):  # another process made it first
            _write_file(path, seeded, exclusive=True)
    return _parse(json.loads(path.read_text(encoding="utf-8")))


def _write_file(path: Path, document: dict[str, Any], *, exclusive: bool = False) -> None:
    """Write the whole ring, then put it in place in one step: readers (other processes) see the
    old ring or the new one, never half of one. `exclusive`: FileExistsError if there is one."""
    _checked.clear()  # this process reads the new ring at once
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    temporary.write_text(json.dumps(document, indent=2), encoding="utf-8")
    os.chmod(temporary, 0o600)
    try:
        if exclusive:
            os.link(temporary, path)
        else:
            temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is rewritten (a rewrite is a new file: `_write_file` replaces it)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _now() -> str:
    return utcnow().isoformat(timespec="seconds")
