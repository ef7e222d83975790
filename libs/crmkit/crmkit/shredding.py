"""Crypto-shredding: personal fields in events are encrypted with a key per person.

Events are immutable and Kafka topics keep them forever, so erasure cannot delete
them. Instead every personal field is stored and published encrypted (AES-256-GCM)
with a data key that belongs to one person (the stream the event is in). Erasure
destroys the key: from then on every copy of those events — in the store, on any
topic, in a replay to a new cluster — holds only ciphertext nobody can read, and
reading code sees `None` where the value was.

A service declares which fields are personal per event type (dotted paths into
`data`); `PersonalData` seals them before the event is stored and opens them after it
is read. Domain code only ever sees plaintext (or `None` after erasure).

Key lifecycle. A subject's key is made on first use and never replaced. Each sealed
value names the key that sealed it (`v2.<key id>.<ciphertext>`), so a value is only
ever tried with its own key. Erasure turns the key document into a tombstone (the
`_id` and `erased_at` stay, the key bytes go), and sealing for a tombstoned subject
stores `None`: a stream is one person's (its id is a random UUID), so whatever is
written about it after the erasure is about the erased person and must not be kept —
and no new key is ever made that could be mistaken for the old one. A genuinely new
person gets a new stream, hence a new key.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from crmkit import metrics
from crmkit.events import RecordedEvent, utcnow
from crmkit.groupcommit import GroupCommit

log = logging.getLogger(__name__)

SEALED = "pii"  # a sealed value is {"pii": "v2.<key id>.<base64url(nonce + ciphertext)>"}
VERSION = "v2"
LEGACY = "v1"  # {"pii": "v1.<base64url(nonce + ciphertext)>"}: sealed before key ids, with the subject's one key


@dataclass(frozen=True)
class DataKey:
    """One subject's live data key."""

    secret: bytes = field(repr=False)
    legacy: bool = False  # made before key ids: the only kind of key that can have sealed "v1." values

    @functools.cached_property
    def kid(self) -> str:
        """The key's id, as named in the values it seals: a fingerprint of the key, so keys made
        before key ids have one too without a migration (it reveals nothing about the key)."""
        return key_id(self.secret)

    @functools.cached_property
    def cipher(self) -> AESGCM:
        return AESGCM(self.secret)


def key_id(secret: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(b"crm-data-key-id|" + secret).digest()[:12]).decode()


class KeyVault:
    """Data keys, one per person (subject), in the service's own database.

    Documents: `_id` = subject, `key` (32 bytes), `kid`, `created_at`; once erased a
    tombstone: `_id`, `kid`, `created_at`, `erased_at`, no `key`.
    """

    def __init__(self, collection: Collection[dict[str, Any]]) -> None:
        self.keys = collection
        self._inserts = GroupCommit(collection, "data_keys")  # concurrent creates share a round trip

    def key_for(self, subject: str, *, new_stream: bool = False) -> DataKey | None:
        """The subject's key, created on first use; None once the subject was erased.

        `new_stream`: the subject's stream starts now, so it almost surely has no key yet:
        the key is inserted first (one round trip, not a look-up and then an insert, which
        was most of a create's time in the bench) and read only if one was there after all.
        """
        found = None if new_stream else self.keys.find_one({"_id": subject})
        if found is None:
            document = _new_key(subject)
            if not self._inserts.insert([document]):
                return _data_key(document)
            found = self.keys.find_one({"_id": subject})  # created (or erased) concurrently: use what won
        return _data_key(found) if found is not None else None  # None: erased meanwhile

    def keys_for(self, subjects: Iterable[str]) -> dict[str, DataKey]:
        """Many subjects' keys, the missing ones created, in one bulk insert (new streams in bulk:
        imports); the subjects that already had a key cost one more query. Erased subjects
        are left out: nothing is sealed for them any more."""
        documents = [_new_key(subject) for subject in set(subjects)]
        if not documents:
            return {}
        try:
            self.keys.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(error.get("code") != 11000 for error in errors):
                raise
            taken = {documents[error["index"]]["_id"] for error in errors}  # had a key (or a tombstone)
            return {
                **{doc["_id"]: _live_key(doc) for doc in documents if doc["_id"] not in taken},
                **self.existing(taken),
            }
        return {doc["_id"]: _live_key(doc) for doc in documents}

    def existing(self, subjects: Iterable[str]) -> dict[str, DataKey]:
        """Live keys of the subjects that have one (one query); tombstones are not keys."""
        found = self.keys.find({"_id": {"$in": list(set(subjects))}, "key": {"$exists": True}})
        return {doc["_id"]: _live_key(doc) for doc in found}

    def forget(self, subject: str) -> bool:
        """Erase: destroy the subject's key. Everything sealed with it becomes unreadable."""
        return self.forget_many([subject]) == 1

    def forget_many(self, subjects: Iterable[str]) -> int:
        """Erase many subjects at once (a person's messages, in one round trip): each key
        becomes a tombstone, and a subject without a key gets one so that none is ever made
        for it. Returns how many keys were destroyed; repeating it changes nothing."""
        wanted = list(set(subjects))
        if not wanted:
            return 0
        now = utcnow()
        writes = [
            write
            for subject in wanted
            for write in (
                UpdateOne(
                    {"_id": subject, "key": {"$exists": True}}, {"$unset": {"key": ""}, "$set": {"erased_at": now}}
                ),
                UpdateOne({"_id": subject}, {"$setOnInsert": {"erased_at": now}}, upsert=True),
            )
        ]
        return self.keys.bulk_write(writes, ordered=True).modified_count


