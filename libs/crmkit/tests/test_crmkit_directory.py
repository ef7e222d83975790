"""LocalContacts: reactions to contacts' erasures and merges are at least once, per contact, whatever the order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pymongo.database import Database

from crmkit.directory import LocalContacts, ReactionsFailed
from crmkit.events import RecordedEvent, new_id, utcnow


class FakeDirectory:
    """The contacts service's current state, as `ContactDirectory.many` answers it."""

    def __init__(self) -> None:
        self.contacts: dict[str, dict[str, Any]] = {}

    def many(self, contact_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {cid: self.contacts[cid] for cid in contact_ids if cid in self.contacts}


class Hooks:
    """on_erased / on_merged that record their calls and fail while told to."""

    def __init__(self) -> None:
        self.erased: list[str] = []
        self.merged: list[tuple[str, str]] = []
        self.failing: dict[str, int] = {}  # contact id -> how many more calls fail

    def on_erased(self, contact_id: str) -> None:
        self._maybe_fail(contact_id)
        self.erased.append(contact_id)

    def on_merged(self, duplicate_id: str, survivor_id: str, merge_event_id: str | None = None) -> None:
        self._maybe_fail(duplicate_id)
        self.merged.append((duplicate_id, survivor_id))

    def _maybe_fail(self, contact_id: str) -> None:
        if self.failing.get(contact_id, 0) > 0:
            self.failing[contact_id] -= 1
            raise ConnectionError("the service's database is away")


@pytest.fixture
def directory() -> FakeDirectory:
    return FakeDirectory()


@pytest.fixture
def hooks() -> Hooks:
    return Hooks()


@pytest.fixture
def local(db: Database, directory: FakeDirectory, hooks: Hooks) -> LocalContacts:
    return LocalContacts(
        "contacts",
        db["contacts"],
        directory,  # type: ignore[arg-type]
        on_merged=hooks.on_merged,
        on_erased=hooks.on_erased,
        service="widgets",
    )


def contact(directory: FakeDirectory, name: str = "Sara", version: int = 1) -> str:
    cid = new_id()
    directory.contacts[cid] = {
        "id": cid,
        "first_name": name,
        "email": f"{name}@example.com",
        "status": "active",
        "version": version,
    }
    return cid


def event(cid: str, version: int, kind: str = "ContactUpdated", **data: Any) -> RecordedEvent:
    return RecordedEvent(
        new_id(), "contacts", cid, "contact", version, kind, 1, data, utcnow(), "system", new_id(), None
    )


def failures(kind: str) -> float:
    return REGISTRY.get_sample_value("crm_reaction_failures_total", {"service": "widgets", "kind": kind}) or 0


def copy(local: LocalContacts, cid: str) -> dict[str, Any]:
    return local.collection.find_one({"_id": cid}) or {}


def test_an_erasure_whose_reaction_failed_runs_again_when_delivered_again(
    local: LocalContacts, directory: FakeDirectory, hooks: Hooks
) -> None:
    sara = contact(directory)
    local.handle([event(sara, 1, "ContactCreated")])
    hooks.failing[sara] = 1
    erased = [event(sara, 2, "ContactErased", reason="gdpr")]
    before = failures("erased")
    with pytest.raises(Exception):  # noqa: B017 - the runner retries (then parks) the batch
        local.handle(erased)
    assert hooks.erased == []

    local.handle(erased)  # the same event, delivered again
    assert hooks.erased == [sara]
    assert copy(local, sara)["status"] == "erased" and copy(local, sara)["first_name"] is None
    local.handle(erased)  # and again, once it took effect: nothing more
    assert hooks.erased == [sara] and copy(local, sara)["version"] == 2
    assert failures("erased") == before + 1  # the failure was counted, once


def test_one_contacts_failing_reaction_does_not_hold_up_the_others(
    local: LocalContacts, directory: FakeDirectory, hooks: Hooks
) -> None:
    stuck, gone, dup, survivor, updated = (contact(directory, name) for name in ("Ali", "Gone", "Dup", "Sara", "Reza"))
    hooks.failing[stuck] = 5
    batch = [
        event(stuck, 2, "ContactErased"),
        event(gone, 2, "ContactErased"),
        event(dup, 2, "ContactMerged", survivor_id=survivor),
        event(updated, 1, "ContactCreated"),
    ]
    with pytest.raises(ReactionsFailed) as raised:
        local.handle(batch)
    assert hooks.erased == [gone] and hooks.merged == [(dup, survivor)]
    assert set(raised.value.failures) == {stuck}
    assert copy(local, gone)["status"] == "erased" and copy(local, dup)["merged_into"] == survivor
    assert copy(local, updated)["first_name"] == "Reza"
    assert copy(local, stuck) == {}

    hooks.failing[stuck] = 0
    for one in batch:  # the runner applying the batch's events one by one: only the failed one does anything
        local.handle([one])
    assert hooks.erased == [gone, stuck] and hooks.merged == [(dup, survivor)]
    assert copy(local, stuck)["status"] == "erased"


def test_a_late_erasure_or_merge_is_acted_on_after_a_newer_version(
    local: LocalContacts, directory: FakeDirectory, hooks: Hooks
) -> None:
    gone, dup, survivor = contact(directory, version=4), contact(directory, version=4), contact(directory)
    local.handle([event(gone, 4), event(dup, 4)])  # v4 came first
    local.handle([event(gone, 3, "ContactErased"), event(dup, 3, "ContactMerged", survivor_id=survivor)])
    assert hooks.erased == [gone] and hooks.merged == [(dup, survivor)]
    assert copy(local, gone)["status"] == "erased" and copy(local, gone)["email"] is None
    assert copy(local, gone)["version"] == 4  # the version seen never goes back
    assert (copy(local, dup)["status"], copy(local, dup)["merged_into"]) == ("merged", survivor)
    local.handle([event(gone, 5)])  # whatever comes after the erasure, the copy stays scrubbed
    assert copy(local, gone)["first_name"] is None


def test_an_unmerge_is_reacted_to_once_in_order_and_names_the_merge(db: Database, directory: FakeDirectory) -> None:
    calls: list[tuple[str, str, str, str | None]] = []
    local = LocalContacts(
        "contacts",
        db["contacts"],
        directory,  # type: ignore[arg-type]
        on_merged=lambda d, s, m: calls.append(("merged", d, s, m)),
        on_unmerged=lambda d, s, m: calls.append(("unmerged", d, s, m)),
        service="widgets",
    )
    dup, survivor = contact(directory, "Dup"), contact(directory, "Sara")
    merged = event(dup, 2, "ContactMerged", survivor_id=survivor)
    unmerged = event(dup, 3, "ContactUnmerged", survivor_id=survivor, merge_event_id=merged.id)
    local.handle([merged, unmerged])
    assert calls == [("merged", dup, survivor, merged.id), ("unmerged", dup, survivor, merged.id)]
    assert (copy(local, dup)["status"], copy(local, dup)["merged_into"]) == ("active", None)
    local.handle([merged, unmerged])  # delivered again, together or one by one: nothing more
    local.handle([merged])
    local.handle([unmerged])
    assert len(calls) == 2 and copy(local, dup)["status"] == "active"
    again = event(dup, 4, "ContactMerged", survivor_id=survivor)  # merged once more: a new merge
    local.handle([again])
    assert calls[-1] == ("merged", dup, survivor, again.id) and copy(local, dup)["merged_into"] == survivor
