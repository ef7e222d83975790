"""Unsubscribe tokens: the chassis' signed tokens (`crmkit.signing`) of purpose "unsubscribe".

A token names a contact and a channel, and nothing personal; it does not expire (a
person may use an old mail's link). The key is derived from the link secret (crmkit.keys).
"""

from __future__ import annotations

from crmkit import signing

PURPOSE = "unsubscribe"
BadToken = signing.BadToken


def sign(secret: str, contact_id: str, channel: str) -> str:
    return signing.sign(PURPOSE, {"c": contact_id, "ch": channel}, secret=secret)


def verify(secret: str, token: str) -> tuple[str, str]:
    """(contact_id, channel) from a token we signed; BadToken otherwise."""
    data = signing.verify(PURPOSE, token, secret=secret)
    try:
        return str(data["c"]), str(data["ch"])
    except KeyError as exc:
        raise BadToken("malformed token") from exc