def _new_key(subject: str) -> dict[str, Any]:
    secret = AESGCM.generate_key(bit_length=256)
    return {"_id": subject, "key": secret, "kid": key_id(secret), "created_at": utcnow()}


def _data_key(document: Mapping[str, Any]) -> DataKey | None:
    """The key a vault document holds: None for a tombstone; a document without `kid` predates key ids."""
    if "key" not in document:
        return None
    return _live_key(document)


def _live_key(document: Mapping[str, Any]) -> DataKey:
    """The key of a document known to hold one (just made, or found with `key` present)."""
    return DataKey(bytes(document["key"]), legacy="kid" not in document)


class PersonalData:
    """Seals and opens the personal fields of events, per event type."""

    def __init__(self, vault: KeyVault, fields: Mapping[str, Sequence[str]]) -> None:
        self.vault = vault
        self.fields = {event_type: [path.split(".") for path in paths] for event_type, paths in fields.items()}

    def seal(self, events: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """Encrypt personal fields with their stream's key; an erased stream's are stored as None."""
        subjects = {event.stream_id for event in events if self.fields.get(event.type)}
        if len(subjects) > 1:  # many streams: their keys in bulk
            older = subjects - {event.stream_id for event in events if event.version == 1}
            keys = self.vault.existing(older) if older else {}  # new streams have none yet
            keys.update(self.vault.keys_for(subjects - set(keys)))
        else:
            started = {event.stream_id for event in events if event.version == 1}
            keys = {
                subject: key
                for subject in subjects
                if (key := self.vault.key_for(subject, new_stream=subject in started)) is not None
            }
        return self._rewrite_personal(events, keys, _seal)

    def open(self, events: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """Decrypt personal fields; where the key is gone (erased) they read as None, and so
        does a value that cannot be opened for any other reason (counted and logged)."""
        personal = [e for e in events if self.fields.get(e.type)]
        if not personal:
            return list(events)
        return self._rewrite_personal(events, self.vault.existing(e.stream_id for e in personal), _open)

    def _rewrite_personal(
        self,
        events: Sequence[RecordedEvent],
        keys: Mapping[str, DataKey],
        change: Callable[..., Any],
    ) -> list[RecordedEvent]:
        """`change(key, event, path, value)` applied to every personal field; the key is None without one."""
        rewritten = []
        for event in events:
            paths = self.fields.get(event.type)
            if paths:
                event = _rewrite(event, paths, functools.partial(change, keys.get(event.stream_id)))
            rewritten.append(event)
        return rewritten


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED}


def _rewrite(event: RecordedEvent, paths: list[list[str]], change: Callable[..., Any]) -> RecordedEvent:
    """A copy of `event` with `change(event, path, value)` applied to each personal field present."""
    data = json.loads(json.dumps(event.data))  # a deep copy we may change
    for path in paths:
        _transform(data, path, functools.partial(change, event, path))
    return replace(event, data=data)


def _aad(event: RecordedEvent, path: list[str]) -> bytes:
    """Binds a ciphertext to its place, so it cannot be moved to another field or person."""
    return f"{event.stream_id}|{event.type}|{'.'.join(path)}".encode()


def _seal(key: DataKey | None, event: RecordedEvent, path: list[str], value: Any) -> Any:
    if value is None or is_sealed(value):
        return value
    if key is None:  # the subject was erased: nothing new about them is kept
        return None
    nonce = os.urandom(12)
    sealed = key.cipher.encrypt(nonce, json.dumps(value, ensure_ascii=False).encode(), _aad(event, path))
    return {SEALED: f"{VERSION}.{key.kid}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"}


def _open(key: DataKey | None, event: RecordedEvent, path: list[str], value: Any) -> Any:
    if not is_sealed(value):
        return value
    try:
        return _decrypt(key, _aad(event, path), value[SEALED])
    except (InvalidTag, ValueError) as exc:  # tampered, truncated, not base64 or JSON, an unknown format
        metrics.UNREADABLE_PERSONAL_FIELDS.labels(event.service).inc()
        log.warning(
            "a personal field could not be opened; it reads as null",
            extra={
                "event_id": event.id,
                "event_type": event.type,
                "path": ".".join(path),
                "reason": type(exc).__name__,
            },
        )
        return None


def _decrypt(key: DataKey | None, aad: bytes, sealed: Any) -> Any:
    """The plaintext of a sealed value; None when the key that sealed it is gone."""
    if not isinstance(sealed, str):
        raise ValueError("a sealed value is a string")
    version, _, rest = sealed.partition(".")
    if version == VERSION:
        kid, _, body = rest.partition(".")
        if key is None or kid != key.kid:
            return None
    elif version == LEGACY:
        body = rest
        if key is None or not key.legacy:  # its key was deleted before key ids; a later key never opens it
            return None
    else:
        raise ValueError(f"unknown sealed format {version[:8]!r}")
    raw = base64.urlsafe_b64decode(body.encode())
    return json.loads(key.cipher.decrypt(raw[:12], raw[12:], aad))


def _transform(data: Any, path: list[str], change: Any) -> None:
    """Apply `change` to the value at `path` if it is present. A list on the way is walked item
    by item: `lines.description` is every line's description (a list at the end is one value)."""
    if isinstance(data, list):
        for item in data:
            _transform(item, path, change)
        return
    name, *rest = path
    if not isinstance(data, dict) or name not in data:
        return
    if rest:
        _transform(data[name], rest, change)
    else:
        data[name] = change(data[name])
