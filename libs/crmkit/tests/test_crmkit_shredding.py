"""Crypto-shredding in the event store: personal fields sealed with their stream's key, in bulk too."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterable
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from prometheus_client import REGISTRY
from pymongo.database import Database

from crmkit.events import Metadata, NewEvent, RecordedEvent, new_id
from crmkit.eventstore import EventStore
from crmkit.shredding import KeyVault, PersonalData, is_sealed
from crmkit.store import StreamAppend

META = Metadata(actor="user:alice")
FIELDS = {"WidgetMade": ("owner", "contact.email"), "WidgetHandedOver": ("owner",)}


class RecordingVault(KeyVault):
    """A vault that remembers which subjects it was asked about, and how."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.looked_up: list[set[str]] = []
        self.created_for: list[set[str]] = []
        self.asked_one: list[str] = []

    def key_for(self, subject: str, *, new_stream: bool = False) -> bytes:
        self.asked_one.append(subject)
        return super().key_for(subject, new_stream=new_stream)

    def existing(self, subjects: Iterable[str]) -> dict[str, bytes]:
        subjects = set(subjects)
        self.looked_up.append(subjects)
        return super().existing(subjects)

    def keys_for(self, subjects: Iterable[str]) -> dict[str, bytes]:
        subjects = set(subjects)
        self.created_for.append(subjects)
        return super().keys_for(subjects)


@pytest.fixture
def vault(db: Database) -> RecordingVault:
    return RecordingVault(db["data_keys"])


@pytest.fixture
def store(db: Database, vault: KeyVault) -> EventStore:
    events = EventStore(db, "widgets", personal=PersonalData(vault, FIELDS))
    events.ensure_indexes()
    return events


def made(owner: str) -> NewEvent:
    return NewEvent("WidgetMade", {"owner": owner, "contact": {"email": f"{owner}@example.com"}, "size": 3})


def handed_over(owner: str) -> NewEvent:
    return NewEvent("WidgetHandedOver", {"owner": owner})


def keys(vault: KeyVault) -> dict[str, bytes]:
    """The live keys (an erased subject keeps only a tombstone)."""
    return {doc["_id"]: bytes(doc["key"]) for doc in vault.keys.find({}) if "key" in doc}


def plain(events: Iterable[RecordedEvent]) -> list[tuple[str, int, Any]]:
    return [(e.stream_id, e.version, e.data.get("owner")) for e in events]


def create_streams(store: EventStore, count: int) -> list[str]:
    streams = [new_id() for _ in range(count)]
    for n, stream in enumerate(streams):
        store.append(stream, "Widget", 0, [made(f"owner-{n}")], META)  # one stream: key_for
    return streams


def test_personal_fields_are_stored_sealed_and_read_back_plain(store: EventStore, db: Database) -> None:
    stream = new_id()
    stored = store.append(stream, "Widget", 0, [made("Shirin")], META)
    assert is_sealed(stored[0].data["owner"]) and is_sealed(stored[0].data["contact"]["email"])
    assert stored[0].data["size"] == 3
    assert "Shirin" not in str(db["events"].find_one({"stream_id": stream}))
    assert plain(store.load(stream)) == [(stream, 1, "Shirin")]
    assert store.load(stream)[0].data["contact"] == {"email": "Shirin@example.com"}


