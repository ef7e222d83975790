"""Sales follows a contact unmerge: exactly the records the merge moved go back (issue 16)."""

from __future__ import annotations

from typing import Any

from crm_sales.commands import SalesBook
from crmkit.events import new_id
from crmkit.testing import ServiceHarness


def deal(sales: ServiceHarness, contact_id: str, title: str) -> dict[str, Any]:
    response = sales.client.post(
        "/v1/deals",
        headers=sales.headers(),
        json={"title": title, "contact_id": contact_id, "amount": "10", "currency": "USD"},
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_an_unmerge_moves_back_what_its_merge_moved_and_nothing_else(sales: ServiceHarness, people) -> None:
    duplicate, survivor, other = people.add(new_id()), people.add(new_id()), people.add(new_id())
    moved, reassigned = deal(sales, duplicate, "Moved"), deal(sales, duplicate, "Reassigned later")
    own = deal(sales, survivor, "The survivor's own")
    activity = sales.client.post(
        "/v1/activities",
        headers=sales.headers(),
        json={"type": "call", "subject": "Call", "due_at": "2026-12-01T10:00:00Z", "contact_id": duplicate},
    ).get_json()
    book = SalesBook(sales.runtime)
    book.contact_merged(duplicate, survivor, "merge-1")
    assert {book.deals.get(d["id"]).contact_id for d in (moved, reassigned, own)} == {survivor}
    changed = [e for e in sales.runtime.store.load(moved["id"]) if e.type == "DealContactChanged"]
    assert changed[-1].data["merge_id"] == "merge-1" and changed[-1].causation_id == "merge-1"

    put = sales.client.put(f"/v1/deals/{reassigned['id']}/contact", json={"contact_id": other}, headers=sales.headers())
    assert put.status_code == 200, put.get_json()
    assert put.get_json()["contact_id"] == other

    book.contact_unmerged(duplicate, survivor, "merge-1")
    book.contact_unmerged(duplicate, survivor, "merge-1")  # delivered again: nothing more
    assert book.deals.get(moved["id"]).contact_id == duplicate
    assert book.deals.get(reassigned["id"]).contact_id == other  # a person moved it since: stays
    assert book.deals.get(own["id"]).contact_id == survivor  # never the duplicate's
    assert book.activities.get(activity["id"]).contact_id == duplicate
    back = [e for e in sales.runtime.store.load(moved["id"]) if e.type == "DealContactChanged"]
    assert [e.data["reason"] for e in back] == ["contact_merged", "contact_unmerged"]
    assert back[-1].data == {
        "deal_id": moved["id"],
        "from": survivor,
        "to": duplicate,
        "reason": "contact_unmerged",
        "merge_id": "merge-1",
    }


def test_another_merge_is_not_undone_and_bad_reassignments_are_422(sales: ServiceHarness, people) -> None:
    duplicate, survivor = people.add(new_id()), people.add(new_id())
    moved = deal(sales, duplicate, "Moved")
    book = SalesBook(sales.runtime)
    book.contact_merged(duplicate, survivor, "merge-2")
    book.contact_unmerged(duplicate, survivor, "some-other-merge")
    assert book.deals.get(moved["id"]).contact_id == survivor
    bad = sales.client.put(
        f"/v1/deals/{moved['id']}/contact", json={"contact_id": "nobody", "x": 1}, headers=sales.headers()
    )
    assert bad.status_code == 422 and bad.headers["Content-Type"].startswith("application/problem+json")
    assert bad.get_json()["errors"].keys() >= {"x"}
    unknown = sales.client.put(
        f"/v1/deals/{moved['id']}/contact", json={"contact_id": "nobody"}, headers=sales.headers()
    )
    assert unknown.status_code == 422 and "contact_id" in unknown.get_json()["errors"]
    assert (
        sales.client.put(
            f"/v1/deals/{moved['id']}/contact", json={"contact_id": duplicate}, headers=sales.headers("sales:read")
        ).status_code
        == 403
    )
    assert book.deals.get(moved["id"]).contact_id == survivor
    assert book.deals.get(moved["id"]).version == 2  # nothing stored by the refused ones
