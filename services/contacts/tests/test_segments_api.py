"""Segments over REST and gRPC against the real local servers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crm_contacts.app import SERVICE
from crmkit import rpc, stack
from crmkit.events import parse_time, rfc3339, utcnow
from crmkit.testing import ServiceHarness, grpc_channel

VIP_LEADS = {
    "all": [
        {"field": "lifecycle_stage", "op": "eq", "value": "lead"},
        {"field": "tags", "op": "contains", "value": "vip"},
    ]
}


def post(contacts: ServiceHarness, path: str, body: dict, **headers: str) -> dict:
    response = contacts.client.post(path, json=body, headers=contacts.headers("contacts:write", **headers))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def contact(contacts: ServiceHarness, **fields: Any) -> dict:
    return post(contacts, "/v1/contacts", fields)


def segment(contacts: ServiceHarness, rules: dict, name: str = "VIP leads") -> dict:
    return post(contacts, "/v1/segments", {"name": name, "rules": rules})


def patch(contacts: ServiceHarness, path: str, body: dict, **headers: str) -> Any:
    return contacts.client.patch(path, json=body, headers=contacts.headers("contacts:write", **headers))


def members(contacts: ServiceHarness, segment_id: str, **query: Any) -> dict:
    contacts.project()
    response = contacts.client.get(
        f"/v1/segments/{segment_id}/members", query_string=query, headers=contacts.headers("contacts:read")
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def member_ids(contacts: ServiceHarness, segment_id: str) -> set[str]:
    return {item["id"] for item in members(contacts, segment_id, limit=500)["items"]}


def test_create_answers_with_etag_and_location_and_reads_back(contacts: ServiceHarness) -> None:
    response = contacts.client.post(
        "/v1/segments",
        headers=contacts.headers("contacts:write"),
        json={"name": " VIP leads ", "description": "warm", "rules": VIP_LEADS},
    )
    body = response.get_json()

    assert response.status_code == 201
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == f"/v1/segments/{body['id']}"
    assert body["name"] == "VIP leads" and body["rules"] == VIP_LEADS and body["version"] == 1
    fetched = contacts.client.get(f"/v1/segments/{body['id']}", headers=contacts.headers("contacts:read"))
    assert fetched.get_json() == body and fetched.headers["ETag"] == '"1"'
    contacts.project()
    listed = contacts.client.get("/v1/segments", headers=contacts.headers("contacts:read")).get_json()
    assert listed == {"items": [body], "next_cursor": None}


def test_an_idempotency_key_creates_once(contacts: ServiceHarness) -> None:
    first = post(contacts, "/v1/segments", {"name": "A", "rules": VIP_LEADS}, **{"Idempotency-Key": "k1"})
    before = contacts.runtime.store.count()
    again = contacts.client.post(
        "/v1/segments",
        json={"name": "A", "rules": VIP_LEADS},
        headers=contacts.headers("contacts:write", **{"Idempotency-Key": "k1"}),
    )

    assert again.status_code == 201 and again.get_json() == first
    assert again.headers["Idempotent-Replayed"] == "true"
    assert contacts.runtime.store.count() == before


@pytest.mark.parametrize(
    ("payload", "status", "fields"),
    [
        (b"{nope", 400, None),
        (json.dumps({"rules": VIP_LEADS}).encode(), 422, {"name"}),
        (json.dumps({"name": "x"}).encode(), 422, {"rules"}),
        (json.dumps({"name": "x", "rules": None}).encode(), 422, {"rules"}),
        (json.dumps({"name": "x", "rules": [1]}).encode(), 422, {"rules"}),
        (json.dumps({"name": "x", "rules": VIP_LEADS, "owner": "me"}).encode(), 422, {"owner"}),
        (json.dumps({"name": "", "rules": {"all": []}}).encode(), 422, {"name", "rules.all"}),
        (
            json.dumps(
                {
                    "name": 5,
                    "description": "d" * 3000,
                    "rules": {
                        "any": [
                            {"field": "tags", "op": "contains", "value": "vip"},
                            {"field": "nope", "op": "eq", "value": 1},
                            {"field": "tags", "op": "gt", "value": 1},
                            {
                                "all": [
                                    {"field": "created_at", "op": "before", "value": "last week"},
                                    {"field": "lifecycle_stage", "op": "in", "value": ["lead", "boss"]},
                                    {"field": "derived.clv", "op": "gte", "value": "1000"},
                                ]
                            },
                            "not a condition",
                        ]
                    },
                }
            ).encode(),
            422,
            {
                "name",
                "description",
                "rules.any.1.field",
                "rules.any.2.op",
                "rules.any.3.all.0.value",
                "rules.any.3.all.1.value",
                "rules.any.3.all.2.value",
                "rules.any.4",
            },
        ),
    ],
)
def test_bad_input_lists_every_problem_and_stores_nothing(
    contacts: ServiceHarness, payload: bytes, status: int, fields: set[str] | None
) -> None:
    before = contacts.runtime.store.count()
    response = contacts.client.post(
        "/v1/segments", data=payload, content_type="application/json", headers=contacts.headers("contacts:write")
    )
    problem = response.get_json()

    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    if fields is not None:
        assert set(problem["errors"]) == fields
    assert contacts.runtime.store.count() == before


def test_members_are_the_matching_active_contacts_as_contact_views(contacts: ServiceHarness) -> None:
    vip = contact(contacts, first_name="Sara", tags=["vip"], lifecycle_stage="lead")
    contact(contacts, first_name="Reza", tags=["vip"], lifecycle_stage="customer")
    contact(contacts, first_name="Ali", tags=["other"], lifecycle_stage="lead")
    seg = segment(contacts, VIP_LEADS)

    answer = members(contacts, seg["id"])

    listed = contacts.client.get(
        "/v1/contacts",
        query_string={"tag": "vip", "lifecycle_stage": "lead"},
        headers=contacts.headers("contacts:read"),
    ).get_json()
    assert answer == {"items": listed["items"], "next_cursor": None}
    assert [item["id"] for item in answer["items"]] == [vip["id"]]
    assert set(answer["items"][0]) >= {"id", "version", "first_name", "tags", "lifecycle_stage", "created_at"}
    assert not set(answer["items"][0]) & {"_id", "search", "first_name_folded", "created_ms", "updated_ms"}


def test_membership_follows_changes_to_contacts(contacts: ServiceHarness) -> None:
    sara = contact(contacts, first_name="Sara", tags=["vip"], lifecycle_stage="lead")
    seg = segment(contacts, VIP_LEADS)
    assert member_ids(contacts, seg["id"]) == {sara["id"]}

    assert patch(contacts, f"/v1/contacts/{sara['id']}", {"lifecycle_stage": "customer"}).status_code == 200
    assert member_ids(contacts, seg["id"]) == set()

    assert patch(contacts, f"/v1/contacts/{sara['id']}", {"lifecycle_stage": "lead", "tags": []}).status_code == 200
    assert member_ids(contacts, seg["id"]) == set()

    assert patch(contacts, f"/v1/contacts/{sara['id']}", {"tags": ["vip", "new"]}).status_code == 200
    assert member_ids(contacts, seg["id"]) == {sara["id"]}


def test_company_conditions_follow_changes_to_the_company(contacts: ServiceHarness) -> None:
    acme = post(contacts, "/v1/companies", {"name": "Acme Trading", "industry": "retail", "tags": ["key"]})
    other = post(contacts, "/v1/companies", {"name": "Beta", "industry": "tech"})
    at_acme = contact(contacts, first_name="Sara", company_id=acme["id"])
    contact(contacts, first_name="Reza", company_id=other["id"])
    contact(contacts, first_name="Ali")
    seg = segment(
        contacts,
        {
            "any": [
                {"field": "company.industry", "op": "eq", "value": "retail"},
                {"field": "company.name", "op": "starts_with", "value": "ACME T"},
            ]
        },
    )
    assert member_ids(contacts, seg["id"]) == {at_acme["id"]}

    assert patch(contacts, f"/v1/companies/{acme['id']}", {"industry": "wholesale", "name": "Zeta"}).status_code == 200
    assert member_ids(contacts, seg["id"]) == set()


def test_attributes_names_dates_and_absent_derived_values(contacts: ServiceHarness) -> None:
    ali = contact(contacts, first_name="علي", attributes={"age": 34, "city": "Tehran"})
    contact(contacts, first_name="Sara", attributes={"age": "34"})
    by_name = segment(contacts, {"all": [{"field": "first_name", "op": "starts_with", "value": "علی"}]})
    by_age = segment(contacts, {"all": [{"field": "attributes.age", "op": "gte", "value": 30}]})
    recent = segment(contacts, {"all": [{"field": "created_at", "op": "after", "value": "-1h"}]})
    old = segment(contacts, {"all": [{"field": "created_at", "op": "before", "value": "-1h"}]})
    gold = segment(
        contacts,
        {
            "any": [
                {"field": "derived.tier", "op": "eq", "value": "gold"},
                {"field": "derived.tier", "op": "ne", "value": "bronze"},
            ]
        },
    )

    assert member_ids(contacts, by_name["id"]) == {ali["id"]}
    assert member_ids(contacts, by_age["id"]) == {ali["id"]}  # "34" is text, not a number
    assert len(member_ids(contacts, recent["id"])) == 2
    assert member_ids(contacts, old["id"]) == set()
    assert member_ids(contacts, gold["id"]) == set()  # no derived values yet: no condition on them matches

    # another service's events will put derived values on the read model; stand in for them here
    contacts.runtime.db["contacts"].update_one({"_id": ali["id"]}, {"$set": {"derived": {"tier": "gold"}}})
    assert member_ids(contacts, gold["id"]) == {ali["id"]}


def test_members_page_with_limit_and_cursor(contacts: ServiceHarness) -> None:
    created = [contact(contacts, first_name=f"Vip {i}", tags=["vip"])["id"] for i in range(7)]
    contact(contacts, first_name="Not a vip")
    seg = segment(contacts, VIP_LEADS)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        answer = members(contacts, seg["id"], limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [item["id"] for item in answer["items"]]
        pages += 1
        cursor = answer["next_cursor"]
        if cursor is None:
            break

    assert seen == created and pages == 3
    for query in ({"limit": 0}, {"limit": 501}, {"cursor": "!!"}, {"colour": "red"}):
        response = contacts.client.get(
            f"/v1/segments/{seg['id']}/members", query_string=query, headers=contacts.headers("contacts:read")
        )
        assert response.status_code == 422, query


def test_list_segments_pages(contacts: ServiceHarness) -> None:
    names = [segment(contacts, VIP_LEADS, name=f"S{i}")["name"] for i in range(3)]
    contacts.project()

    first = contacts.client.get("/v1/segments?limit=2", headers=contacts.headers("contacts:read")).get_json()
    second = contacts.client.get(
        f"/v1/segments?limit=2&cursor={first['next_cursor']}", headers=contacts.headers("contacts:read")
    ).get_json()

    assert [s["name"] for s in first["items"] + second["items"]] == names
    assert second["next_cursor"] is None


def test_patch_changes_rules_honours_if_match_and_rejects_bad_rules(contacts: ServiceHarness) -> None:
    sara = contact(contacts, first_name="Sara", tags=["vip"], lifecycle_stage="customer")
    seg = segment(contacts, VIP_LEADS)
    path = f"/v1/segments/{seg['id']}"
    assert member_ids(contacts, seg["id"]) == set()

    customers = {"all": [{"field": "lifecycle_stage", "op": "eq", "value": "customer"}]}
    changed = patch(contacts, path, {"rules": customers}, **{"If-Match": '"1"'})
    assert changed.status_code == 200 and changed.headers["ETag"] == '"2"'
    assert changed.get_json()["rules"] == customers
    assert member_ids(contacts, seg["id"]) == {sara["id"]}

    stale = patch(contacts, path, {"name": "Customers"}, **{"If-Match": '"1"'})
    assert stale.status_code == 412
    bad = patch(contacts, path, {"name": None, "rules": {"all": [{"field": "tags", "op": "eq", "value": "x"}]}})
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"name", "rules.all.0.op"}
    history = contacts.client.get(f"{path}/history", headers=contacts.headers("contacts:read")).get_json()["items"]
    assert [entry["type"] for entry in history] == ["SegmentDefined", "SegmentUpdated"]
    assert history[1]["changes"]["rules"] == {"before": VIP_LEADS, "after": customers}


def test_unknown_segments_are_404_and_roles_are_checked(contacts: ServiceHarness) -> None:
    for path in ("/v1/segments/nope", "/v1/segments/nope/members"):
        assert contacts.client.get(path, headers=contacts.headers("contacts:read")).status_code == 404
    assert patch(contacts, "/v1/segments/nope", {"name": "x"}).status_code == 404
    assert contacts.client.get("/v1/segments").status_code == 401
    forbidden = contacts.client.post(
        "/v1/segments", json={"name": "x", "rules": VIP_LEADS}, headers=contacts.headers("contacts:read")
    )
    assert forbidden.status_code == 403
    assert contacts.client.get("/v1/segments", headers=contacts.headers("sales:read")).status_code == 403


def test_openapi_documents_the_segment_routes(contacts: ServiceHarness) -> None:
    paths = contacts.client.get("/openapi.json").get_json()["paths"]
    assert {"post", "get"} <= set(paths["/v1/segments"])
    assert {"get", "patch"} <= set(paths["/v1/segments/{segment_id}"])
    assert "get" in paths["/v1/segments/{segment_id}/members"]


# --- gRPC -----------------------------------------------------------------------------


@pytest.fixture
def directory(contacts: ServiceHarness) -> Iterator[contacts_pb2_grpc.ContactDirectoryStub]:
    """The service's real gRPC wiring, in process on a free port."""
    port = stack.free_port()
    server, _ = rpc.build_server("contacts", port, lambda srv: SERVICE.servicers(srv, contacts.runtime))
    server.start()
    channel = grpc_channel(f"127.0.0.1:{port}", "contacts:read")
    yield contacts_pb2_grpc.ContactDirectoryStub(channel)
    channel.close()
    server.stop(0)


