"""The token key ring (rotation without logging everyone out), audiences, and `crm token`/`crm keys`."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from crmkit import auth, cli, keys


@pytest.fixture
def local_ring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The local stack's ring file, in a data directory of the test's own (no secret in the environment)."""
    monkeypatch.setenv("CRM_DATA_DIR", str(tmp_path))
    for name in ("CRM_JWT_SECRET", "CRM_JWT_KEYS", "CRM_SERVICE_PUBLIC_KEYS", "CRM_SERVICE_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "jwt-keys.json"


def test_a_rotated_key_signs_while_the_old_one_verifies_until_retired(local_ring: Path) -> None:
    old = auth.issue(keys.ring(), "alice", ["contacts:read"])
    new_kid = keys.rotate()
    new = auth.issue(keys.ring(), "bob", ["contacts:read"])  # no restart: the ring is read again
    assert jwt.get_unverified_header(new)["kid"] == new_kid != jwt.get_unverified_header(old)["kid"]
    assert auth.verify(keys.ring(), old, audience="contacts").subject == "alice"
    assert auth.verify(keys.ring(), new, audience="contacts").subject == "bob"

    assert keys.retire(auth.DEFAULT_KID) == [auth.DEFAULT_KID]
    with pytest.raises(auth.InvalidToken, match="unknown signing key"):
        auth.verify(keys.ring(), old, audience="contacts")
    assert auth.verify(keys.ring(), new, audience="contacts").subject == "bob"
    with pytest.raises(keys.KeyRingError, match="signs new tokens"):
        keys.retire(new_kid)


def test_the_local_ring_starts_from_the_local_secret(local_ring: Path) -> None:
    """A token signed with var/jwt-secret and no kid (as a single CRM_JWT_SECRET signs) still verifies;
    one without an audience does not (every token names the services it is for)."""
    secret = "an-older-local-secret-of-enough-length-123"
    (local_ring.parent / "jwt-secret").write_text(secret)
    claims = {"sub": "a", "roles": ["admin"], "iss": "crm", "exp": 2**31}
    before = jwt.encode({**claims, "aud": ["crm"]}, secret, algorithm="HS256")
    assert auth.verify(keys.ring(), before, audience="sales").roles == {"admin"}
    with pytest.raises(auth.InvalidToken, match="aud"):
        auth.verify(keys.ring(), jwt.encode(claims, secret, algorithm="HS256"), audience="sales")
    assert json.loads(local_ring.read_text())["signing"] == auth.DEFAULT_KID


def test_retire_by_age_keeps_the_signing_key(local_ring: Path) -> None:
    keys.rotate()
    signing = keys.rotate()
    assert len(keys.retire(older_than=timedelta(seconds=-60))) == 2
    assert [k["kid"] for k in keys.describe()] == [signing]


def test_a_ring_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CRM_JWT_KEYS",
        json.dumps(
            {
                "signing": "k2",
                "keys": {"k1": "first-secret-of-length-32-bytes!", "k2": "second-secret-of-length-32-bytes"},
            }
        ),
    )
    ring = keys.ring()
    old = auth.issue(auth.KeyRing({"k1": ring.keys["k1"]}, "k1"), "a", ["admin"])
    assert auth.verify(ring, old, audience="contacts").subject == "a"
    assert jwt.get_unverified_header(auth.issue(ring, "b", ["admin"]))["kid"] == "k2"


@pytest.mark.parametrize(
    ("audience", "accepted", "refused"),
    [
        ("contacts", {"contacts"}, {"sales", "servicedesk"}),
        ("contacts,service-desk", {"contacts", "servicedesk"}, {"sales"}),
        (None, {"contacts", "sales", "servicedesk", "messaging"}, set()),  # the default: every service
    ],
)
def test_crm_token_mints_for_its_audience(
    local_ring: Path, capsys: pytest.CaptureFixture[str], audience: str | None, accepted: set[str], refused: set[str]
) -> None:
    argv = ["token", "--roles", "admin", *(["--audience", audience] if audience else [])]
    assert cli.main(argv) == 0
    token = capsys.readouterr().out.strip()
    for service in accepted:
        assert auth.verify(keys.ring(), token, audience=service).roles == {"admin"}
    for service in refused:
        with pytest.raises(auth.InvalidToken, match=r"(?i)audience"):
            auth.verify(keys.ring(), token, audience=service)


def test_crm_keys_rotate_then_retire(local_ring: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keys", "rotate"]) == 0
    kid = capsys.readouterr().out.strip()
    assert cli.main(["keys", "retire", kid]) == 2  # the signing key stays
    assert cli.main(["keys", "retire", auth.DEFAULT_KID]) == 0
    capsys.readouterr()
    assert cli.main(["keys", "list"]) == 0
    assert capsys.readouterr().out.split() == [
        kid,
        json.loads(local_ring.read_text())["keys"][kid]["created"],
        "signing",
    ]


def test_service_credentials_are_a_secret_per_service_and_their_public_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keys", "service-credentials"]) == 0
    items = json.loads(capsys.readouterr().out)["items"]
    secrets = {item["metadata"]["name"]: item["stringData"] for item in items}
    public = json.loads(secrets.pop("crm-service-public-keys")["keys"])
    assert set(secrets) == {f"crm-{name}-credentials" for name in auth.SERVICE_GRANTS} and set(public) == set(
        auth.SERVICE_GRANTS
    )
    private = auth.private_key_from_text(secrets["crm-sales-credentials"]["service-key"])
    ring = auth.KeyRing({}, "", {name: auth.public_key_from_text(text) for name, text in public.items()})
    token = auth.service_token("sales", private, "contacts")
    assert auth.verify(ring, token, audience="contacts").roles == {"contacts:read"}


def test_another_process_s_rotation_is_seen_within_the_recheck_interval(
    local_ring: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request verifies a token: the ring file is looked at again at most every RECHECK_SECONDS."""
    now = [1000.0]
    monkeypatch.setattr(keys.time, "monotonic", lambda: now[0])
    looks: list[Path] = []
    stamp = keys._stamp
    monkeypatch.setattr(keys, "_stamp", lambda path: looks.append(path) or stamp(path))
    keys.ring()  # seeds the ring file
    first = keys.ring()
    looks.clear()
    document = json.loads(local_ring.read_text())
    document["keys"]["other"] = {"secret": "s" * 48, "created": document["keys"][auth.DEFAULT_KID]["created"]}
    document["signing"] = "other"
    replacement = local_ring.with_name("written-elsewhere")
    replacement.write_text(json.dumps(document))
    replacement.replace(local_ring)  # as `crm keys rotate` in another process writes it
    for _ in range(100):
        assert keys.ring() is first  # within the interval: no look at the file at all
    assert looks == []
    now[0] += keys.RECHECK_SECONDS
    assert keys.ring().signing == "other" and len(looks) == 1
