"""The contact and segment use cases on the in-memory event store and in-memory views: no server.

`ContactUseCases` and `SegmentUseCases` are the code the REST/gRPC edges call; here they run
on `crmkit.memstore.InMemoryEventStore` (the store contract, checked against MongoDB's by
libs/crmkit/tests/test_crmkit_store_contract.py) and `MemoryViews`, which keeps the read
models as the projections do: each saved stream is folded again into its document (the
projections' own `contact_document` and `company_document`). Inputs go through the edge's schemas, so
the use cases get what REST hands them. The edges' contracts stay tested by test_api.py.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest

from crm_contacts.app import SERVICE
from crm_contacts.records import freshness_api, normalize, projections, schemas
from crm_contacts.records.commands import ContactUseCases
from crm_contacts.records.domain import Company, Contact
from crm_contacts.records.views import CONTACT_FILTERS, STALE_SUMMARY, Page
from crm_contacts.segments.commands import SegmentUseCases
from crm_contacts.segments.domain import Segment
from crmkit.errors import Conflict, NotFound, PreconditionFailed, ValidationFailed
from crmkit.events import Metadata, RecordedEvent, rfc3339, utcnow
from crmkit.memstore import InMemoryEventStore

STAFF = Metadata(actor="user:ana")
LONG_AGO = rfc3339(utcnow() - timedelta(days=400))  # past every default freshness threshold


class MemoryViews:
    """`ContactViews` on dicts: each read model's documents refolded from the store on every save."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self.store = store
        self.contacts: dict[str, dict[str, Any]] = {}
        self.companies: dict[str, dict[str, Any]] = {}

    def project(self, events: Sequence[RecordedEvent]) -> None:
        """What the worker's projections do, at once: the documents of the streams just saved."""
        for stream_id in {event.stream_id for event in events}:
            stored = self.store.load(stream_id)
            if stored[0].aggregate_type == Contact.aggregate_type:
                self.contacts[stream_id] = {
                    **projections.contact_document(Contact.from_events(stream_id, stored)),
                    "_id": stream_id,
                }
            elif stored[0].aggregate_type == Company.aggregate_type:
                self.companies[stream_id] = {
                    **projections.company_document(Company.from_events(stream_id, stored)),
                    "_id": stream_id,
                }

    def contact_page(self, filters: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        status = filters.get("status") or "active"
        docs = [
            doc
            for doc in self._found(self.contacts, filters)
            if all(doc.get(k) == filters[k] for k in CONTACT_FILTERS if filters.get(k))
            and (not filters.get("tag") or filters["tag"] in doc["tags"])
            and status in ("all", doc["status"])
        ]
        return self._page(docs, limit, cursor)

    def company_page(self, filters: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        docs = [
            doc
            for doc in self._found(self.companies, filters)
            if not filters.get("domain") or doc["domain"] == filters["domain"]
        ]
        return self._page(docs, limit, cursor)

    def duplicate_pairs(self, limit: int, cursor: str | None) -> Page:
        """Same email only (the MongoDB pairs are tested by test_api.py): the oldest survives."""
        by_email: dict[str, list[dict[str, Any]]] = {}
        for doc in sorted(self.contacts.values(), key=lambda doc: (doc["created_at"], doc["_id"])):
            if doc["status"] == "active" and doc["email"]:
                by_email.setdefault(doc["email"], []).append(doc)
        pairs = [
            {"reason": "same_email", "value": email, "survivor_id": group[0]["_id"], "duplicate_id": doc["_id"]}
            for email, group in sorted(by_email.items())
            for doc in group[1:]
        ]
        return pairs[:limit], None

    def stale_by_owner(self, owner: str | None, lifecycle_stage: str | None, max_owners: int) -> dict[str | None, int]:
        counts = Counter(doc["owner"] for doc in self._stale(owner, lifecycle_stage))
        return dict(list(counts.items())[:max_owners])

    def stale_page(self, owner: str | None, lifecycle_stage: str | None, limit: int, cursor: str | None) -> Page:
        docs, next_cursor = self._page(self._stale(owner, lifecycle_stage), limit, cursor)
        return [{"_id": doc["_id"], **{name: doc[name] for name in STALE_SUMMARY}} for doc in docs], next_cursor

    def active_ids_by_address(self, email: str | None, phone: str | None, limit: int) -> list[str]:
        found = [
            doc
            for doc in self.contacts.values()
            if doc["status"] == "active" and ((email and doc["email"] == email) or (phone and doc["phone"] == phone))
        ]
        return [doc["_id"] for doc in sorted(found, key=lambda doc: -doc["updated_ms"])[:limit]]

    def _stale(self, owner: str | None, lifecycle_stage: str | None) -> list[dict[str, Any]]:
        return [
            doc
            for doc in self.contacts.values()
            if doc["stale"] is True
            and doc["status"] == "active"
            and (not owner or doc["owner"] == owner)
            and (not lifecycle_stage or doc["lifecycle_stage"] == lifecycle_stage)
        ]

    @staticmethod
    def _found(docs: dict[str, dict[str, Any]], filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        words = normalize.terms(filters.get("q") or "")
        return [doc for doc in docs.values() if all(" " + word in doc["search"] for word in words)]

    @staticmethod
    def _page(docs: list[dict[str, Any]], limit: int, cursor: str | None) -> Page:
        rest = sorted((doc for doc in docs if cursor is None or doc["_id"] > cursor), key=lambda doc: doc["_id"])
        return rest[:limit], rest[limit - 1]["_id"] if len(rest) > limit else None


class MemorySegmentViews:
    """`SegmentViews` on dicts: the segments refolded on save, contacts and companies from `MemoryViews`,
    compiled filters matched by `matches` (the operators simple rules compile to)."""

    def __init__(self, store: InMemoryEventStore, records: MemoryViews) -> None:
        self.store = store
        self.records = records
        self.segments: dict[str, dict[str, Any]] = {}

    def project(self, events: Sequence[RecordedEvent]) -> None:
        for stream_id in {event.stream_id for event in events if event.aggregate_type == Segment.aggregate_type}:
            self.segments[stream_id] = {
                **Segment.from_events(stream_id, self.store.load(stream_id)).view(),
                "_id": stream_id,
            }

    def segment_page(self, limit: int, cursor: str | None) -> Page:
        return MemoryViews._page(list(self.segments.values()), limit, cursor)

    def contact_page(self, query: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        return MemoryViews._page([doc for doc in self.records.contacts.values() if matches(doc, query)], limit, cursor)

    def company_ids(self, query: Mapping[str, Any]) -> list[str]:
        return [doc["_id"] for doc in self.records.companies.values() if matches(doc, query)]

    def contact_ids(self, query: Mapping[str, Any]) -> list[str]:
        return [doc["_id"] for doc in self.records.contacts.values() if matches(doc, query)]


def matches(doc: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    """A MongoDB filter of `$and`, `$or`, `$in` and equality on `doc` (arrays match an element);
    any other operator is refused, so a rule these tests cannot judge fails loudly."""

    def holds(key: str, condition: Any) -> bool:
        if key == "$and":
            return all(matches(doc, part) for part in condition)
        if key == "$or":
            return any(matches(doc, part) for part in condition)
        value = doc.get(key)
        values = value if isinstance(value, list) else [value]
        if isinstance(condition, dict):
            if set(condition) != {"$in"}:
                raise NotImplementedError(f"operator {sorted(condition)} in the test's matcher")
            return any(v in condition["$in"] for v in values)
        return condition in values

    return all(holds(key, condition) for key, condition in query.items())


class World:
    """The contact use cases and what they run on, with what they published and shredded."""

    def __init__(self) -> None:
        self.store = InMemoryEventStore("contacts", references=SERVICE.references)  # as the service runs
        self.views = MemoryViews(self.store)
        self.published: list[RecordedEvent] = []
        self.shredded: list[tuple[list[str], list[str]]] = []
        self.book = ContactUseCases(
            self.store, self.views, self.publish, lambda ids, paths: self.shredded.append((list(ids), list(paths)))
        )
        self.segment_views = MemorySegmentViews(self.store, self.views)
        self.segments = SegmentUseCases(self.store, self.segment_views, self.publish)

    def publish(self, events: list[RecordedEvent]) -> None:
        self.published += events
        self.views.project(events)
        self.segment_views.project(events)

    def types(self, stream_id: str) -> list[str]:
        return [event.type for event in self.store.load(stream_id)]

    def contact(self, **fields: Any) -> Contact:
        return self.book.create_contact(schemas.ContactCreate().load(fields), STAFF)

    def consent(self, contact_id: str, status: str, if_match: int | None = None) -> Contact:
        body = schemas.ConsentInput().load({"status": status, "source": "web_form"})
        return self.book.set_consent(contact_id, "email", body, STAFF, if_match)


@pytest.fixture
def world() -> World:
    return World()


def test_a_contact_is_created_and_listed_and_a_shared_email_is_flagged_not_refused(world: World) -> None:
    with pytest.raises(ValidationFailed) as nameless:
        world.contact(tags=["vip"])
    assert set(nameless.value.errors) == {"first_name", "last_name", "email", "phone"}
    assert world.store.count() == 0 and world.published == []
    first = world.contact(first_name="Ali", last_name="Rezaei", email="ali@example.com", tags=["vip"])
    again = world.contact(first_name="Ali", last_name="R.", email="ali@example.com")
    assert world.types(first.id) == ["ContactCreated"] and first.lifecycle_stage == "lead"
    assert [event.stream_id for event in world.published] == [first.id, again.id]
    pairs, _ = world.book.duplicates(10, None)
    assert [(p["reason"], {p["survivor_id"], p["duplicate_id"]}) for p in pairs] == [
        ("same_email", {first.id, again.id})
    ]
    found, _ = world.book.list_contacts({"limit": 10, "q": "ali rez"})
    assert [doc["id"] for doc in found] == [first.id] and "search" not in found[0]
    tagged, _ = world.book.list_contacts({"limit": 10, "tag": "vip", "email": "ali@example.com"})
    assert [doc["id"] for doc in tagged] == [first.id]


def test_a_contact_names_a_known_company_and_changes_only_at_the_version_seen(world: World) -> None:
    with pytest.raises(ValidationFailed) as unknown:
        world.contact(first_name="Sara", company_id="nowhere")
    assert unknown.value.errors == {"company_id": ["no company with id nowhere"]}
    company = world.book.create_company(
        schemas.CompanyCreate().load({"name": "Acme Trading", "domain": "acme.io"}), STAFF
    )
    assert [doc["id"] for doc in world.book.list_companies({"limit": 5, "q": "acme"})[0]] == [company.id]
    contact = world.contact(first_name="Sara", company_id=company.id)
    updated = world.book.update_contact(
        contact.id, schemas.ContactInput(partial=True).load({"last_name": "Diaz"}), STAFF, if_match=1
    )
    assert (updated.last_name, updated.version) == ("Diaz", 2)
    with pytest.raises(PreconditionFailed):
        world.book.update_contact(contact.id, {"last_name": "Stale"}, STAFF, if_match=1)
    with pytest.raises(ValidationFailed):
        world.book.update_contact(contact.id, {"company_id": "nowhere"}, STAFF, None)
    assert world.types(contact.id) == ["ContactCreated", "ContactUpdated"]
    assert world.store.load(contact.id)[1].data["changes"] == {"last_name": "Diaz"}
    with pytest.raises(NotFound):
        world.book.update_contact("nobody", {"last_name": "X"}, STAFF, None)


def test_a_lifecycle_stage_change_says_who_moved_it_and_lists_by_stage(world: World) -> None:
    contact = world.contact(first_name="Lea", email="lea@example.com")
    world.book.update_contact(contact.id, {"lifecycle_stage": "customer"}, STAFF, if_match=1)
    changed = world.store.load(contact.id)[-1]
    assert changed.type == "ContactLifecycleStageChanged"
    assert changed.data["to"] == "customer" and changed.data["cause"] == {"kind": "manual", "by": "user:ana"}
    with pytest.raises(ValidationFailed) as unknown:
        world.book.update_contact(contact.id, {"lifecycle_stage": "royalty"}, STAFF, None)
    assert list(unknown.value.errors) == ["lifecycle_stage"]
    by_stage = [world.book.list_contacts({"limit": 5, "lifecycle_stage": stage})[0] for stage in ("customer", "lead")]
    assert [[doc["id"] for doc in docs] for docs in by_stage] == [[contact.id], []]


def test_consent_is_granted_withdrawn_and_answers_the_send_check(world: World) -> None:
    contact = world.contact(first_name="Ana", email="ana@example.com")
    assert world.book.check_consent(contact.id, "email")["reason"] == "no_consent_recorded"
    world.consent(contact.id, "granted", if_match=1)
    answer = world.book.check_consent(contact.id, "email")
    assert (answer["granted"], answer["address"]) == (True, "ana@example.com")
    world.consent(contact.id, "granted")  # the same choice again: nothing new
    with pytest.raises(PreconditionFailed):
        world.consent(contact.id, "withdrawn", if_match=1)
    world.consent(contact.id, "withdrawn", if_match=2)
    assert world.types(contact.id) == ["ContactCreated", "ContactConsentChanged", "ContactConsentChanged"]
    answers = world.book.check_consents([(contact.id, "email"), ("nobody", "email"), (contact.id, "sms")])
    assert [a and (a["granted"], a["reason"]) for a in answers] == [
        (False, "consent_withdrawn"),
        None,
        (False, "no_consent_recorded"),
    ]


def test_a_merge_folds_the_duplicate_in_and_an_unmerge_gives_it_back(world: World) -> None:
    survivor = world.contact(first_name="Ali", email="ali@example.com")
    duplicate = world.contact(first_name="Ali", phone="+14155550100")
    with pytest.raises(ValidationFailed):
        world.book.merge(survivor.id, survivor.id, STAFF, None)
    with pytest.raises(ValidationFailed) as unknown:
        world.book.merge(survivor.id, "nobody", STAFF, None)
    assert unknown.value.errors == {"duplicate_id": ["no contact with id nobody"]}
    merged = world.book.merge(survivor.id, duplicate.id, STAFF, if_match=1)
    assert merged.phone == "+14155550100" and merged.merged_from == [duplicate.id]
    assert world.book.contact(duplicate.id).id == survivor.id  # the old id leads to the survivor
    assert world.book.contacts_by_id([duplicate.id])[duplicate.id].id == survivor.id
    assert world.types(duplicate.id)[-1] == "ContactMerged"
    active, _ = world.book.list_contacts({"limit": 5})
    assert [doc["id"] for doc in active] == [survivor.id]
    restored = world.book.unmerge(survivor.id, duplicate.id, STAFF, None)
    assert restored.phone is None and restored.merged_from == []
    assert world.types(duplicate.id)[-1] == "ContactUnmerged"
    assert world.book.contact(duplicate.id).status == "active"
    count = world.store.count()
    world.book.unmerge(survivor.id, duplicate.id, STAFF, None)  # a repeat records nothing
    assert world.store.count() == count
    with pytest.raises(ValidationFailed):
        world.book.unmerge(duplicate.id, survivor.id, STAFF, None)  # not merged that way round


def test_erasure_erases_the_person_and_their_merged_records_and_shreds_their_keys(world: World) -> None:
    person = world.contact(first_name="Eve", email="eve@example.com")
    old = world.contact(first_name="Eve", email="eve.old@example.com")
    world.book.merge(person.id, old.id, STAFF, None)
    with pytest.raises(PreconditionFailed):
        world.book.erase(person.id, "gdpr_request", STAFF, if_match=1)
    erased = world.book.erase(person.id, "gdpr_request", STAFF, if_match=2)
    assert erased.status == "erased"
    assert world.types(person.id)[-1] == world.types(old.id)[-1] == "ContactErased"
    assert world.shredded == [([person.id, old.id], [f"/v1/contacts/{person.id}", f"/v1/contacts/{old.id}"])]
    assert world.book.check_consent(person.id, "email")["reason"] == "contact_erased"
    with pytest.raises(Conflict):
        world.book.unmerge(person.id, old.id, STAFF, None)  # erased since the merge: it cannot come back
    count = world.store.count()
    world.book.erase(person.id, "gdpr_request", STAFF)  # safe to repeat
    assert world.store.count() == count
    listed, _ = world.book.list_contacts({"limit": 5, "status": "erased"})
    assert {doc["id"] for doc in listed} == {person.id, old.id}
    assert all(doc["first_name"] is None and doc["email"] is None for doc in listed)  # the read model forgets too


def test_the_stale_report_counts_each_owners_stale_active_contacts_and_pages_them(world: World) -> None:
    anas = [world.contact(first_name=f"Ana's {n}", owner="ana", verified_at=LONG_AGO) for n in range(3)]
    bos = world.contact(first_name="Bo's", owner="bo", lifecycle_stage="customer", verified_at=LONG_AGO)
    als = world.contact(first_name="Al's", owner="al", verified_at=LONG_AGO)
    nobodys = world.contact(first_name="Nobody's", verified_at=LONG_AGO)
    world.contact(first_name="Fresh", owner="ana")  # confirmed at its creation: not stale
    gone = world.contact(first_name="Gone", owner="ana", verified_at=LONG_AGO)
    world.book.erase(gone.id, "gdpr_request", STAFF)  # only active contacts are reported
    everyone = world.book.stale_records(None, None, 10, None)
    # most first, then by owner, those without an owner last
    assert everyone["by_owner"] == [
        {"owner": "ana", "count": 3},
        {"owner": "al", "count": 1},
        {"owner": "bo", "count": 1},
        {"owner": None, "count": 1},
    ]
    assert everyone["total"] == 6 and everyone["next_cursor"] is None
    assert [item["id"] for item in everyone["items"]] == sorted(c.id for c in [*anas, bos, als, nobodys])
    assert all(set(item) == {"id", *STALE_SUMMARY} and item["stale_since"] for item in everyone["items"])
    first = world.book.stale_records("ana", None, 2, None)
    rest = world.book.stale_records("ana", None, 2, first["next_cursor"])
    assert (first["total"], first["by_owner"]) == (3, [{"owner": "ana", "count": 3}])
    assert [len(first["items"]), len(rest["items"]), rest["next_cursor"]] == [2, 1, None]
    assert [item["id"] for item in first["items"] + rest["items"]] == sorted(c.id for c in anas)  # id order
    customers = world.book.stale_records(None, "customer", 10, None)
    assert [item["id"] for item in customers["items"]] == [bos.id] and customers["total"] == 1
    assert world.book.stale_records("ana", "customer", 10, None)["by_owner"] == []
    freshness_api.verify(world.book, bos.id, "phone", STAFF, None)  # confirmed again: no longer stale
    assert world.book.stale_records(None, "customer", 10, None)["total"] == 0
    report = freshness_api.stale_records(world.book, {"owner": "al", "limit": 5})  # what REST answers
    assert (report["report"], report["owner"], report["lifecycle_stage"], report["total"]) == (
        "stale-records",
        "al",
        None,
        1,
    )


def test_find_contacts_matches_an_email_or_a_phone_most_recently_updated_first(world: World) -> None:
    def created(**fields: Any) -> Contact:
        time.sleep(0.002)  # each save a distinct millisecond: the order is by the last update
        return world.contact(**fields)

    by_email = created(first_name="Sara", email="sara@example.com")
    by_phone = created(first_name="Sara", phone="+989121234567")
    by_both = created(first_name="S.", email="sara@example.com", phone="+989121234567")
    created(first_name="Other", email="other@example.com", phone="+989121234568")
    merged = created(first_name="Sara", email="sara@example.com")
    world.book.merge(by_both.id, merged.id, STAFF, None)  # the duplicate is no longer an active contact
    time.sleep(0.002)
    world.book.update_contact(by_email.id, {"last_name": "Rezaei"}, STAFF, None)  # now the latest
    found = world.book.find_contacts("sara@example.com", "+989121234567", 10)
    assert [contact.id for contact in found] == [by_email.id, by_both.id, by_phone.id]
    assert found[0].last_name == "Rezaei"  # folded from the store: the contact as it is now
    assert [c.id for c in world.book.find_contacts(None, "+989121234567", 10)] == [by_both.id, by_phone.id]
    assert [c.id for c in world.book.find_contacts("sara@example.com", None, 1)] == [by_email.id]
    assert world.book.find_contacts("nobody@example.com", None, 10) == []
    assert world.book.find_contacts(None, None, 10) == []


def test_a_segment_is_defined_changed_at_its_version_and_evaluated_over_the_contacts(world: World) -> None:
    with pytest.raises(ValidationFailed) as bad:
        world.segments.define(
            {"name": "Broken", "rules": {"all": [{"field": "shoe_size", "op": "eq", "value": 9}]}}, STAFF
        )
    assert bad.value.errors and all(path.startswith("rules.all.0") for path in bad.value.errors)
    acme = world.book.create_company({"name": "Acme", "domain": "acme.io"}, STAFF)
    other = world.book.create_company({"name": "Globex", "domain": "globex.io"}, STAFF)
    at_acme = world.contact(first_name="Ana", company_id=acme.id, lifecycle_stage="customer")
    world.contact(first_name="Bob", company_id=other.id, lifecycle_stage="customer")
    lead = world.contact(first_name="Cy", company_id=acme.id, tags=["vip"])
    rules = {
        "all": [
            {"field": "lifecycle_stage", "op": "eq", "value": "customer"},
            {"field": "company.name", "op": "eq", "value": "ACME"},
        ]
    }
    segment = world.segments.define({"name": "Acme customers", "rules": rules}, STAFF)
    assert world.types(segment.id) == ["SegmentDefined"]
    members, _ = world.segments.members(segment.id, 10, None)
    assert [doc["id"] for doc in members] == [at_acme.id]
    vip = {"any": [{"field": "tags", "op": "contains", "value": "vip"}, *rules["all"][:1]]}
    with pytest.raises(PreconditionFailed):
        world.segments.update(segment.id, {"rules": vip}, STAFF, if_match=2)
    world.segments.update(segment.id, {"rules": vip, "name": "VIPs or customers"}, STAFF, if_match=1)
    pages = list(world.segments.member_pages(segment.id, page_size=2))
    assert [len(docs) for docs in pages] == [2, 1]
    assert lead.id in {doc["id"] for docs in pages for doc in docs}
    world.book.erase(lead.id, "gdpr_request", STAFF)  # only active contacts are members
    assert len(world.segments.members(segment.id, 10, None)[0]) == 2
    assert world.segments.member_ids(segment.id) == {
        doc["id"] for doc in world.segments.members(segment.id, 10, None)[0]
    }
    assert at_acme.id in world.segments.member_ids(segment.id) and lead.id not in world.segments.member_ids(segment.id)
    listed, _ = world.segments.list_segments({"limit": 5})
    assert [(doc["id"], doc["name"]) for doc in listed] == [(segment.id, "VIPs or customers")]
    with pytest.raises(NotFound):
        next(world.segments.member_pages("nowhere"))
    with pytest.raises(NotFound):
        world.segments.member_ids("nowhere")