def test_bulk_appends_seal_existing_streams_with_their_own_keys(
    store: EventStore, vault: KeyVault, db: Database
) -> None:
    existing = create_streams(store, 4)
    before = keys(vault)
    db["keys_before"].insert_many([{"_id": subject, "key": key} for subject, key in before.items()])
    new = [new_id(), new_id()]
    stored, taken = store.append_streams(
        [StreamAppend(stream, "Widget", 1, [handed_over(f"next-{n}")], META) for n, stream in enumerate(existing)]
        + [
            StreamAppend(stream, "Widget", 0, [made(f"new-{n}"), handed_over(f"new-next-{n}")], META)
            for n, stream in enumerate(new)
        ]
    )
    assert taken == set()
    assert all(is_sealed(event.data["owner"]) for event in stored)  # what the publisher sends
    raw = str(list(db["events"].find({})))
    assert "next-" not in raw and "new-" not in raw

    after = keys(vault)
    assert set(after) == set(existing) | set(new)  # a key for each new stream, none more
    assert {subject: after[subject] for subject in existing} == before  # existing keys unchanged

    expected = [(stream, 2, f"next-{n}") for n, stream in enumerate(existing)] + [
        (stream, version, owner)
        for n, stream in enumerate(new)
        for version, owner in ((1, f"new-{n}"), (2, f"new-next-{n}"))
    ]
    assert plain(PersonalData(vault, FIELDS).open(stored)) == expected
    loaded = store.load_many([*existing, *new])
    assert [plain(loaded[stream]) for stream in existing] == [
        [(stream, 1, f"owner-{n}"), (stream, 2, f"next-{n}")] for n, stream in enumerate(existing)
    ]
    # the keys from before the batch open the existing streams' new events: they were sealed with them
    with_old_keys = PersonalData(KeyVault(db["keys_before"]), FIELDS).open(stored)
    assert plain(with_old_keys) == expected[:4] + [(stream, version, None) for stream, version, _ in expected[4:]]


def test_bulk_sealing_looks_existing_keys_up_and_creates_only_the_missing_ones(
    store: EventStore, vault: RecordingVault
) -> None:
    existing = create_streams(store, 3)
    vault.looked_up.clear()
    vault.created_for.clear()
    new = new_id()
    store.append_streams(
        [StreamAppend(stream, "Widget", 1, [handed_over("x")], META) for stream in existing]
        + [StreamAppend(new, "Widget", 0, [made("y")], META)]
    )
    assert vault.looked_up == [set(existing)]  # streams beyond version 1: one lookup
    assert vault.created_for == [{new}]  # only the stream that starts here needs a key made


def test_many_events_of_one_stream_fetch_its_key_once(store: EventStore, vault: RecordingVault) -> None:
    stream = new_id()
    store.append(stream, "Widget", 0, [made("Shirin"), handed_over("Reza"), handed_over("Sara")], META)
    assert vault.asked_one == [stream]
    assert plain(store.load(stream)) == [(stream, 1, "Shirin"), (stream, 2, "Reza"), (stream, 3, "Sara")]


def test_an_existing_stream_without_a_key_gets_one_in_bulk(store: EventStore, vault: KeyVault) -> None:
    keyless, keyed = new_id(), create_streams(store, 1)[0]
    store.append(keyless, "Widget", 0, [NewEvent("WidgetPainted", {"colour": "red"})], META)  # nothing personal
    assert set(keys(vault)) == {keyed}
    store.append_streams(
        [
            StreamAppend(keyless, "Widget", 1, [handed_over("Reza")], META),
            StreamAppend(keyed, "Widget", 1, [handed_over("Sara")], META),
        ]
    )
    assert set(keys(vault)) == {keyed, keyless}
    loaded = store.load_many([keyless, keyed])
    assert plain(loaded[keyless]) == [(keyless, 1, None), (keyless, 2, "Reza")]
    assert plain(loaded[keyed]) == [(keyed, 1, "owner-0"), (keyed, 2, "Sara")]


def test_a_resumed_import_keeps_the_key_of_a_stream_that_exists(store: EventStore, vault: KeyVault) -> None:
    existing = create_streams(store, 1)[0]
    before = keys(vault)
    fresh = new_id()
    stored, taken = store.start_streams(
        [(existing, "Widget", [made("import-again")]), (fresh, "Widget", [made("import")])], META
    )
    assert taken == {existing}
    assert [e.stream_id for e in stored] == [fresh]
    assert keys(vault)[existing] == before[existing]
    assert plain(store.load(existing)) == [(existing, 1, "owner-0")]  # still readable
    assert plain(store.load(fresh)) == [(fresh, 1, "import")]


