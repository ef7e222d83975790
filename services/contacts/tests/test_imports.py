"""Bulk import: the upload, the runner (validation, dedupe, batches, crash resume), the API."""

from __future__ import annotations

import io
import json
import secrets
import threading
import time
import uuid
from urllib.parse import urlencode

import pytest

from crm_contacts.imports import jobs as imports
from crm_contacts.imports.jobs import ImportRunner
from crmkit.testing import ServiceHarness, stored_events, wait_until

CSV = "text/csv"
NDJSON = "application/x-ndjson"


def upload(contacts: ServiceHarness, body: bytes | str, content_type: str = CSV, **params: str):
    data = body.encode() if isinstance(body, str) else body
    return contacts.client.post(
        f"/v1/imports?{urlencode(params)}",
        data=data,
        content_type=content_type,
        headers=contacts.headers("contacts:write"),
    )


def queued(contacts: ServiceHarness, body: bytes | str, content_type: str = CSV, **params: str) -> dict:
    response = upload(contacts, body, content_type, **params)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def run(contacts: ServiceHarness, **options: object) -> ImportRunner:
    """Run every queued import to its end with a real runner, as the worker does."""
    runner = ImportRunner(contacts.runtime, **options)  # type: ignore[arg-type]
    while runner.run_once():
        pass
    return runner


def job(contacts: ServiceHarness, import_id: str) -> dict:
    response = contacts.client.get(f"/v1/imports/{import_id}", headers=contacts.headers("contacts:read"))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def rejections(contacts: ServiceHarness, import_id: str) -> list[dict]:
    items, cursor = [], None
    while True:
        url = f"/v1/imports/{import_id}/rejections?limit=500" + (f"&cursor={cursor}" if cursor else "")
        page = contacts.client.get(url, headers=contacts.headers("contacts:read")).get_json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def counts(view: dict) -> dict:
    return {k: view[k] for k in ("rows_total", "rows_processed", "created", "updated", "duplicates", "rejected")}


def contact_events(contacts: ServiceHarness, import_id: str | None = None) -> list[dict]:
    query: dict = {"aggregate_type": "contact"}
    if import_id:
        query["causation_id"] = import_id
    return stored_events(contacts.runtime.db["events"], query)


def find(contacts: ServiceHarness, **query: str) -> list[dict]:
    contacts.project()
    response = contacts.client.get(f"/v1/contacts?{urlencode(query)}", headers=contacts.headers("contacts:read"))
    return response.get_json()["items"]


# --- happy paths --------------------------------------------------------------------------


def test_csv_import_creates_contacts_in_the_background_and_reports_progress(contacts: ServiceHarness) -> None:
    body = (
        "first_name,last_name,email,phone,lifecycle_stage,tags,owner,attributes.city\n"
        "Sara,Ahmadi, Sara@Example.com ,+98 912 123 4567,customer,vip;newsletter|vip,olivia,Tehran\n"
        "Reza,Karimi,reza@example.com,,,,,\n"
        ",,,+44 20 7946 0958,,,,London\n"
    )
    response = upload(contacts, body)
    accepted = response.get_json()
    assert response.status_code == 202
    assert response.headers["Location"] == f"/v1/imports/{accepted['id']}"
    assert accepted["status"] == "queued" and accepted["format"] == "csv" and accepted["on_duplicate"] == "skip"
    assert accepted["rows_processed"] == 0 and accepted["bytes"] == len(body.encode())

    run(contacts)

    done = job(contacts, accepted["id"])
    assert done["status"] == "completed", done
    assert counts(done) == {
        "rows_total": 3,
        "rows_processed": 3,
        "created": 3,
        "updated": 0,
        "duplicates": 0,
        "rejected": 0,
    }
    assert done["progress"] == 1.0 and done["rows_per_second"] > 0 and done["error"] is None
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
    [sara] = find(contacts, email="sara@example.com")
    assert sara["phone"] == "+989121234567" and sara["lifecycle_stage"] == "customer"
    assert sara["tags"] == ["newsletter", "vip"] and sara["attributes"] == {"city": "Tehran"}
    assert sara["owner"] == "olivia" and sara["version"] == 1
    [london] = find(contacts, phone="+442079460958")
    assert london["first_name"] is None and london["attributes"] == {"city": "London"}

    events = contact_events(contacts, accepted["id"])
    assert len(events) == 3 and {e["type"] for e in events} == {"ContactCreated"}
    stored = contacts.runtime.store.load(sara["id"])[0]
    assert stored.actor == "user:tester" and stored.causation_id == accepted["id"]
    contacts.runtime.flush()
    wait_until(lambda: contacts.runtime.store.unpublished(limit=10) == [], what="imported events on Kafka")
    assert contacts.runtime.db["import_chunks"].count_documents({}) == 0  # the upload is gone once done


