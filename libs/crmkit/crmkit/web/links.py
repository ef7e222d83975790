"""Opening a signed link (crmkit.signing) at the REST edge: the public pages a person reaches
from a mail without logging in (the satisfaction and SERVQUAL surveys, the details confirmation).

Every page answers the same way for a link it cannot honour: 410 when it expired, a plain 404
(as for a page that does not exist) when it is forged, malformed, of another purpose or names
what is gone, so a link tells a stranger nothing.
"""

from __future__ import annotations

from crmkit import signing
from crmkit.errors import NotFound
from crmkit.web.problems import HttpError


class LinkNotValid(NotFound):
    """Forged, malformed, of another purpose, or naming a record that is gone: a plain 404."""


class LinkExpired(HttpError):
    status = 410


def open_link(purpose: str, token: str, keys: tuple[str, ...], what: str = "link") -> tuple[str, ...]:
    """The string values of `keys` in a valid, unexpired link of `purpose`; LinkExpired or
    LinkNotValid (naming `what`, e.g. "survey link") otherwise."""
    try:
        data = signing.verify(purpose, token)
    except signing.BadToken as exc:
        if str(exc) == "expired":
            raise LinkExpired(f"this {what} has expired") from None
        raise LinkNotValid(f"this {what} is not valid") from None
    values = tuple(data.get(key) for key in keys)
    if not all(isinstance(value, str) for value in values):
        raise LinkNotValid(f"this {what} is not valid")
    return values  # type: ignore[return-value]
