"""Unmerge rules on the Contact aggregate: pure folds of events, no servers."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_contacts.records.domain import CHANNELS, LIFECYCLE_STAGES, Contact
from crmkit.aggregate import changes_by_event
from crmkit.errors import Conflict, ValidationFailed
from crmkit.events import RecordedEvent, utcnow

MANUAL = {"kind": "manual", "by": "user:test"}
_ids = itertools.count(1)


class Streams:
    """An in-memory event store: stream id -> recorded events (ids unique, like the real one)."""

    def __init__(self) -> None:
        self.streams: dict[str, list[RecordedEvent]] = {}

    def save(self, contact: Contact) -> None:
        stream = self.streams.setdefault(contact.id, [])
        now = utcnow()
        for event in contact.pending:
            stream.append(
                RecordedEvent(
                    id=f"ev{next(_ids)}",
                    service="contacts",
                    stream_id=contact.id,
                    aggregate_type="contact",
                    version=len(stream) + 1,
                    type=event.type,
                    schema_version=event.schema_version,
                    data=event.data,
                    time=now,
                    actor="t",
                    correlation_id="c",
                    causation_id=None,
                )
            )
        contact.pending = []

    def get(self, contact_id: str) -> Contact:
        return Contact.from_events(contact_id, self.streams[contact_id])

    def create(self, contact_id: str, **fields: Any) -> Contact:
        contact = Contact.create(contact_id, fields)
        self.save(contact)
        return self.get(contact_id)

    def change(self, contact_id: str, decide: Any) -> Contact:
        contact = self.get(contact_id)
        decide(contact)
        self.save(contact)
        return self.get(contact_id)

    def merge(self, survivor_id: str, duplicate_id: str) -> None:
        duplicate = self.get(duplicate_id)
        self.change(survivor_id, lambda s: s.absorb(duplicate))
        self.change(duplicate_id, lambda d: d.mark_merged(survivor_id))

    def unmerge(self, survivor_id: str, duplicate_id: str) -> None:
        duplicate = self.get(duplicate_id)
        if duplicate.may_unmerge(survivor_id):
            self.change(survivor_id, lambda s: s.release(duplicate_id, duplicate.merge_event_id))
        self.change(duplicate_id, lambda d: d.unmerge(survivor_id))


def comparable(contact: Contact) -> dict[str, Any]:
    view = contact.view()
    for name in ("version", "created_at", "updated_at"):
        view.pop(name)
    return view


def consent(status: str, at: str, source: str = "web_form") -> dict[str, Any]:
    return {"status": status, "source": source, "legal_basis": "consent", "at": at}


def test_unmerge_gives_back_only_what_the_survivor_absorbed_and_left_alone() -> None:
    store = Streams()
    store.create("s", first_name="Sara", email="sara@example.com", tags=["vip"], attributes={"city": "Tehran"})
    store.change("s", lambda s: s.set_consent("email", consent("granted", "2026-01-01T00:00:00.000Z")))
    store.create(
        "d",
        first_name="S.",
        phone="+989121234567",
        owner="ana",
        tags=["b2b", "new"],
        attributes={"city": "Shiraz", "size": "L", "sector": "retail"},
        lifecycle_stage="customer",
    )
    store.change("d", lambda d: d.set_consent("email", consent("withdrawn", "2026-02-01T00:00:00.000Z")))
    store.change("d", lambda d: d.set_consent("sms", consent("granted", "2026-02-02T00:00:00.000Z")))
    store.change("d", lambda d: d.record_purchase("deal-1", "2026-02-03T00:00:00.000Z"))
    duplicate_before = comparable(store.get("d"))
    store.merge("s", "d")
    merged = store.get("s")
    assert merged.phone == "+989121234567" and merged.owner == "ana" and merged.lifecycle_stage == "customer"
    assert merged.consents["email"]["status"] == "withdrawn" and merged.last_purchase_at

    # after the merge the survivor makes some of it its own
    store.change(
        "s",
        lambda s: s.update({"owner": "bob", "tags": ["vip", "new"], "attributes": {"size": "XL"}}, stage_cause=MANUAL),
    )
    store.change("s", lambda s: s.update({"tags": ["vip", "new", "b2b"]}, stage_cause=MANUAL))  # re-added
    store.change("s", lambda s: s.set_consent("sms", consent("withdrawn", "2026-03-01T00:00:00.000Z")))

    store.unmerge("s", "d")
    survivor, duplicate = store.get("s"), store.get("d")
    assert comparable(duplicate) == duplicate_before  # active again, exactly as at the merge
    assert survivor.phone is None  # absorbed, untouched since: given back
    assert survivor.owner == "bob"  # changed by a person after the merge: stays
    assert survivor.tags == ["b2b", "vip"]  # "new" kept since the merge: given back; "b2b" re-added: stays
    assert survivor.attributes == {"city": "Tehran", "size": "XL"}  # "sector" given back, "size" changed
    assert survivor.lifecycle_stage == "lead"  # the stage the merge raised goes back
    assert survivor.last_purchase_at is None
    assert survivor.consents["email"] == consent("granted", "2026-01-01T00:00:00.000Z")  # its own decision again
    assert survivor.consents["sms"]["status"] == "withdrawn"  # decided after the merge: stays
    first_email_decision = store.streams["s"][1]
    assert survivor.consent_events["email"] == {"event_id": first_email_decision.id, "version": 2}
    assert survivor.merged_from == [] and survivor.status == "active"
    stage_change = [e for e in store.streams["s"] if e.type == "ContactLifecycleStageChanged"][-1]
    assert stage_change.data["cause"] == {"kind": "unmerge", "by": "d"}


def test_a_channel_the_survivor_never_decided_has_no_consent_after_the_unmerge() -> None:
    store = Streams()
    store.create("s", first_name="Sara")
    store.create("d", first_name="Dup", email="dup@example.com")
    store.change("d", lambda d: d.set_consent("email", consent("granted", "2026-02-01T00:00:00.000Z")))
    store.merge("s", "d")
    assert store.get("s").consents["email"]["status"] == "granted"
    store.unmerge("s", "d")
    survivor = store.get("s")
    assert survivor.consents == {} and survivor.consent_events == {} and survivor.email is None


def test_unmerge_is_harmless_to_repeat_and_refuses_what_makes_no_sense() -> None:
    store = Streams()
    store.create("s", first_name="Sara")
    store.create("d", first_name="Dup")
    store.create("other", first_name="Other")
    with pytest.raises(ValidationFailed) as caught:
        store.get("d").may_unmerge("s")  # never merged
    assert set(caught.value.errors) == {"duplicate_id"}
    store.merge("s", "d")
    with pytest.raises(ValidationFailed):
        store.get("d").may_unmerge("other")  # merged, but into another contact
    store.unmerge("s", "d")
    versions = (store.get("s").version, store.get("d").version)
    store.unmerge("s", "d")
    assert (store.get("s").version, store.get("d").version) == versions  # nothing recorded
    assert [e.type for e in store.streams["d"]][-2:] == ["ContactMerged", "ContactUnmerged"]


def test_an_erased_duplicate_cannot_be_unmerged() -> None:
    store = Streams()
    store.create("s", first_name="Sara")
    store.create("d", first_name="Dup")
    store.merge("s", "d")
    store.change("d", lambda d: d.erase("data subject request"))
    with pytest.raises(Conflict):
        store.get("d").may_unmerge("s")


def test_the_unmerge_names_the_merge_it_reverses_and_history_shows_both() -> None:
    store = Streams()
    store.create("s", first_name="Sara")
    store.create("d", first_name="Dup", phone="+1")
    store.merge("s", "d")
    merge_event = store.streams["d"][-1]
    store.unmerge("s", "d")
    unmerged = store.streams["d"][-1]
    assert unmerged.type == "ContactUnmerged"
    assert unmerged.data == {
        "contact_id": "d",
        "duplicate_id": "d",
        "survivor_id": "s",
        "merge_event_id": merge_event.id,
    }
    released = next(e for e in store.streams["s"] if e.type == "ContactDuplicateReleased")
    assert released.data["merge_event_id"] == merge_event.id
    history = changes_by_event(Contact, "d", store.streams["d"])
    assert history[-1]["changes"]["status"] == {"before": "merged", "after": "active"}
    assert history[-1]["changes"]["merged_into"] == {"before": "s", "after": None}
    survivor_history = changes_by_event(Contact, "s", store.streams["s"])
    assert [h["type"] for h in survivor_history][-2:] == ["ContactDuplicateAbsorbed", "ContactDuplicateReleased"]
    assert survivor_history[-1]["changes"]["phone"] == {"before": "+1", "after": None}


def test_merging_again_after_an_unmerge_can_be_unmerged_again() -> None:
    store = Streams()
    store.create("s", first_name="Sara")
    store.create("d", first_name="Dup", phone="+1")
    store.merge("s", "d")
    store.unmerge("s", "d")
    store.merge("s", "d")
    assert store.get("s").phone == "+1"
    store.unmerge("s", "d")
    assert store.get("s").phone is None and store.get("d").status == "active"


def test_the_survivor_keeps_an_identifying_field_rather_than_none() -> None:
    store = Streams()
    store.create("s", email="s@example.com")
    store.create("d", first_name="Dup")
    store.merge("s", "d")
    store.change("s", lambda s: s.update({"email": None}, stage_cause=MANUAL))
    store.unmerge("s", "d")
    assert store.get("s").first_name == "Dup"  # clearing it would leave the record nameless


def test_a_restored_view_folds_the_release_like_the_store_does() -> None:
    """Projections continue a fold from the view (Contact.restore): the release must carry its values."""
    store = Streams()
    store.create("s", first_name="Sara", tags=["vip"])
    store.create("d", first_name="Dup", phone="+1", tags=["b2b"])
    store.merge("s", "d")
    before_release = len(store.streams["s"])
    restored = Contact.restore(store.get("s").view())
    store.unmerge("s", "d")
    for event in store.streams["s"][before_release:]:
        restored.apply_stored(event)
    assert comparable(restored) | {"version": 0} == comparable(store.get("s")) | {"version": 0}


NAMES = st.sampled_from(["Ali", "Sara", "علی", "Mina", None])
TAGS = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=3)
ATTRS = st.dictionaries(st.sampled_from(["x", "y", "z"]), st.integers(0, 3), max_size=2)
STAGES = st.sampled_from(LIFECYCLE_STAGES)
CONSENTS = st.dictionaries(
    st.sampled_from(CHANNELS), st.tuples(st.sampled_from(["granted", "withdrawn"]), st.integers(1, 28)), max_size=2
)
PERSON = st.fixed_dictionaries(
    {
        "first_name": NAMES,
        "last_name": NAMES,
        "phone": st.sampled_from([None, "+1", "+2"]),
        "owner": st.sampled_from([None, "ana", "bob"]),
        "tags": TAGS,
        "attributes": ATTRS,
        "lifecycle_stage": STAGES,
        "email": st.sampled_from(["p@example.com", "q@example.com"]),
    }
)
# what the survivor does after the merge: a partial update of its own
LATER = st.fixed_dictionaries(
    {},
    optional={
        "first_name": NAMES,
        "phone": st.sampled_from([None, "+3"]),
        "owner": st.sampled_from([None, "cy"]),
        "tags": TAGS,
        "attributes": ATTRS,
    },
)


def _decide_consents(store: Streams, contact_id: str, decisions: dict[str, tuple[str, int]]) -> None:
    for channel, (status, day) in sorted(decisions.items()):
        store.change(
            contact_id,
            lambda c, ch=channel, s=status, d=day: c.set_consent(ch, consent(s, f"2026-01-{d:02d}T00:00:00.000Z")),
        )


@settings(max_examples=40, deadline=None)
@given(PERSON, PERSON, CONSENTS, CONSENTS, LATER)
def test_merge_then_unmerge_restores_the_duplicate_and_keeps_the_survivors_own(
    survivor_fields: dict[str, Any],
    duplicate_fields: dict[str, Any],
    survivor_consents: dict[str, Any],
    duplicate_consents: dict[str, Any],
    later: dict[str, Any],
) -> None:
    store = Streams()
    store.create("s", **survivor_fields)
    store.create("d", **duplicate_fields)
    _decide_consents(store, "s", survivor_consents)
    _decide_consents(store, "d", duplicate_consents)
    before, duplicate_before = comparable(store.get("s")), comparable(store.get("d"))
    store.merge("s", "d")
    merged = comparable(store.get("s"))
    store.change("s", lambda s: s.update(later, stage_cause=MANUAL))
    own = comparable(store.get("s"))
    store.unmerge("s", "d")
    survivor, duplicate = comparable(store.get("s")), comparable(store.get("d"))

    assert duplicate == duplicate_before  # the duplicate's view, exactly as before the merge
    if not later:  # nothing of its own since: the survivor is exactly as it was before the merge
        assert survivor == before
    for name in ("first_name", "last_name", "email", "phone", "owner", "company_id", "locale", "time_zone"):
        changed_since = own[name] != merged[name]  # an update to the same value records nothing
        assert survivor[name] == (own[name] if changed_since else before[name]), name
    absorbed_tags = set(duplicate_before["tags"]) - set(before["tags"])
    assert set(survivor["tags"]) == set(own["tags"]) - absorbed_tags
    absorbed = {k: v for k, v in duplicate_before["attributes"].items() if k not in before["attributes"]}
    assert survivor["attributes"] == {k: v for k, v in own["attributes"].items() if absorbed.get(k, object()) != v}
    for name in ("consents", "lifecycle_stage", "last_purchase_at"):  # not touched after the merge: as before
        assert survivor[name] == before[name], name
    assert survivor["merged_from"] == [] and duplicate["status"] == "active"