def test_imported_contacts_are_sealed_per_person_like_any_other(contacts: ServiceHarness) -> None:
    """Bulk-started streams get a key each (crypto-shredding), and a redone batch reuses them."""
    accepted = queued(contacts, "first_name,email\nShirin,shirin@example.com\nDara,dara@example.com\n")
    run(contacts)
    events = stored_events(contacts.runtime.db["events"], {"causation_id": accepted["id"]})
    assert len(events) == 2
    assert all(set(e["data"]["email"]) == {"pii"} and set(e["data"]["first_name"]) == {"pii"} for e in events)
    stream_ids = [e["stream_id"] for e in events]
    assert contacts.runtime.db["data_keys"].count_documents({"_id": {"$in": stream_ids}}) == 2
    before = contacts.runtime.vault.existing(stream_ids)
    assert contacts.runtime.vault.keys_for([*stream_ids, "someone-new"]) == {
        **before,
        "someone-new": contacts.runtime.vault.existing(["someone-new"])["someone-new"],
    }
    assert contacts.runtime.vault.keys_for([]) == {}
    assert {c["email"] for c in find(contacts, q="example.com")} >= {"shirin@example.com", "dara@example.com"}


@pytest.mark.parametrize("content_type", [NDJSON, "application/jsonl", "application/x-ndjson; charset=utf-8"])
def test_json_lines_import_takes_the_fields_of_post_contacts(contacts: ServiceHarness, content_type: str) -> None:
    lines = [
        {"first_name": "Sara", "email": "sara@example.com", "tags": ["vip"], "attributes": {"score": 7, "ok": True}},
        {"last_name": "Karimi", "phone": "+98 912 765 4321", "lifecycle_stage": "opportunity"},
    ]
    body = "\r\n".join(json.dumps(line) for line in lines) + "\n\n"
    accepted = queued(contacts, body, content_type)
    assert accepted["format"] == "ndjson"
    run(contacts)
    done = job(contacts, accepted["id"])
    assert counts(done) == {
        "rows_total": 2,
        "rows_processed": 2,
        "created": 2,
        "updated": 0,
        "duplicates": 0,
        "rejected": 0,
    }
    [sara] = find(contacts, email="sara@example.com")
    assert sara["attributes"] == {"score": 7, "ok": True} and sara["tags"] == ["vip"]
    [karimi] = find(contacts, phone="+989127654321")
    assert karimi["lifecycle_stage"] == "opportunity"


def test_the_worker_job_runs_queued_imports(contacts: ServiceHarness) -> None:
    """The ServiceSpec's background job, in a thread as `crm serve contacts worker` runs it."""
    job_loop = contacts.spec.jobs(contacts.runtime)[0]  # the import runner (then the lifecycle timers)
    stop = threading.Event()
    thread = threading.Thread(target=job_loop, args=(stop,))
    thread.start()
    try:
        accepted = queued(contacts, "email\na@example.com\nb@example.com\n")
        done = wait_until(
            lambda: (view := job(contacts, accepted["id"]))["status"] == "completed" and view,
            what="the import to complete",
        )
        assert done["created"] == 2
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