def test_erased_streams_read_as_none_after_a_bulk_append_to_others(store: EventStore, vault: KeyVault) -> None:
    erased, kept = create_streams(store, 2)
    assert vault.forget(erased)
    store.append_streams(
        [
            StreamAppend(kept, "Widget", 1, [handed_over("still here")], META),
            StreamAppend(new_id(), "Widget", 0, [made("newcomer")], META),
        ]
    )
    loaded = store.load_many([erased, kept])
    assert plain(loaded[erased]) == [(erased, 1, None)]
    assert loaded[erased][0].data["contact"] == {"email": None} and loaded[erased][0].data["size"] == 3
    assert plain(loaded[kept]) == [(kept, 1, "owner-1"), (kept, 2, "still here")]
    assert erased not in keys(vault)


def test_forgetting_many_subjects_at_once_leaves_only_theirs_unreadable(store: EventStore, vault: KeyVault) -> None:
    first, second, kept = create_streams(store, 3)
    assert vault.forget_many([first, second, first, "never-had-a-key"]) == 2
    assert vault.forget_many([]) == 0
    loaded = store.load_many([first, second, kept])
    assert [plain(loaded[s]) for s in (first, second, kept)] == [
        [(first, 1, None)],
        [(second, 1, None)],
        [(kept, 1, "owner-2")],
    ]
    assert set(keys(vault)) == {kept}


# --- the key lifecycle ----------------------------------------------------------------------------


def unreadable() -> float:
    return REGISTRY.get_sample_value("crm_unreadable_personal_fields_total", {"service": "widgets"}) or 0


def test_forgetting_leaves_a_tombstone_that_is_not_a_key(store: EventStore, vault: KeyVault) -> None:
    erased, kept = create_streams(store, 2)
    assert vault.forget(erased)
    assert not vault.forget(erased)  # repeated: nothing more to destroy
    tombstone = vault.keys.find_one({"_id": erased})
    assert "key" not in tombstone and tombstone["erased_at"] and tombstone["kid"]
    assert set(vault.existing([erased, kept])) == {kept}
    assert vault.key_for(erased) is None
    assert set(vault.keys_for([erased, kept, "brand-new"])) == {kept, "brand-new"}
    assert "key" not in vault.keys.find_one({"_id": erased})  # no key was made for the erased subject


def test_a_write_after_erasure_never_makes_the_earlier_events_unreadable(store: EventStore, vault: KeyVault) -> None:
    erased = create_streams(store, 1)[0]
    vault.forget(erased)
    stored = store.append(erased, "Widget", 1, [handed_over("Shirin again")], META)
    assert stored[0].data["owner"] is None  # nothing new about an erased person is stored
    assert "Shirin" not in str(list(store.events.find({"stream_id": erased})))
    before = unreadable()
    assert plain(store.load(erased)) == [(erased, 1, None), (erased, 2, None)]
    assert unreadable() == before  # erased is not unreadable: nothing to count
    assert erased not in keys(vault)


def test_a_bulk_write_after_erasure_stores_nothing_personal_for_the_erased(store: EventStore, vault: KeyVault) -> None:
    erased, kept = create_streams(store, 2)
    assert vault.forget_many([erased, "never-had-a-key"]) == 1
    stored, _ = store.append_streams(
        [
            StreamAppend(erased, "Widget", 1, [handed_over("erased")], META),
            StreamAppend("never-had-a-key", "Widget", 0, [made("also erased")], META),
            StreamAppend(kept, "Widget", 1, [handed_over("kept")], META),
        ]
    )
    assert [(e.stream_id, e.data["owner"]) for e in stored][:2] == [(erased, None), ("never-had-a-key", None)]
    loaded = store.load_many([erased, kept, "never-had-a-key"])
    assert plain(loaded[erased]) == [(erased, 1, None), (erased, 2, None)]
    assert plain(loaded["never-had-a-key"]) == [("never-had-a-key", 1, None)]
    assert plain(loaded[kept]) == [(kept, 1, "owner-1"), (kept, 2, "kept")]
    assert set(keys(vault)) == {kept}


