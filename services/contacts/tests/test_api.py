"""The contacts REST API against the real local servers: behaviour, bad input, concurrency."""

import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from kafka import KafkaConsumer

from crmkit.events import parse_time, rfc3339, utcnow
from crmkit.testing import ServiceHarness

SARA = {"first_name": "Sara", "last_name": "Ahmadi", "email": " Sara@Example.com ", "phone": "+98 912 123 4567"}


def create(contacts: ServiceHarness, body: dict, **headers: str) -> dict:
    response = contacts.client.post("/v1/contacts", json=body, headers=contacts.headers("contacts:write", **headers))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def stored_events(contacts: ServiceHarness) -> int:
    return contacts.runtime.store.count()


def test_create_normalises_and_answers_with_etag_and_location(contacts: ServiceHarness) -> None:
    response = contacts.client.post("/v1/contacts", json={**SARA, "tags": ["vip"]}, headers=contacts.headers())
    body = response.get_json()
    assert response.status_code == 201
    assert body["email"] == "sara@example.com"
    assert body["phone"] == "+989121234567"
    assert body["version"] == 1 and body["status"] == "active" and body["lifecycle_stage"] == "lead"
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == f"/v1/contacts/{body['id']}"
    fetched = contacts.client.get(
        body["Location"] if "Location" in body else f"/v1/contacts/{body['id']}",
        headers=contacts.headers("contacts:read"),
    )
    assert fetched.get_json() == body


@pytest.mark.parametrize(
    ("payload", "status", "fields"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 422, {"_body"}),
        (b"", 400, None),
        (
            json.dumps({"first_name": 5, "email": "nope", "phone": "12", "tags": "x"}).encode(),
            422,
            {"first_name", "email", "phone", "tags"},
        ),
        (json.dumps({"first_name": "S", "unknown": 1}).encode(), 422, {"unknown"}),
        (json.dumps({"first_name": "x" * 10_000}).encode(), 422, {"first_name"}),
        (json.dumps({"first_name": "S", "lifecycle_stage": "boss"}).encode(), 422, {"lifecycle_stage"}),
        (json.dumps({"first_name": "S", "attributes": {"a": {"nested": 1}}}).encode(), 422, {"attributes"}),
        (json.dumps({"first_name": "S", "tags": ["t"] * 51}).encode(), 422, {"tags"}),
        (json.dumps({"first_name": "S\u0000"}).encode(), 422, {"first_name"}),
        (json.dumps({"tags": ["x"]}).encode(), 422, {"first_name", "last_name", "email", "phone"}),
        (json.dumps({"first_name": "S", "company_id": "no-such-company"}).encode(), 422, {"company_id"}),
    ],
)
def test_bad_input_is_a_problem_listing_every_field_and_stores_nothing(
    contacts: ServiceHarness, payload: bytes, status: int, fields: set[str] | None
) -> None:
    before = stored_events(contacts)
    response = contacts.client.post(
        "/v1/contacts", data=payload, content_type="application/json", headers=contacts.headers()
    )
    problem = response.get_json()
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert problem["status"] == status and problem["title"] and problem["detail"]
    if fields is not None:
        assert set(problem["errors"]) == fields
    assert stored_events(contacts) == before


def test_a_body_over_one_megabyte_is_refused(contacts: ServiceHarness) -> None:
    response = contacts.client.post(
        "/v1/contacts",
        data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
        content_type="application/json",
        headers=contacts.headers(),
    )
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"