# --- validation -------------------------------------------------------------------------


def test_bad_rows_are_reported_with_reasons_and_nothing_is_stored_for_them(contacts: ServiceHarness) -> None:
    company = contacts.client.post("/v1/companies", json={"name": "Acme"}, headers=contacts.headers()).get_json()
    body = (
        "first_name,last_name,email,phone,company_id,lifecycle_stage,tags\n"
        f"Good,One,good1@example.com,,{company['id']},lead,\n"  # row 1: fine, with an existing company
        "Bad,Email,not-an-email,,,,\n"  # row 2
        "Bad,Phone,,12,,,\n"  # row 3
        ",,,,,,vip\n"  # row 4: nobody to identify
        "Bad,Stage,,,,boss,\n"  # row 5
        "Bad,Company,,,no-such-company,,\n"  # row 6
        "Too,Many,,,,,,extra\n"  # row 7
        "\n"  # (blank lines are not rows)
        "Many,Faults,nope,12,,boss,\n"  # row 8: every failing field listed
        "Good,Two,good2@example.com,,,,\n"  # row 9
        f"Ctrl,\x07Bell,,,,,\n"  # row 10: control character
    )
    accepted = queued(contacts, body)
    run(contacts)
    done = job(contacts, accepted["id"])
    assert counts(done) == {
        "rows_total": 10,
        "rows_processed": 10,
        "created": 2,
        "updated": 0,
        "duplicates": 0,
        "rejected": 8,
    }
    rejected = {r["row"]: r for r in rejections(contacts, accepted["id"])}
    assert sorted(rejected) == [2, 3, 4, 5, 6, 7, 8, 10]
    assert set(rejected[2]["errors"]) == {"email"}
    assert set(rejected[3]["errors"]) == {"phone"}
    assert set(rejected[4]["errors"]) == {"first_name", "last_name", "email", "phone"}
    assert set(rejected[5]["errors"]) == {"lifecycle_stage"}
    assert rejected[6]["errors"] == {"company_id": ["no company with id no-such-company"]}
    assert "_row" in rejected[7]["errors"]
    assert set(rejected[8]["errors"]) == {"email", "phone", "lifecycle_stage"}
    assert set(rejected[10]["errors"]) == {"last_name"}
    assert rejected[8]["line"] == 10 and rejected[2]["line"] == 3  # file lines, counting header and blanks
    assert len(contact_events(contacts, accepted["id"])) == 2


def test_bad_json_lines_are_rejected_one_by_one(contacts: ServiceHarness) -> None:
    body = "\n".join(
        [
            json.dumps({"first_name": "Ok"}),
            "{not json",
            "[1, 2]",
            json.dumps({"first_name": "S", "unknown": 1}),
            json.dumps({"first_name": "x" * 10_000}),
            json.dumps({"first_name": "S", "attributes": {"a": {"nested": 1}}}),
            json.dumps({"first_name": "S", "tags": ["t"] * 51}),
            json.dumps({"email": "ok@example.com"}),
        ]
    )
    accepted = queued(contacts, body, NDJSON)
    run(contacts)
    done = job(contacts, accepted["id"])
    assert (done["created"], done["rejected"]) == (2, 6)
    rejected = {r["row"]: set(r["errors"]) for r in rejections(contacts, accepted["id"])}
    assert rejected == {2: {"_row"}, 3: {"_row"}, 4: {"unknown"}, 5: {"first_name"}, 6: {"attributes"}, 7: {"tags"}}


def test_rejections_are_paginated_in_file_order(contacts: ServiceHarness) -> None:
    body = "email\n" + "".join(f"bad{i}\n" for i in range(7))
    accepted = queued(contacts, body)
    run(contacts)
    url = f"/v1/imports/{accepted['id']}/rejections?limit=3"
    first = contacts.client.get(url, headers=contacts.headers("contacts:read")).get_json()
    assert [r["row"] for r in first["items"]] == [1, 2, 3] and first["next_cursor"]
    assert [r["row"] for r in rejections(contacts, accepted["id"])] == list(range(1, 8))