def test_list_segment_members_streams_every_member_in_pages(
    contacts: ServiceHarness, directory: contacts_pb2_grpc.ContactDirectoryStub
) -> None:
    created = [contact(contacts, first_name=f"Vip {i}", email=f"vip{i}@example.com", tags=["vip"]) for i in range(5)]
    contact(contacts, first_name="Not a vip")
    seg = segment(contacts, VIP_LEADS)
    contacts.project()

    streamed = list(
        directory.ListSegmentMembers(
            contacts_pb2.ListSegmentMembersRequest(segment_id=seg["id"], page_size=2), timeout=10
        )
    )
    default_pages = list(
        directory.ListSegmentMembers(contacts_pb2.ListSegmentMembersRequest(segment_id=seg["id"]), timeout=10)
    )

    assert [m.contact_id for m in streamed] == [c["id"] for c in created]
    assert streamed == default_pages
    first = streamed[0]
    assert (first.first_name, first.email, first.lifecycle_stage, list(first.tags), first.version) == (
        "Vip 0",
        "vip0@example.com",
        "lead",
        ["vip"],
        1,
    )


def test_list_segment_members_errors(
    contacts: ServiceHarness, directory: contacts_pb2_grpc.ContactDirectoryStub
) -> None:
    seg = segment(contacts, {"all": [{"field": "tags", "op": "contains", "value": "nobody"}]})
    assert (
        list(directory.ListSegmentMembers(contacts_pb2.ListSegmentMembersRequest(segment_id=seg["id"]), timeout=10))
        == []
    )

    for request, code in (
        (contacts_pb2.ListSegmentMembersRequest(segment_id="nope"), grpc.StatusCode.NOT_FOUND),
        (contacts_pb2.ListSegmentMembersRequest(segment_id=""), grpc.StatusCode.INVALID_ARGUMENT),
        (contacts_pb2.ListSegmentMembersRequest(segment_id=seg["id"], page_size=-1), grpc.StatusCode.INVALID_ARGUMENT),
        (
            contacts_pb2.ListSegmentMembersRequest(segment_id=seg["id"], page_size=5000),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            list(directory.ListSegmentMembers(request, timeout=10))
        assert caught.value.code() == code, request


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/segments", {"name": " ", "rules": VIP_LEADS}, "name"),
        ("/v1/companies", {"name": ""}, "name"),
        ("/v1/contacts", {"first_name": "", "email": "a@example.com", "owner": ""}, None),
    ],
)
def test_empty_text_is_null_or_a_422_never_a_500(
    contacts: ServiceHarness, path: str, body: dict, field: str | None
) -> None:
    """schemas.Text turns "" into null; a field that may not be null says so (it used to be a 500)."""
    response = contacts.client.post(path, json=body, headers=contacts.headers("contacts:write"))
    if field is None:
        assert response.status_code == 201 and response.get_json()["first_name"] is None
    else:
        assert response.status_code == 422 and set(response.get_json()["errors"]) == {field}


