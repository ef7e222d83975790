"""Cursor pagination over a collection sorted by `_id` (ids are time-ordered UUIDv7s).

The cursor is the last id of the page, base64url-encoded so clients treat it as opaque.
Keyset paging stays fast on any page and never skips or repeats rows as data changes.
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


CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
ID = re.compile(r"^[A-Za-z0-9:._-]{1,128}$")


def decode_cursor(cursor: str) -> str:
    try:
        if not CURSOR.match(cursor):
            raise ValueError(cursor)
        last_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not ID.match(last_id):
            raise ValueError(last_id)
        return last_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationFailed("invalid cursor", {"cursor": ["not a cursor this API returned"]}) from None


def page(
    collection: Collection,
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
    after = int(decode_cursor(cursor)) if cursor and decode_cursor(cursor).isdigit() else 0
    if cursor and not after:
        raise ValidationFailed("invalid cursor", {"cursor": ["not a cursor this API returned"]})
    rest = [entry for entry in entries if entry["version"] > after]
    if len(rest) > limit:
        return rest[:limit], encode_cursor(str(rest[limit - 1]["version"]))
    return rest, None