# --- duplicates ---------------------------------------------------------------------------


def test_duplicates_within_the_file_and_against_existing_contacts_are_skipped(contacts: ServiceHarness) -> None:
    existing = contacts.client.post(
        "/v1/contacts",
        json={"first_name": "Old", "email": "old@example.com", "phone": "+989121111111"},
        headers=contacts.headers(),
    ).get_json()
    contacts.project()
    body = (
        "first_name,email,phone\n"
        "A, OLD@Example.com ,\n"  # 1: existing by email (normalised)
        "B,,+98 (912) 111-1111\n"  # 2: existing by phone (E.164)
        "C,new@example.com,+98 912 222 2222\n"  # 3: new
        "D,NEW@example.com,\n"  # 4: same email as row 3
        "E,,+989122222222\n"  # 5: same phone as row 3
        "F,other@example.com,\n"  # 6: new
        "G,,\n"  # 7: no key, always new
        "G,,\n"  # 8: no key, always new
    )
    accepted = queued(contacts, body)
    run(contacts)
    done = job(contacts, accepted["id"])
    assert counts(done) == {
        "rows_total": 8,
        "rows_processed": 8,
        "created": 4,
        "updated": 0,
        "duplicates": 4,
        "rejected": 0,
    }
    assert [c["id"] for c in find(contacts, email="old@example.com")] == [existing["id"]]
    assert [c["first_name"] for c in find(contacts, email="new@example.com")] == ["C"]
    assert contacts.runtime.store.load(existing["id"])[-1].version == 1  # skip leaves it alone


def test_on_duplicate_update_records_a_change_on_the_existing_contact(contacts: ServiceHarness) -> None:
    existing = contacts.client.post(
        "/v1/contacts",
        json={"first_name": "Old", "email": "old@example.com", "tags": ["a"]},
        headers=contacts.headers(),
    ).get_json()
    contacts.project()
    body = (
        "first_name,last_name,email,lifecycle_stage,tags,attributes.source\n"
        "Olga,,old@example.com,customer,a;b,import\n"  # 1: updates the existing contact
        "Twice,,old@example.com,,,\n"  # 2: a repeat in the file: skipped
        "New,,new@example.com,,,\n"  # 3: created
    )
    accepted = queued(contacts, body, on_duplicate="update")
    assert accepted["on_duplicate"] == "update"
    run(contacts)
    done = job(contacts, accepted["id"])
    assert counts(done) == {
        "rows_total": 3,
        "rows_processed": 3,
        "created": 1,
        "updated": 1,
        "duplicates": 1,
        "rejected": 0,
    }
    current = contacts.client.get(f"/v1/contacts/{existing['id']}", headers=contacts.headers()).get_json()
    assert current["first_name"] == "Olga" and current["tags"] == ["a", "b"]
    assert current["attributes"] == {"source": "import"} and current["lifecycle_stage"] == "customer"
    history = contacts.client.get(f"/v1/contacts/{existing['id']}/history", headers=contacts.headers()).get_json()
    types = [entry["type"] for entry in history["items"]]
    assert types == ["ContactCreated", "ContactUpdated", "ContactLifecycleStageChanged"]
    assert [c["first_name"] for c in find(contacts, email="new@example.com")] == ["New"]