def test_tokens_and_roles_are_enforced(contacts: ServiceHarness) -> None:
    assert contacts.client.get("/v1/contacts").status_code == 401
    bad = contacts.client.get("/v1/contacts", headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 401 and bad.mimetype == "application/problem+json"
    read_only = contacts.headers("contacts:read")
    assert contacts.client.get("/v1/contacts", headers=read_only).status_code == 200
    assert contacts.client.post("/v1/contacts", json=SARA, headers=read_only).status_code == 403
    assert contacts.client.get("/v1/contacts", headers=contacts.headers("sales:write")).status_code == 403
    for public in ("/healthz", "/metrics", "/openapi.json", "/docs"):
        assert contacts.client.get(public).status_code == 200


def test_unknown_ids_are_404_problems(contacts: ServiceHarness) -> None:
    for path in ("/v1/contacts/nope", "/v1/contacts/nope/history", "/v1/companies/nope"):
        response = contacts.client.get(path, headers=contacts.headers())
        assert response.status_code == 404 and response.mimetype == "application/problem+json"
    company = contacts.client.post("/v1/companies", json={"name": "Acme"}, headers=contacts.headers()).get_json()
    # a company id is not a contact id
    assert contacts.client.get(f"/v1/contacts/{company['id']}", headers=contacts.headers()).status_code == 404


def test_patch_changes_fields_and_history_shows_who_what_when(contacts: ServiceHarness) -> None:
    sara = create(contacts, SARA)
    headers = contacts.headers("contacts:write", subject="ana", **{"If-Match": '"1"'})
    response = contacts.client.patch(
        f"/v1/contacts/{sara['id']}",
        headers=headers,
        json={"last_name": "Karimi", "lifecycle_stage": "customer", "owner": "ana"},
    )
    assert response.status_code == 200, response.get_json()
    assert response.headers["ETag"] == '"3"'
    assert response.get_json()["last_name"] == "Karimi"
    history = contacts.client.get(f"/v1/contacts/{sara['id']}/history", headers=contacts.headers()).get_json()
    entries = history["items"]
    assert [e["type"] for e in entries] == ["ContactCreated", "ContactUpdated", "ContactLifecycleStageChanged"]
    assert entries[1]["actor"] == "user:ana"
    assert entries[1]["changes"]["last_name"] == {"before": "Ahmadi", "after": "Karimi"}
    assert entries[2]["changes"]["lifecycle_stage"] == {"before": "lead", "after": "customer"}


def test_history_is_paged_by_version(contacts: ServiceHarness) -> None:
    sara = create(contacts, SARA)
    for n in range(5):
        contacts.client.patch(f"/v1/contacts/{sara['id']}", json={"last_name": f"N{n}"}, headers=contacts.headers())
    url = f"/v1/contacts/{sara['id']}/history"
    first = contacts.client.get(url, query_string={"limit": 4}, headers=contacts.headers()).get_json()
    rest = contacts.client.get(
        url, query_string={"limit": 4, "cursor": first["next_cursor"]}, headers=contacts.headers()
    ).get_json()
    assert [e["version"] for e in first["items"]] == [1, 2, 3, 4]
    assert [e["version"] for e in rest["items"]] == [5, 6] and rest["next_cursor"] is None
    for bad in ({"limit": 0}, {"limit": 501}, {"cursor": "not-ours"}):
        response = contacts.client.get(url, query_string=bad, headers=contacts.headers())
        assert response.status_code == 422 and set(response.get_json()["errors"]) <= {"limit", "cursor"}


def test_stale_if_match_is_412_and_changes_nothing(contacts: ServiceHarness) -> None:
    sara = create(contacts, SARA)
    contacts.client.patch(f"/v1/contacts/{sara['id']}", json={"last_name": "B"}, headers=contacts.headers())
    stale = contacts.client.patch(
        f"/v1/contacts/{sara['id']}", json={"last_name": "C"}, headers=contacts.headers(**{"If-Match": '"1"'})
    )
    assert stale.status_code == 412
    assert contacts.client.get(f"/v1/contacts/{sara['id']}", headers=contacts.headers()).get_json()["last_name"] == "B"


def test_concurrent_updates_lose_nothing(contacts: ServiceHarness) -> None:
    sara = create(contacts, SARA)
    results: list[int] = []

    def tag(n: int) -> None:
        client = contacts.app.test_client()
        response = client.patch(
            f"/v1/contacts/{sara['id']}", json={"attributes": {f"k{n}": n}}, headers=contacts.headers()
        )
        results.append(response.status_code)

    threads = [threading.Thread(target=tag, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = contacts.client.get(f"/v1/contacts/{sara['id']}", headers=contacts.headers()).get_json()
    landed = {key for key in final["attributes"]}
    # every 200 is reflected; a 409 (retries exhausted) is reported, never silently lost
    assert results.count(200) == len(landed)
    assert set(results) <= {200, 409}
    assert final["version"] == 1 + results.count(200)


def test_concurrent_updates_with_the_same_if_match_have_one_winner(contacts: ServiceHarness) -> None:
    sara = create(contacts, SARA)
    results: list[int] = []

    def rename(n: int) -> None:
        response = contacts.app.test_client().patch(
            f"/v1/contacts/{sara['id']}", json={"last_name": f"N{n}"}, headers=contacts.headers(**{"If-Match": '"1"'})
        )
        results.append(response.status_code)

    threads = [threading.Thread(target=rename, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(200) == 1
    assert set(results) <= {200, 409, 412}
    assert contacts.client.get(f"/v1/contacts/{sara['id']}", headers=contacts.headers()).get_json()["version"] == 2


def test_as_of_returns_the_record_as_it_was(contacts: ServiceHarness) -> None:
    sara = create(contacts, SARA)
    created = parse_time(sara["created_at"])
    while utcnow() <= created:  # times have millisecond precision: let the clock move on
        time.sleep(0.001)
    contacts.client.patch(f"/v1/contacts/{sara['id']}", json={"last_name": "Later"}, headers=contacts.headers())
    then = contacts.client.get(
        f"/v1/contacts/{sara['id']}", query_string={"as_of": rfc3339(created)}, headers=contacts.headers()
    ).get_json()
    assert then["last_name"] == "Ahmadi" and then["version"] == 1
    now = contacts.client.get(f"/v1/contacts/{sara['id']}", headers=contacts.headers()).get_json()
    assert now["last_name"] == "Later"
    before = contacts.client.get(
        f"/v1/contacts/{sara['id']}",
        query_string={"as_of": rfc3339(created - timedelta(seconds=5))},
        headers=contacts.headers(),
    )
    assert before.status_code == 404
    bad = contacts.client.get(
        f"/v1/contacts/{sara['id']}", query_string={"as_of": "yesterday"}, headers=contacts.headers()
    )
    assert bad.status_code == 422 and "as_of" in bad.get_json()["errors"]


def test_idempotency_key_replays_the_first_response(contacts: ServiceHarness) -> None:
    headers = contacts.headers(**{"Idempotency-Key": "abc-1"})
    first = contacts.client.post("/v1/contacts", json=SARA, headers=headers)
    second = contacts.client.post("/v1/contacts", json=SARA, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.get_json()["id"] == second.get_json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert stored_events(contacts) == 1
    other = contacts.client.post("/v1/contacts", json={**SARA, "first_name": "X"}, headers=headers)
    assert other.status_code == 422 and stored_events(contacts) == 1


def test_search_finds_persian_and_arabic_spellings_and_filters(contacts: ServiceHarness) -> None:
    ali = create(contacts, {"first_name": "علي", "last_name": "كريمي", "tags": ["vip"], "lifecycle_stage": "customer"})
    create(contacts, {"first_name": "Bob", "email": "bob@example.com"})
    contacts.project()

    def search(**params: str) -> list[str]:
        body = contacts.client.get("/v1/contacts", query_string=params, headers=contacts.headers()).get_json()
        return [item["id"] for item in body["items"]]

    assert search(q="علی کریمی") == [ali["id"]]
    assert search(q="كريم") == [ali["id"]]
    assert search(q="bob@example") != [] and ali["id"] not in search(q="bob")
    assert search(tag="vip") == [ali["id"]]
    assert search(lifecycle_stage="customer") == [ali["id"]]
    assert len(search()) == 2
    bad = contacts.client.get(
        "/v1/contacts", query_string={"limit": "0", "lifecycle_stage": "x", "cursor": "!"}, headers=contacts.headers()
    )
    # "!" is not of a cursor's documented base64url shape: named beside the others
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"limit", "lifecycle_stage", "cursor"}


def test_pagination_walks_every_contact_once(contacts: ServiceHarness) -> None:
    ids = {create(contacts, {"first_name": f"P{n}"})["id"] for n in range(7)}
    contacts.project()
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        body = contacts.client.get("/v1/contacts", query_string=query, headers=contacts.headers()).get_json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    garbage = contacts.client.get("/v1/contacts", query_string={"cursor": "%%%"}, headers=contacts.headers())
    assert garbage.status_code == 422


def test_companies_can_be_created_linked_searched_and_updated(contacts: ServiceHarness) -> None:
    response = contacts.client.post(
        "/v1/companies", json={"name": "شركت نمونه", "domain": "Example.IR"}, headers=contacts.headers()
    )
    company = response.get_json()
    assert response.status_code == 201 and company["domain"] == "example.ir"
    sara = create(contacts, {**SARA, "company_id": company["id"]})
    assert sara["company_id"] == company["id"]
    updated = contacts.client.patch(
        f"/v1/companies/{company['id']}", json={"industry": "retail"}, headers=contacts.headers(**{"If-Match": '"1"'})
    )
    assert updated.status_code == 200 and updated.get_json()["version"] == 2
    contacts.project()
    found = contacts.client.get("/v1/companies", query_string={"q": "شرکت"}, headers=contacts.headers()).get_json()
    assert [c["id"] for c in found["items"]] == [company["id"]]
    bad = contacts.client.post(
        "/v1/companies", json={"domain": "not a domain", "website": "x"}, headers=contacts.headers()
    )
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"name", "domain", "website"}


def test_every_change_reaches_kafka_as_a_cloudevent_keyed_by_id(contacts: ServiceHarness) -> None:
    sara = create(contacts, SARA)
    contacts.client.patch(f"/v1/contacts/{sara['id']}", json={"owner": "ana"}, headers=contacts.headers())
    contacts.runtime.flush()
    settings = contacts.runtime.settings
    consumer = KafkaConsumer(
        settings.topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    messages = [m for m in consumer if m.key == sara["id"].encode()]
    consumer.close()
    events = [json.loads(m.value) for m in messages]
    assert [e["type"] for e in events] == ["crm.contacts.ContactCreated.v1", "crm.contacts.ContactUpdated.v1"]
    assert [e["streamversion"] for e in events] == [1, 2]
    assert all(e["subject"] == sara["id"] and e["source"] == "crm/contacts" for e in events)
    assert contacts.runtime.store.unpublished(limit=10) == []


def test_openapi_documents_every_route(contacts: ServiceHarness) -> None:
    document = contacts.client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    for path in (
        "/v1/contacts",
        "/v1/contacts/{contact_id}",
        "/v1/contacts/{contact_id}/history",
        "/v1/companies",
        "/v1/companies/{company_id}",
    ):
        assert path in document["paths"]
    post = document["paths"]["/v1/contacts"]["post"]
    assert "422" in post["responses"] and post["security"] == [{"bearer": []}]


def test_locale_and_time_zone_are_validated_and_canonical(contacts: ServiceHarness) -> None:
    sara = create(contacts, {**SARA, "locale": "FA_ir", "time_zone": "Asia/Tehran"})
    assert sara["locale"] == "fa-IR" and sara["time_zone"] == "Asia/Tehran"
    bad = contacts.client.post(
        "/v1/contacts", json={**SARA, "locale": "Persian!", "time_zone": "Mars/Olympus"}, headers=contacts.headers()
    )
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"locale", "time_zone"}


def test_a_company_as_it_was_and_its_history(contacts: ServiceHarness) -> None:
    made = contacts.client.post(
        "/v1/companies", json={"name": "Acme", "domain": "acme.com"}, headers=contacts.headers()
    )
    acme = made.get_json()
    created = parse_time(acme["created_at"])
    while utcnow() <= created:  # times have millisecond precision: let the clock move on
        time.sleep(0.001)
    for change in ({"name": "Acme Ltd"}, {"industry": "Retail"}, {"domain": "acme.ir"}):
        assert (
            contacts.client.patch(f"/v1/companies/{acme['id']}", json=change, headers=contacts.headers()).status_code
            == 200
        )

    def at(as_of: str) -> Any:
        return contacts.client.get(
            f"/v1/companies/{acme['id']}", query_string={"as_of": as_of}, headers=contacts.headers("contacts:read")
        )

    then = at(rfc3339(created))
    assert then.status_code == 200 and then.headers["ETag"] == '"1"'
    was = then.get_json()
    assert (was["name"], was["domain"], was["industry"], was["version"]) == ("Acme", "acme.com", None, 1)
    now = contacts.client.get(f"/v1/companies/{acme['id']}", headers=contacts.headers()).get_json()
    assert (now["name"], now["domain"], now["industry"], now["version"]) == ("Acme Ltd", "acme.ir", "Retail", 4)
    assert at(rfc3339(created - timedelta(seconds=5))).status_code == 404
    bad = at("2026-13-01T00:00:00Z")
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"as_of"}

    url = f"/v1/companies/{acme['id']}/history"
    first = contacts.client.get(url, query_string={"limit": 3}, headers=contacts.headers()).get_json()
    rest = contacts.client.get(
        url, query_string={"limit": 3, "cursor": first["next_cursor"]}, headers=contacts.headers()
    ).get_json()
    assert [e["version"] for e in first["items"]] == [1, 2, 3] and [e["version"] for e in rest["items"]] == [4]
    assert first["items"][1]["changes"]["name"] == {"before": "Acme", "after": "Acme Ltd"}
    assert rest["items"][0]["changes"]["domain"] == {"before": "acme.com", "after": "acme.ir"}
    assert rest["next_cursor"] is None
