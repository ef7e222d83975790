"""What every service does with its own copies when a person is erased.

Crypto-shredding (crmkit.shredding) makes the events about the person unreadable, but
a service keeps other copies of what it once answered: the stored responses of
idempotent creates (`idempotency_keys`, crmkit.web.endpoint) hold the whole response
body — a contact's name, a ticket's subject, a deal with its contact — so that a repeat
of the request gets it back. Erasure must drop them too; they are found by the
`resource` (the Location header) they created.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymongo.database import Database

STORED_RESPONSES = "idempotency_keys"


def drop_stored_responses(db: Database[dict[str, Any]], resources: Iterable[str]) -> int:
    """Delete the stored idempotent responses that created any of `resources` (API paths such as
    `/v1/deals/<id>`), in one delete; a repeat of such a request then runs afresh and is decided
    on today's state (an erased contact: 422). Returns how many were dropped; safe to repeat."""
    wanted = sorted(set(resources))
    if not wanted:
        return 0
    return db[STORED_RESPONSES].delete_many({"resource": {"$in": wanted}}).deleted_count