def test_on_duplicate_update_applies_every_row_that_matches_the_same_contact(contacts: ServiceHarness) -> None:
    existing = contacts.client.post(
        "/v1/contacts",
        json={"first_name": "Old", "email": "old@example.com", "phone": "+4930123456"},
        headers=contacts.headers(),
    ).get_json()
    other = contacts.client.post(
        "/v1/contacts", json={"first_name": "Other", "email": "other@example.com"}, headers=contacts.headers()
    ).get_json()
    contacts.project()
    body = (
        "first_name,last_name,email,phone\n"
        "Olga,,old@example.com,\n"  # 1: updates `existing` (by email), in the batch's bulk append
        ",Smith,,+4930123456\n"  # 2: `existing` again (by phone): applied after row 1
        "Otto,,other@example.com,\n"  # 3: updates `other`
    )
    accepted = queued(contacts, body, on_duplicate="update")
    run(contacts)
    done = job(contacts, accepted["id"])
    assert counts(done) == {
        "rows_total": 3,
        "rows_processed": 3,
        "created": 0,
        "updated": 3,
        "duplicates": 0,
        "rejected": 0,
    }
    current = contacts.client.get(f"/v1/contacts/{existing['id']}", headers=contacts.headers()).get_json()
    assert (current["first_name"], current["last_name"], current["version"]) == ("Olga", "Smith", 3)
    changed = contacts.client.get(f"/v1/contacts/{other['id']}", headers=contacts.headers()).get_json()
    assert (changed["first_name"], changed["version"]) == ("Otto", 2)


def test_on_duplicate_must_be_skip_or_update(contacts: ServiceHarness) -> None:
    response = upload(contacts, "email\na@example.com\n", on_duplicate="merge")
    assert response.status_code == 422 and set(response.get_json()["errors"]) == {"on_duplicate"}


# --- text ---------------------------------------------------------------------------------


def test_persian_text_and_a_utf8_bom_in_csv(contacts: ServiceHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imports, "CHUNK_BYTES", 101)  # small parts: characters split across chunks
    body = "\ufefffirst_name,last_name,email,tags\n" + "".join(
        f"علی{i},رضایی,ali{i}@example.com,مشتری;ویژه\n" for i in range(20)
    )
    accepted = queued(contacts, body.encode("utf-8"))
    assert contacts.runtime.db["import_chunks"].count_documents({"import_id": accepted["id"]}) > 10
    run(contacts)
    done = job(contacts, accepted["id"])
    assert (done["created"], done["rejected"]) == (20, 0), rejections(contacts, accepted["id"])
    [ali] = find(contacts, email="ali7@example.com")
    assert (ali["first_name"], ali["last_name"], ali["tags"]) == ("علی7", "رضایی", ["مشتری", "ویژه"])
    assert len(find(contacts, q="علي7")) == 1  # Arabic yeh finds Persian yeh, as for any contact


# --- malformed uploads ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        (b"email\na@example.com\n", "application/json", 415, "Content-Type"),
        (b"email\na@example.com\n", "text/plain", 415, "Content-Type"),
        (b"email\na@example.com\n", "text/csv; charset=latin-1", 415, "Content-Type"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", CSV, 422, "_body"),  # gzip
        ("email,first_name\na@example.com,علی\n".encode() + b"\xff bad bytes\n", CSV, 422, "_body"),  # damaged
        (b"name,e-mail,email\nx,y,z\n", CSV, 422, "header"),
        (b"first_name,first_name\nx,y\n", CSV, 422, "header"),
        (b'{"first_name": "x"}\n', CSV, 422, "header"),  # JSON lines sent as CSV
        (b"first_name,email\nx,y\n", NDJSON, 422, "_body"),  # CSV sent as JSON lines
        (b"", CSV, 400, None),
    ],
)
def test_a_malformed_upload_is_a_problem_and_queues_nothing(
    contacts: ServiceHarness, body: bytes, content_type: str, status: int, field: str | None
) -> None:
    response = upload(contacts, body, content_type)
    problem = response.get_json()
    assert response.status_code == status, problem
    assert response.mimetype == "application/problem+json" and problem["detail"]
    if field is not None:
        assert field in problem["errors"]
    assert contacts.runtime.db["imports"].count_documents({}) == 0
    assert contacts.runtime.db["import_chunks"].count_documents({}) == 0


