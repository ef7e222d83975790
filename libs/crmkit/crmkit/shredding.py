"""Crypto-shredding: personal fields in events are encrypted with a key per person.

Events are immutable and Kafka topics keep them forever, so erasure cannot delete
them. Instead every personal field is stored and published encrypted (AES-256-GCM)
with a data key that belongs to one person (the stream the event is in). Erasure
deletes the key: from then on every copy of those events — in the store, on any
topic, in a replay to a new cluster — holds only ciphertext nobody can read, and
reading code sees `None` where the value was.

A service declares which fields are personal per event type (dotted paths into
`data`); `PersonalData` seals them before the event is stored and opens them after it
is read. Domain code only ever sees plaintext (or `None` after erasure).
"""

from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from crmkit.events import RecordedEvent, utcnow

SEALED = "pii"  # a sealed value is {"pii": "v1.<base64url(nonce + ciphertext)>"}
VERSION = "v1."


class KeyVault:
    """Data keys, one per person (subject), in the service's own database."""

    def __init__(self, collection: Collection) -> None:
        self.keys = collection

    def key_for(self, subject: str) -> bytes:
        """The subject's key, created on first use."""
        found = self.keys.find_one({"_id": subject})
        if found is not None:
            return bytes(found["key"])
        key = AESGCM.generate_key(bit_length=256)
        try:
            self.keys.insert_one({"_id": subject, "key": key, "created_at": utcnow()})
            return key
        except DuplicateKeyError:  # created concurrently: use the one that won
            return bytes(self.keys.find_one({"_id": subject})["key"])

    def keys_for(self, subjects: Iterable[str]) -> dict[str, bytes]:
        """Many subjects' keys, the missing ones created, in one bulk insert (new streams in bulk:
        imports); the subjects that already had a key cost one more query."""
        now = utcnow()
        keys = {subject: AESGCM.generate_key(bit_length=256) for subject in set(subjects)}
        if not keys:
            return {}
        documents = [{"_id": subject, "key": key, "created_at": now} for subject, key in keys.items()]
        try:
            self.keys.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(error.get("code") != 11000 for error in errors):
                raise
            taken = [documents[error["index"]]["_id"] for error in errors]  # had a key (or got one concurrently)
            keys.update(self.existing(taken))
        return keys

    def existing(self, subjects: Iterable[str]) -> dict[str, bytes]:
        """Keys of the subjects that still have one (one query)."""
        return {doc["_id"]: bytes(doc["key"]) for doc in self.keys.find({"_id": {"$in": list(set(subjects))}})}

    def forget(self, subject: str) -> bool:
        """Erase: delete the key. Everything sealed with it becomes unreadable."""
        return self.keys.delete_one({"_id": subject}).deleted_count == 1

    def forget_many(self, subjects: Iterable[str]) -> int:
        """Erase many subjects at once (a person's messages); returns how many keys were deleted."""
        wanted = list(set(subjects))
        return self.keys.delete_many({"_id": {"$in": wanted}}).deleted_count if wanted else 0


class PersonalData:
    """Seals and opens the personal fields of events, per event type."""

    def __init__(self, vault: KeyVault, fields: Mapping[str, Sequence[str]]) -> None:
        self.vault = vault
        self.fields = {event_type: [path.split(".") for path in paths] for event_type, paths in fields.items()}

    def seal(self, events: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        subjects = {event.stream_id for event in events if self.fields.get(event.type)}
        keys: dict[str, bytes] = {}
        if len(subjects) > 1:  # many streams: their keys in bulk
            older = subjects - {event.stream_id for event in events if event.version == 1}
            keys = self.vault.existing(older) if older else {}  # new streams have none yet
            keys.update(self.vault.keys_for(subjects - set(keys)))
        for subject in subjects - keys.keys():  # one stream (or a key erased meanwhile): once per subject
            keys[subject] = self.vault.key_for(subject)
        return self._rewrite_personal(events, keys, _encrypt)

    def open(self, events: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """Decrypt personal fields; where the key is gone (erased) they read as None."""
        personal = [e for e in events if self.fields.get(e.type)]
        if not personal:
            return list(events)
        return self._rewrite_personal(events, self.vault.existing(e.stream_id for e in personal), _decrypt)

    def _rewrite_personal(
        self, events: Sequence[RecordedEvent], keys: Mapping[str, bytes], change: Callable[..., Any],
    ) -> list[RecordedEvent]:
        """`change(cipher, aad, value)` applied to every personal field; the cipher is None without a key."""
        ciphers = {subject: AESGCM(key) for subject, key in keys.items()}
        rewritten = []
        for event in events:
            paths = self.fields.get(event.type)
            if paths:
                event = _rewrite(event, paths, functools.partial(change, ciphers.get(event.stream_id)))
            rewritten.append(event)
        return rewritten


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED}


def _rewrite(event: RecordedEvent, paths: list[list[str]], change: Callable[[bytes, Any], Any]) -> RecordedEvent:
    """A copy of `event` with `change(aad, value)` applied to each personal field present."""
    data = json.loads(json.dumps(event.data))  # a deep copy we may change
    for path in paths:
        _transform(data, path, functools.partial(change, _aad(event, path)))
    return replace(event, data=data)


def _aad(event: RecordedEvent, path: list[str]) -> bytes:
    """Binds a ciphertext to its place, so it cannot be moved to another field or person."""
    return f"{event.stream_id}|{event.type}|{'.'.join(path)}".encode()


def _encrypt(cipher: AESGCM, aad: bytes, value: Any) -> Any:
    if value is None or is_sealed(value):
        return value
    nonce = os.urandom(12)
    sealed = cipher.encrypt(nonce, json.dumps(value, ensure_ascii=False).encode(), aad)
    return {SEALED: VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()}


def _decrypt(cipher: AESGCM | None, aad: bytes, value: Any) -> Any:
    if not is_sealed(value):
        return value
    if cipher is None:
        return None
    raw = base64.urlsafe_b64decode(value[SEALED].removeprefix(VERSION))
    return json.loads(cipher.decrypt(raw[:12], raw[12:], aad))


def _transform(data: dict[str, Any], path: list[str], change: Any) -> None:
    """Apply `change` to the value at `path` if it is present."""
    *parents, leaf = path
    node: Any = data
    for name in parents:
        node = node.get(name) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict) and leaf in node:
        node[leaf] = change(node[leaf])
