"""What every service does with its own copies when a person is erased.

Crypto-shredding (crmkit.shredding) makes the events about the person unreadable, but
a service keeps other copies of what it once answered: the stored responses of
idempotent creates (`idempotency_keys`, crmkit.web.endpoint) hold the whole response
body — a contact's name, a ticket's subject, a deal with its contact — so that a repeat
of the request gets it back. Erasure must drop them too; they are found by the
`resource` (the Location header) they created.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pymongo.database import Database

from crmkit.shredding import KeyVault

STORED_RESPONSES = "idempotency_keys"

# What an erasure forgets outside the events: (subjects whose data keys go, API paths whose stored
# responses go). The use cases take one, so that they run on any store.
Shred = Callable[[Sequence[str], Sequence[str]], None]


def nothing_to_shred(subjects: Sequence[str], response_paths: Sequence[str]) -> None:
    """The use cases' default: an in-memory store seals nothing and stores no response."""


def shredder(vault: KeyVault, db: Database[dict[str, Any]]) -> Shred:
    """The runtime's: the subjects' data keys destroyed (their sealed fields unreadable everywhere,
    Kafka's copies included) and the stored responses at those paths dropped."""

    def shred(subjects: Sequence[str], response_paths: Sequence[str]) -> None:
        vault.forget_many(list(subjects))
        drop_stored_responses(db, response_paths)

    return shred


def drop_stored_responses(db: Database[dict[str, Any]], resources: Iterable[str]) -> int:
    """Delete the stored idempotent responses that created any of `resources` (API paths such as
    `/v1/deals/<id>`), in one delete; a repeat of such a request then runs afresh and is decided
    on today's state (an erased contact: 422). Returns how many were dropped; safe to repeat."""
    wanted = sorted(set(resources))
    if not wanted:
        return 0
    return db[STORED_RESPONSES].delete_many({"resource": {"$in": wanted}}).deleted_count
