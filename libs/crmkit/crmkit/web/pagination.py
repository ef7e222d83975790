"""Cursor pagination over a collection sorted by `_id` (ids are time-ordered UUIDv7s).

The cursor is the last id of the page, base64url-encoded so clients treat it as opaque.
Keyset paging stays fast on any page and never skips or repeats rows as data changes.
Any text of the documented shape (CURSOR_PATTERN) is a position: the page starts after
the key it decodes to, so a request the OpenAPI document calls valid is never refused.
A record's history pages by version instead: its cursor is the last version shown.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection

from crmkit.errors import ValidationFailed

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


# base64url without padding: whole groups of four, then two or three characters (one alone encodes nothing)
CURSOR_PATTERN = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3})?$"
CURSOR_MAX = 200
CURSOR = re.compile(CURSOR_PATTERN)
VERSION_CURSOR_PATTERN = r"^[0-9]{1,12}$"
ID = re.compile(r"^[A-Za-z0-9:._-]{1,128}$")  # the ids this API issues


def decode_cursor(cursor: str) -> str:
    """The key a cursor names. Not every such key is an id this API issued: the page then
    simply starts after it (keys compare as text), as any keyset position would."""
    try:
        if len(cursor) > CURSOR_MAX or not CURSOR.match(cursor):
            raise ValueError(cursor)
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise ValidationFailed("invalid cursor", {"cursor": ["not a cursor this API returned"]}) from None
    return raw.decode("utf-8", "replace").replace("\0", "\ufffd")


def page(
    collection: Collection[dict[str, Any]],
    query: dict[str, Any],
    limit: int,
    cursor: str | None,
    projection: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of documents matching `query`, and the cursor of the next (None at the end)."""
    if cursor:
        query = {"$and": [query, {"_id": {"$gt": decode_cursor(cursor)}}]}
    docs = list(collection.find(query, projection).sort("_id", ASCENDING).limit(limit + 1))
    if len(docs) > limit:
        return docs[:limit], encode_cursor(docs[limit - 1]["_id"])
    return docs, None


def by_version(
    entries: Sequence[dict[str, Any]], limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a record's history (entries in version order); the cursor is the last version shown.

    A long-lived record (a ticket with years of comments) has thousands of entries; a
    client pages through them like any list instead of receiving them all at once.
    """
    if cursor and not re.match(VERSION_CURSOR_PATTERN, cursor):
        raise ValidationFailed("invalid cursor", {"cursor": ["not a cursor this API returned"]})
    after = int(cursor) if cursor else 0
    rest = [entry for entry in entries if entry["version"] > after]
    if len(rest) > limit:
        return rest[:limit], str(rest[limit - 1]["version"])
    return rest, None