def test_uploads_may_exceed_the_usual_one_mebibyte_cap_but_not_their_own(contacts: ServiceHarness) -> None:
    body = "email\n" + "".join(f"user{i:07d}@example.com\n" for i in range(60_000))  # ~1.5 MB
    assert len(body) > 1024 * 1024
    assert upload(contacts, body).status_code == 202
    too_big = upload(contacts, b"email\n" + b"x" * (imports.MAX_UPLOAD_BYTES + 1))
    assert too_big.status_code == 413 and too_big.mimetype == "application/problem+json"
    assert contacts.runtime.db["imports"].count_documents({}) == 1


def test_writes_need_the_write_role_and_reads_the_read_role(contacts: ServiceHarness) -> None:
    denied = contacts.client.post(
        "/v1/imports", data=b"email\na@b.co\n", content_type=CSV, headers=contacts.headers("contacts:read")
    )
    assert denied.status_code == 403
    assert contacts.client.get("/v1/imports").status_code == 401


def test_unknown_import_is_404(contacts: ServiceHarness) -> None:
    for url in ("/v1/imports/no-such-import", "/v1/imports/no-such-import/rejections"):
        response = contacts.client.get(url, headers=contacts.headers("contacts:read"))
        assert response.status_code == 404 and response.mimetype == "application/problem+json"


def test_imports_are_listed_and_filtered_by_status(contacts: ServiceHarness) -> None:
    first = queued(contacts, "email\na@example.com\n")
    run(contacts)
    second = queued(contacts, "email\nb@example.com\n")
    listed = contacts.client.get("/v1/imports", headers=contacts.headers("contacts:read")).get_json()
    assert [i["id"] for i in listed["items"]] == [first["id"], second["id"]]
    only = contacts.client.get("/v1/imports?status=queued", headers=contacts.headers("contacts:read")).get_json()
    assert [i["id"] for i in only["items"]] == [second["id"]]


