"""The service desk follows a contact unmerge: exactly the tickets the merge moved go back (issue 16)."""

from __future__ import annotations

from crmkit.events import RecordedEvent, new_id, utcnow
from crmkit.testing import ServiceHarness


def open_ticket(desk: ServiceHarness, contact_id: str) -> dict:
    response = desk.client.post(
        "/v1/tickets",
        json={"subject": "Order late", "contact_id": contact_id, "channel": "email", "type": "complaint"},
        headers=desk.headers(),
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def contact_event(cid: str, version: int, kind: str, **data: object) -> RecordedEvent:
    return RecordedEvent(
        new_id(), "contacts", cid, "contact", version, kind, 1, data, utcnow(), "system", new_id(), None
    )


def test_an_unmerge_moves_back_the_tickets_its_merge_moved(desk: ServiceHarness, directory) -> None:
    dup, survivor = directory.add("dup"), directory.add("survivor")
    moved, own = open_ticket(desk, dup)["id"], open_ticket(desk, survivor)["id"]
    contacts = desk.spec.projections(desk.runtime)[3]
    merged = contact_event(dup, 2, "ContactMerged", survivor_id=survivor)
    contacts.handle([merged])
    desk.project()
    assert desk.client.get(f"/v1/tickets/{moved}", headers=desk.headers()).get_json()["contact_id"] == survivor
    change = [e for e in desk.runtime.store.load(moved) if e.type == "TicketContactChanged"][-1]
    assert change.data["merge_id"] == merged.id and change.causation_id == merged.id

    other_merge = contact_event(dup, 3, "ContactUnmerged", survivor_id=survivor, merge_event_id="another-merge")
    contacts.handle([other_merge])  # an unmerge of some other merge moves none of these
    assert desk.runtime.store.load(moved)[-1].type == "TicketContactChanged"
    assert [e.data["reason"] for e in desk.runtime.store.load(moved) if e.type == "TicketContactChanged"] == [
        "contact_merged"
    ]

    unmerged = contact_event(dup, 4, "ContactUnmerged", survivor_id=survivor, merge_event_id=merged.id)
    contacts.handle([unmerged])
    contacts.handle([unmerged])  # delivered again: nothing more
    desk.project()
    assert desk.client.get(f"/v1/tickets/{moved}", headers=desk.headers()).get_json()["contact_id"] == dup
    assert desk.client.get(f"/v1/tickets/{own}", headers=desk.headers()).get_json()["contact_id"] == survivor
    changes = [e.data for e in desk.runtime.store.load(moved) if e.type == "TicketContactChanged"]
    assert [(c["reason"], c["contact_id"]) for c in changes] == [
        ("contact_merged", survivor),
        ("contact_unmerged", dup),
    ]
    listed = desk.client.get(f"/v1/tickets?contact_id={dup}", headers=desk.headers()).get_json()["items"]
    assert [t["id"] for t in listed] == [moved]
