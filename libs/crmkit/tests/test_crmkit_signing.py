"""Signed link tokens (crmkit.signing) and the movable clock (crmkit.clock)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crmkit import clock, signing

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_token_carries_its_data_until_it_expires() -> None:
    token = signing.sign("survey", {"t": "ticket-1", "c": "contact-1"}, ttl=timedelta(days=30), secret="s", now=T0)
    assert signing.verify("survey", token, secret="s", now=T0 + timedelta(days=29)) == {
        "t": "ticket-1",
        "c": "contact-1",
    }
    with pytest.raises(signing.BadToken, match="expired"):
        signing.verify("survey", token, secret="s", now=T0 + timedelta(days=30))


def test_a_token_without_ttl_never_expires() -> None:
    token = signing.sign("unsubscribe", {"c": "x"}, secret="s", now=T0)
    assert signing.verify("unsubscribe", token, secret="s", now=T0 + timedelta(days=3650)) == {"c": "x"}


def test_forged_tampered_or_foreign_tokens_are_refused() -> None:
    token = signing.sign("survey", {"t": "1"}, secret="s")
    payload, signature = token.split(".")
    other = signing.sign("survey", {"t": "2"}, secret="s").split(".")[0]
    for bad in (f"{other}.{signature}", f"{payload}.{signature[:-2]}AA", payload, "", "a.b.c", "x" * 3000):
        with pytest.raises(signing.BadToken):
            signing.verify("survey", bad, secret="s")
    with pytest.raises(signing.BadToken, match="signature"):
        signing.verify("survey", token, secret="another")
    with pytest.raises(signing.BadToken, match="signature"):
        signing.verify("unsubscribe", token, secret="s")  # the key is per purpose


def test_a_token_with_characters_outside_base64url_is_refused_as_malformed() -> None:
    """A hand-typed or fuzzed link may carry any Unicode; it is a BadToken (a 404), never a crash."""
    token = signing.sign("survey", {"t": "1"}, secret="s")
    payload, signature = token.split(".")
    for bad in (f"{payload}.{signature[:-1]}é", f"{payload}é.{signature}", "\u0094j\u00eaj.*'\U0002cf1c"):
        with pytest.raises(signing.BadToken, match="malformed"):
            signing.verify("survey", bad, secret="s")


def test_the_key_defaults_to_the_link_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_LINK_SECRET", "one")
    token = signing.sign("survey", {"t": "1"})
    assert signing.verify("survey", token) == {"t": "1"}
    monkeypatch.setenv("CRM_LINK_SECRET", "two")
    with pytest.raises(signing.BadToken):
        signing.verify("survey", token)


def test_links_are_not_signed_with_the_token_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The token key ring and the links have keys of their own: neither verifies the other's signatures."""
    monkeypatch.setenv("CRM_JWT_SECRET", "the-token-secret")
    monkeypatch.setenv("CRM_LINK_SECRET", "the-link-secret")
    token = signing.sign("unsubscribe", {"c": "x"})
    with pytest.raises(signing.BadToken, match="signature"):
        signing.verify("unsubscribe", token, secret="the-token-secret")
    payload = token.split(".")[0]
    old_style = hmac.new(
        hmac.new(b"the-token-secret", b"crm-signed-token:unsubscribe", hashlib.sha256).digest(),
        payload.encode(),
        hashlib.sha256,
    ).digest()  # a link keyed by the token secret, as before
    forged = f"{payload}.{base64.urlsafe_b64encode(old_style).decode().rstrip('=')}"
    with pytest.raises(signing.BadToken, match="signature"):
        signing.verify("unsubscribe", forged)


def test_the_clock_moves_by_the_variable_and_by_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(clock.FILE_VARIABLE, raising=False)
    monkeypatch.setenv(clock.OFFSET_VARIABLE, "3600")
    assert abs((clock.now() - datetime.now(UTC)) - timedelta(hours=1)) < timedelta(seconds=5)
    monkeypatch.delenv(clock.OFFSET_VARIABLE)
    path = tmp_path / "clock"
    monkeypatch.setenv(clock.FILE_VARIABLE, str(path))
    assert clock.offset() == timedelta(0)  # no file yet: not moved
    path.write_text("86400\n")
    monkeypatch.setattr(clock, "RECHECK_SECONDS", 0.0)
    time.sleep(0.001)
    assert clock.offset() == timedelta(days=1)
    path.write_text("not a number")
    assert clock.offset() == timedelta(0)