def test_idempotency_key_returns_the_first_response_and_queues_nothing_new(contacts: ServiceHarness) -> None:
    headers = contacts.headers("contacts:write", **{"Idempotency-Key": "import-1"})
    body = b"email\na@example.com\n"
    first = contacts.client.post("/v1/imports", data=body, content_type=CSV, headers=headers)
    again = contacts.client.post("/v1/imports", data=body, content_type=CSV, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    other = contacts.client.post("/v1/imports", data=b"email\nb@example.com\n", content_type=CSV, headers=headers)
    assert other.status_code == 422 and "Idempotency-Key" in other.get_json()["errors"]
    assert contacts.runtime.db["imports"].count_documents({}) == 1
    assert contacts.runtime.db["import_chunks"].count_documents({}) == 1


def test_an_idempotent_upload_is_the_same_request_only_with_the_same_query_and_expires(
    contacts: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = contacts.headers("contacts:write", **{"Idempotency-Key": "import-2"})
    body = b"email\na@example.com\n"
    first = contacts.client.post("/v1/imports?on_duplicate=skip", data=body, content_type=CSV, headers=headers)
    assert first.status_code == 202
    other = contacts.client.post("/v1/imports?on_duplicate=update", data=body, content_type=CSV, headers=headers)
    assert other.status_code == 422 and "Idempotency-Key" in other.get_json()["errors"]
    monkeypatch.setenv("CRM_CLOCK_OFFSET_SECONDS", str(24 * 3600))  # a day later the key is free again
    later = contacts.client.post("/v1/imports?on_duplicate=update", data=body, content_type=CSV, headers=headers)
    assert later.status_code == 202 and "Idempotent-Replayed" not in later.headers
    assert contacts.runtime.db["imports"].count_documents({}) == 2


def test_openapi_documents_the_upload(contacts: ServiceHarness) -> None:
    document = contacts.client.get("/openapi.json").get_json()
    post = document["paths"]["/v1/imports"]["post"]
    assert set(post["requestBody"]["content"]) == set(imports.FORMATS)
    assert {"202", "413", "415", "422"} <= set(post["responses"])
    assert any(p.get("name") == "Idempotency-Key" for p in post["parameters"])
    for path in ("/v1/imports/{import_id}", "/v1/imports/{import_id}/rejections"):
        assert path in document["paths"]


# --- crashes --------------------------------------------------------------------------------


def people(count: int, repeat_every: int = 0) -> str:
    """A CSV of `count` rows; with `repeat_every`, every n-th row repeats the email of row 1."""
    lines = ["first_name,last_name,email,phone"]
    for i in range(1, count + 1):
        email = "person1@example.com" if repeat_every and i % repeat_every == 0 else f"person{i}@example.com"
        lines.append(f"P{i},Family,{email},")
    return "\n".join(lines) + "\n"


def test_a_worker_dying_after_a_batch_is_resumed_by_another_without_duplicates(contacts: ServiceHarness) -> None:
    accepted = queued(contacts, people(2500, repeat_every=700))  # rows 700, 1400, 2100 repeat row 1
    crashed = ImportRunner(contacts.runtime, worker="dies", batch_rows=1000, lease_seconds=0.3)
    assert crashed.run_once(max_batches=1)  # one batch written, then the worker "dies", holding the lease
    midway = job(contacts, accepted["id"])
    assert midway["status"] == "running" and midway["rows_processed"] == 1000 and midway["created"] == 999
    assert 0 < midway["progress"] < 1

    survivor = ImportRunner(contacts.runtime, worker="survivor", batch_rows=1000)
    wait_until(lambda: survivor.run_once(), what="the survivor to claim the job once the lease ran out")
    done = job(contacts, accepted["id"])
    assert done["status"] == "completed"
    assert counts(done) == {
        "rows_total": 2500,
        "rows_processed": 2500,
        "created": 2497,
        "updated": 0,
        "duplicates": 3,
        "rejected": 0,
    }
    events = contact_events(contacts, accepted["id"])
    assert len(events) == len({e["stream_id"] for e in events}) == 2497


class Crash(BaseException):
    """Not an Exception: nothing in the runner handles it, like a process being killed."""


def test_a_crash_between_writing_a_batch_and_its_checkpoint_creates_nothing_twice(contacts: ServiceHarness) -> None:
    contacts.client.post("/v1/contacts", json={"email": "person5@example.com"}, headers=contacts.headers())
    contacts.project()
    accepted = queued(contacts, people(2200, repeat_every=1100) + "X,Y,bad-email,\n")

    class DiesBeforeSecondCheckpoint(ImportRunner):
        checkpoints = 0

        def _update(self, job: dict, changes: dict, renew: bool = False) -> None:
            if "counts" in changes:
                self.checkpoints += 1
                if self.checkpoints == 2:
                    raise Crash
            super()._update(job, changes, renew)

    crashed = DiesBeforeSecondCheckpoint(contacts.runtime, worker="dies", batch_rows=1000, lease_seconds=0.3)
    with pytest.raises(Crash):
        crashed.run_once()
    assert job(contacts, accepted["id"])["rows_processed"] == 1000
    written = len(contact_events(contacts, accepted["id"]))
    assert written == 999 + 999  # the second batch's contacts are stored, its checkpoint is not

    survivor = ImportRunner(contacts.runtime, worker="survivor", batch_rows=1000)
    wait_until(lambda: survivor.run_once(), what="the survivor to claim the job")
    done = job(contacts, accepted["id"])
    assert counts(done) == {
        "rows_total": 2201,
        "rows_processed": 2201,
        "created": 2197,
        "updated": 0,
        "duplicates": 3,
        "rejected": 1,
    }
    events = contact_events(contacts, accepted["id"])
    assert len(events) == len({e["stream_id"] for e in events}) == 2197
    assert [r["row"] for r in rejections(contacts, accepted["id"])] == [2201]


def test_an_import_that_keeps_failing_is_given_up_with_a_reason(contacts: ServiceHarness) -> None:
    accepted = queued(contacts, "email\na@example.com\n")
    contacts.runtime.db["import_chunks"].delete_many({})  # the stored upload is lost
    run(contacts)
    failed = job(contacts, accepted["id"])
    assert failed["status"] == "failed" and "missing" in failed["error"] and failed["finished_at"]


# --- volume ---------------------------------------------------------------------------------

LARGE = 20_000


def test_a_large_import_through_the_real_runner_counts_exactly(contacts: ServiceHarness) -> None:
    """20,000 rows (100,000 are left to `make bench`): every 50th invalid, every 40th a repeat."""
    lines = ["first_name,last_name,email,phone,tags,attributes.source"]
    expected = {"created": 0, "duplicates": 0, "rejected": 0}
    for i in range(1, LARGE + 1):
        if i % 50 == 0:
            email, outcome = f"broken{i}", "rejected"
        elif i % 40 == 0:
            email, outcome = f"user{i - 1}@example.com", "duplicates"
        else:
            email, outcome = f"user{i}@example.com", "created"
        expected[outcome] += 1
        lines.append(f"First{i},Last,{email},+98912{i:07d},bulk;test,big")
    started = time.monotonic()
    accepted = queued(contacts, "\n".join(lines) + "\n")
    run(contacts)
    elapsed = time.monotonic() - started
    done = job(contacts, accepted["id"])
    assert done["status"] == "completed"
    assert counts(done) == {"rows_total": LARGE, "rows_processed": LARGE, "updated": 0, **expected}
    assert len(stored_events(contacts.runtime.db["events"], {"causation_id": accepted["id"]})) == expected["created"]
    assert len(rejections(contacts, accepted["id"])) == expected["rejected"]
    print(
        f"\n{LARGE} rows in {elapsed:.1f}s: {LARGE / elapsed:.0f} rows/s end to end, "
        f"runner {done['rows_per_second']} rows/s"
    )


# --- the pure parts (no servers) -----------------------------------------------------------


def test_csv_columns_are_checked_and_canonical() -> None:
    assert imports.csv_columns([" First_Name", "EMAIL", "attributes.Shoe Size"]) == [
        "first_name",
        "email",
        "attributes.Shoe Size",
    ]
    for bad in (["name"], ["email", "Email"], ["email", ""], ["attributes."], []):
        with pytest.raises(imports.ValidationFailed):
            imports.csv_columns(bad)


def test_csv_rows_become_the_fields_of_post_contacts() -> None:
    text = io.StringIO('first_name,tags,attributes.city\n" Sara ","a; b|c",\n\n,,\n"multi\nline",,x\n')
    rows = list(imports.read_rows(text, "csv"))
    assert [(r.number, r.line) for r in rows] == [(1, 2), (2, 5)]
    assert rows[0].fields == {"first_name": "Sara", "tags": ["a", "b", "c"]}
    assert rows[1].fields == {"first_name": "multi\nline", "attributes": {"city": "x"}}


def test_contact_ids_are_deterministic_per_import_and_row_and_time_ordered() -> None:
    a = imports.contact_id("key-a", 1_700_000_000_000, 1)
    assert a == imports.contact_id("key-a", 1_700_000_000_000, 1)
    assert (
        len({a, imports.contact_id("key-a", 1_700_000_000_000, 2), imports.contact_id("key-b", 1_700_000_000_000, 1)})
        == 3
    )
    assert a[14] == "7" and a[19] in "89ab"  # a UUIDv7
    assert imports.contact_id("key-a", 1_700_000_000_000, 1) < imports.contact_id("key-a", 1_700_000_000_001, 1)


def test_one_imported_contact_id_reveals_nothing_about_the_others() -> None:
    ids = [uuid.UUID(imports.contact_id(secrets.token_hex(16), 1_700_000_000_000, row)).int for row in range(1, 200)]
    random_bits = [value & (2**62 - 1) for value in ids]
    # the old scheme put the row number in plain bits beside a salt shared by the whole import
    assert len({bits & (2**40 - 1) for bits in random_bits}) == len(ids)
    assert len({bits >> 40 for bits in random_bits}) == len(ids)