def test_values_sealed_before_key_ids_still_open_with_the_subjects_key(store: EventStore, vault: KeyVault) -> None:
    stream, forgotten = create_streams(store, 2)
    for subject in (stream, forgotten):  # stored as the code before key ids stored them
        secret = AESGCM.generate_key(bit_length=256)
        vault.keys.delete_one({"_id": subject})
        vault.keys.insert_one({"_id": subject, "key": secret})
        _set_stored_owner(store, subject, _v1(secret, subject, "Old Sara"))
    store.append(stream, "Widget", 1, [handed_over("New Sara")], META)  # sealed "v2." with the same key
    assert plain(store.load(stream)) == [(stream, 1, "Old Sara"), (stream, 2, "New Sara")]
    # a legacy key deleted before tombstones existed: a key made later never opens the old value
    vault.keys.delete_one({"_id": forgotten})
    before = unreadable()
    store.append(forgotten, "Widget", 1, [handed_over("after")], META)
    assert plain(store.load(forgotten)) == [(forgotten, 1, None), (forgotten, 2, "after")]
    assert unreadable() == before


@pytest.mark.parametrize(
    "damage",
    [
        lambda sealed: sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB"),  # tampered: InvalidTag
        lambda sealed: sealed.rsplit(".", 1)[0] + ".!!not base64",
        lambda sealed: "v9." + sealed,  # a format this code does not know
        lambda _: 42,
    ],
    ids=["tampered", "not-base64", "unknown-format", "not-a-string"],
)
def test_a_value_that_cannot_be_opened_reads_as_none_and_is_counted_and_logged(
    store: EventStore, damage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    stream = new_id()
    event = store.append(stream, "Widget", 0, [made("Shirin")], META)[0]
    sealed = event.data["owner"]["pii"]
    _set_stored_owner(store, stream, {"pii": damage(sealed)})
    before = unreadable()
    with caplog.at_level(logging.WARNING, logger="crmkit.shredding"):
        loaded = store.load(stream)
    assert plain(loaded) == [(stream, 1, None)]
    assert loaded[0].data["contact"] == {"email": "Shirin@example.com"}  # the other field is intact
    assert unreadable() == before + 1
    [record] = [r for r in caplog.records if r.name == "crmkit.shredding"]
    assert (record.event_id, record.path) == (event.id, "owner")
    assert "Shirin" not in caplog.text


def _v1(secret: bytes, stream: str, value: str) -> dict[str, str]:
    """A value sealed as before key ids: "v1." and the ciphertext, nothing naming the key."""
    nonce = os.urandom(12)
    sealed = AESGCM(secret).encrypt(nonce, json.dumps(value).encode(), f"{stream}|WidgetMade|owner".encode())
    return {"pii": "v1." + base64.urlsafe_b64encode(nonce + sealed).decode()}


class CountingKeys:
    """The vault's collection, counting the calls that reach the server."""

    def __init__(self, collection) -> None:
        self.collection, self.calls = collection, []

    def __getattr__(self, name: str):
        method = getattr(self.collection, name)

        def counted(*args, **kwargs):
            self.calls.append(name)
            return method(*args, **kwargs)

        return counted


def test_a_new_stream_gets_its_key_in_one_round_trip_and_an_existing_one_reads_it_once(
    store: EventStore, vault: KeyVault
) -> None:
    counting = CountingKeys(vault.keys)
    vault.__init__(counting)  # the same vault, over the counting collection
    stream = new_id()
    store.append(stream, "Widget", 0, [made("Shirin")], META)
    assert counting.calls == ["insert_many"]  # no look-up first: a stream starting now has no key (group commit)
    counting.calls.clear()
    store.append(stream, "Widget", 1, [handed_over("Reza")], META)
    assert counting.calls == ["find_one"]
    assert plain(store.load(stream)) == [(stream, 1, "Shirin"), (stream, 2, "Reza")]


def _set_stored_owner(store: EventStore, stream: str, owner: Any) -> None:
    """Rewrite `owner` in the stream's first stored event, as an older version or damage left it."""
    commit = store.events.find_one({"stream_id": stream})
    commit["events"][0]["data"]["owner"] = owner
    store.events.replace_one({"_id": commit["_id"]}, commit)