def test_as_of_answers_the_segment_as_it_was_and_history_pages_its_changes(contacts: ServiceHarness) -> None:
    seg = segment(contacts, VIP_LEADS, name="VIP")
    created = parse_time(seg["created_at"])
    leads = {"all": [{"field": "lifecycle_stage", "op": "eq", "value": "lead"}]}
    while utcnow() <= created:  # times have millisecond precision: let the clock move on
        time.sleep(0.001)
    for change in ({"name": "VIP 2"}, {"rules": leads}, {"description": "warm"}):
        assert patch(contacts, f"/v1/segments/{seg['id']}", change).status_code == 200

    def at(as_of: str) -> Any:
        return contacts.client.get(
            f"/v1/segments/{seg['id']}", query_string={"as_of": as_of}, headers=contacts.headers("contacts:read")
        )

    then = at(rfc3339(created))
    assert then.status_code == 200 and then.headers["ETag"] == '"1"'
    assert then.get_json() | {"updated_at": None} == seg | {"updated_at": None}
    assert at(rfc3339(created - timedelta(seconds=5))).status_code == 404
    bad = at("yesterday")
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"as_of"}
    now = contacts.client.get(f"/v1/segments/{seg['id']}", headers=contacts.headers("contacts:read")).get_json()
    assert (now["name"], now["rules"], now["description"], now["version"]) == ("VIP 2", leads, "warm", 4)

    url = f"/v1/segments/{seg['id']}/history"
    first = contacts.client.get(url, query_string={"limit": 2}, headers=contacts.headers("contacts:read")).get_json()
    rest = contacts.client.get(
        url, query_string={"limit": 2, "cursor": first["next_cursor"]}, headers=contacts.headers("contacts:read")
    ).get_json()
    entries = first["items"] + rest["items"]
    assert [e["version"] for e in first["items"]] == [1, 2] and rest["next_cursor"] is None
    assert [e["version"] for e in entries] == [1, 2, 3, 4]
    assert entries[1]["changes"]["name"] == {"before": "VIP", "after": "VIP 2"}
    assert entries[2]["changes"]["rules"] == {"before": VIP_LEADS, "after": leads}
    assert entries[3]["changes"]["description"] == {"before": None, "after": "warm"}
    assert all(e["actor"] and e["time"] and e["event_id"] for e in entries)
    unknown = contacts.client.get("/v1/segments/nope/history", headers=contacts.headers("contacts:read"))
    assert unknown.status_code == 404
