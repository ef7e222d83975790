"""The sales REST API against the real local servers: behaviour, bad input, transitions, If-Match."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from crm_sales import reports
from crm_sales.commands import SalesBook
from crmkit import stack
from crmkit.events import Metadata, new_id, rfc3339, utcnow
from crmkit.testing import ServiceHarness

TODAY = utcnow().date()


def post(sales: ServiceHarness, path: str, body: Any = None, status: int = 201, **headers: str) -> dict:
    response = sales.client.post(path, json=body, headers=sales.headers(**headers))
    assert response.status_code == status, response.get_json()
    return response.get_json()


def get(sales: ServiceHarness, path: str, status: int = 200) -> Any:
    response = sales.client.get(path, headers=sales.headers("sales:read"))
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def deal(sales: ServiceHarness, contact: str, **fields: Any) -> dict:
    body = {"title": "Laptops", "contact_id": contact, "amount": "1000.00", "currency": "USD", **fields}
    return post(sales, "/v1/deals", body)


def test_default_pipeline_exists_and_custom_pipelines_are_ordered(sales: ServiceHarness) -> None:
    default = get(sales, "/v1/pipelines/default")
    assert [s["key"] for s in default["stages"]][:4] == ["qualification", "needs_analysis", "proposal", "negotiation"]
    created = post(
        sales,
        "/v1/pipelines",
        {
            "name": "Renewals",
            "stages": [{"name": "Contacted", "probability": "20"}, {"name": "Agreed", "probability": "90"}],
        },
    )
    assert [(s["key"], s["probability"]) for s in created["stages"]] == [
        ("contacted", "20"),
        ("agreed", "90"),
        ("won", "100"),
        ("lost", "0"),
    ]
    sales.project()
    assert {p["id"] for p in get(sales, "/v1/pipelines")["items"]} == {"default", created["id"]}
    bad = sales.client.post(
        "/v1/pipelines", json={"name": "", "stages": [{"name": "x", "probability": "101"}]}, headers=sales.headers()
    )
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"name", "stages.0.probability"}


def test_products_money_rules_and_bad_input(sales: ServiceHarness) -> None:
    rial = post(
        sales,
        "/v1/products",
        {"sku": "LAP-1", "name": "لپ‌تاپ", "unit_price": "250000000", "currency": "irr", "tax_rate": "9"},
    )
    assert rial["unit_price"] == "250000000" and rial["currency"] == "IRR" and rial["active"] is True
    usd = post(sales, "/v1/products", {"sku": "MOUSE", "name": "Mouse", "unit_price": "19.9", "currency": "USD"})
    assert usd["unit_price"] == "19.90"
    before = sales.runtime.store.count()
    for body, fields in [
        ({"sku": "X", "name": "X", "unit_price": "10.5", "currency": "IRR"}, {"unit_price"}),
        (
            {"sku": "X", "name": "X", "unit_price": 10.5, "currency": "USD", "tax_rate": "150"},
            {"unit_price", "tax_rate"},
        ),
        (
            {"name": "", "unit_price": "-1", "currency": "ZZZ", "extra": 1},
            {"sku", "name", "unit_price", "currency", "extra"},
        ),
        ({"sku": "LAP-1", "name": "dup", "unit_price": "1", "currency": "IRR"}, None),
    ]:
        sales.project()
        response = sales.client.post("/v1/products", json=body, headers=sales.headers())
        assert response.status_code == 422, body
        assert response.mimetype == "application/problem+json"
        if fields:
            assert set(response.get_json()["errors"]) == fields
    assert sales.runtime.store.count() == before
    patched = sales.client.patch(
        f"/v1/products/{usd['id']}", json={"active": False}, headers=sales.headers(**{"If-Match": '"1"'})
    )
    assert patched.status_code == 200 and patched.get_json()["active"] is False
    stale = sales.client.patch(
        f"/v1/products/{usd['id']}", json={"name": "M"}, headers=sales.headers(**{"If-Match": '"1"'})
    )
    assert stale.status_code == 412
    sales.project()
    assert [p["sku"] for p in get(sales, "/v1/products?active=true")["items"]] == ["LAP-1"]


def test_deals_need_a_known_contact(sales: ServiceHarness, people) -> None:
    ali = people.add(new_id(), first_name="علی", last_name="رضایی")
    erased = people.add(new_id(), status="erased")
    before = sales.runtime.store.count()
    for contact, status in [("nobody-" + new_id(), 422), (erased, 422)]:
        response = sales.client.post(
            "/v1/deals", json={"title": "x", "contact_id": contact, "currency": "USD"}, headers=sales.headers()
        )
        assert response.status_code == status and set(response.get_json()["errors"]) == {"contact_id"}
    response = sales.client.post(
        "/v1/deals",
        json={
            "title": "",
            "contact_id": ali,
            "amount": "1.001",
            "currency": "USD",
            "expected_close": "soon",
            "stage": "won",
        },
        headers=sales.headers(),
    )
    assert response.status_code == 422
    assert set(response.get_json()["errors"]) == {"title", "amount", "expected_close"}
    response = sales.client.post(
        "/v1/deals",
        json={"title": "x", "contact_id": ali, "currency": "USD", "pipeline_id": "nope"},
        headers=sales.headers(),
    )
    assert response.status_code == 422 and set(response.get_json()["errors"]) == {"pipeline_id"}
    assert sales.runtime.store.count() == before
    created = deal(sales, ali, expected_close=TODAY.isoformat(), owner="sara")
    assert created["stage"] == "qualification" and created["contact"]["first_name"] == "علی"
    assert created["amount"] == "1000.00" and created["stage_history"][0]["seconds_in_stage"] >= 0


def test_contacts_down_is_a_503_and_stores_nothing(sales: ServiceHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_CONTACTS_GRPC_TARGET", f"127.0.0.1:{stack.free_port()}")
    monkeypatch.setenv("CRM_SALES_CONTACTS_DEADLINE", "0.5")
    from crm_sales import api
    from crmkit.web import create_app

    app = create_app(sales.runtime, [api.blueprint(SalesBook(sales.runtime))], title="t", description="t")
    before = sales.runtime.store.count()
    response = app.test_client().post(
        "/v1/deals", json={"title": "x", "contact_id": "c", "currency": "USD"}, headers=sales.headers()
    )
    assert response.status_code == 503
    assert "contacts service is unavailable" in response.get_json()["detail"]
    assert sales.runtime.store.count() == before


def test_stage_moves_won_lost_reopen_conflicts_and_if_match(sales: ServiceHarness, people) -> None:
    contact = people.add(new_id(), first_name="Sara")
    d = deal(sales, contact)
    path = f"/v1/deals/{d['id']}"
    moved = post(sales, f"{path}/stage", {"stage": "proposal"}, status=200, **{"If-Match": '"1"'})
    assert moved["stage"] == "proposal" and moved["version"] == 2
    assert post(sales, f"{path}/stage", {"stage": "negotiation"}, status=412, **{"If-Match": '"1"'})
    assert post(sales, f"{path}/stage", {"stage": "won"}, status=409)
    assert set(post(sales, f"{path}/stage", {"stage": "nowhere"}, status=422)["errors"]) == {"stage"}
    assert set(post(sales, f"{path}/lost", {}, status=422)["errors"]) == {"reason"}
    lost = post(sales, f"{path}/lost", {"reason": "price too high"}, status=200)
    assert lost["status"] == "lost" and lost["lost_reason"] == "price too high"
    assert post(sales, f"{path}/won", status=409)["status"] == 409
    assert post(sales, f"{path}/stage", {"stage": "proposal"}, status=409)
    reopened = post(sales, f"{path}/reopen", status=200)
    assert reopened["status"] == "open" and reopened["stage"] == "proposal"
    won = post(sales, f"{path}/won", status=200)
    assert [h["stage"] for h in won["stage_history"]] == ["qualification", "proposal", "lost", "proposal", "won"]
    patched = sales.client.patch(path, json={"amount": "1.5", "currency": "IRR"}, headers=sales.headers())
    assert patched.status_code == 422 and set(patched.get_json()["errors"]) == {"amount"}
    patched = sales.client.patch(path, json={"title": "Servers"}, headers=sales.headers(**{"If-Match": '"2"'}))
    assert patched.status_code == 412
    assert get(sales, f"{path}")["title"] == "Laptops"
    assert get(sales, "/v1/deals/nope", status=404)["status"] == 404
    types = [e.type for e in sales.runtime.store.load(d["id"])]
    assert types == ["DealCreated", "DealStageChanged", "DealLost", "DealReopened", "DealWon"]


def test_board_columns_counts_and_sums(sales: ServiceHarness, people) -> None:
    a, b = people.add(new_id(), first_name="Ali"), people.add(new_id(), first_name="Babak")
    deal(sales, a, amount="100.10")
    second = deal(sales, b, amount="200.20")
    deal(sales, b, amount="5000", currency="IRR")
    post(sales, f"/v1/deals/{second['id']}/stage", {"stage": "proposal"}, status=200)
    sales.project()
    board = get(sales, "/v1/pipelines/default/board")
    columns = {c["stage"]: c for c in board["columns"]}
    assert list(columns) == ["qualification", "needs_analysis", "proposal", "negotiation", "won", "lost"]
    assert columns["qualification"]["count"] == 2
    assert columns["qualification"]["sums"] == [
        {"amount": "5000", "currency": "IRR"},
        {"amount": "100.10", "currency": "USD"},
    ]
    assert columns["proposal"]["sums"] == [{"amount": "200.20", "currency": "USD"}]
    assert columns["proposal"]["deals"][0]["contact"]["first_name"] == "Babak"
    assert get(sales, "/v1/pipelines/nope/board", status=404)
    listed = get(sales, "/v1/deals?stage=qualification&limit=1")
    assert len(listed["items"]) == 1 and listed["next_cursor"]


def test_activities_due_overdue_and_complete(sales: ServiceHarness, people) -> None:
    contact = people.add(new_id(), first_name="Sara")
    d = deal(sales, contact)
    now = utcnow()
    late = post(
        sales,
        "/v1/activities",
        {
            "type": "call",
            "subject": "Follow up",
            "owner": "sara",
            "due_at": rfc3339(now - timedelta(hours=1)),
            "deal_id": d["id"],
        },
    )
    assert late["contact_id"] == contact
    soon = post(
        sales,
        "/v1/activities",
        {"type": "meeting", "subject": "Demo", "owner": "sara", "due_at": rfc3339(now + timedelta(days=2))},
    )
    post(
        sales,
        "/v1/activities",
        {"type": "task", "subject": "Other", "owner": "reza", "due_at": rfc3339(now - timedelta(days=1))},
    )
    bad = sales.client.post(
        "/v1/activities", json={"type": "fax", "due_at": "tomorrow", "deal_id": "nope"}, headers=sales.headers()
    )
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"type", "subject", "due_at"}
    bad = sales.client.post(
        "/v1/activities",
        json={"type": "call", "subject": "s", "due_at": rfc3339(now), "deal_id": "nope"},
        headers=sales.headers(),
    )
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"deal_id"}
    sales.project()
    due = rfc3339(now + timedelta(days=1)).replace("+", "%2B")
    assert [a["id"] for a in get(sales, f"/v1/activities?owner=sara&due_before={due}")["items"]] == [late["id"]]
    assert {a["subject"] for a in get(sales, "/v1/activities?overdue=true")["items"]} == {"Follow up", "Other"}
    done = post(sales, f"/v1/activities/{late['id']}/complete", {"outcome": "agreed"}, status=200)
    assert done["status"] == "completed" and done["outcome"] == "agreed"
    assert post(sales, f"/v1/activities/{late['id']}/complete", status=409)
    assert post(sales, f"/v1/activities/{soon['id']}/complete", status=200)["status"] == "completed"
    sales.project()
    assert {a["subject"] for a in get(sales, "/v1/activities?overdue=true")["items"]} == {"Other"}


def test_quotes_number_price_send_accept_and_win_the_deal(sales: ServiceHarness, people) -> None:
    contact = people.add(new_id(), first_name="مریم", last_name="<b>Karimi</b>", locale="fa-IR")
    d = deal(sales, contact, amount="500.00")
    product = post(
        sales,
        "/v1/products",
        {"sku": "W-1", "name": "Widget", "unit_price": "19.99", "currency": "USD", "tax_rate": "9"},
    )
    body = {
        "deal_id": d["id"],
        "valid_until": (TODAY + timedelta(days=30)).isoformat(),
        "lines": [
            {"product_id": product["id"], "quantity": "3", "discount_percent": "10"},
            {"description": "نصب و راه‌اندازی", "quantity": "1.5", "unit_price": "100"},
        ],
    }
    first = post(sales, "/v1/quotes", body)
    second = post(sales, "/v1/quotes", body)
    year = TODAY.year
    assert first["number"] == f"Q-{year}-000001" and second["number"] == f"Q-{year}-000002"
    assert (first["subtotal"], first["tax"], first["total"]) == ("203.97", "4.86", "208.83")
    assert first["lines"][0]["description"] == "Widget" and first["status"] == "draft"
    before = sales.runtime.store.count()
    bad = sales.client.post(
        "/v1/quotes",
        json={
            "deal_id": d["id"],
            "valid_until": "2000-01-01",
            "lines": [
                {"product_id": "nope", "quantity": "1"},
                {"quantity": "0"},
                {"description": "x", "quantity": "1", "unit_price": "1.001"},
            ],
        },
        headers=sales.headers(),
    )
    assert bad.status_code == 422
    assert set(bad.get_json()["errors"]) == {"lines.1.quantity"}  # schema errors first, every field of them
    bad = sales.client.post(
        "/v1/quotes",
        json={
            "deal_id": d["id"],
            "valid_until": "2000-01-01",
            "lines": [
                {"product_id": "nope", "quantity": "1"},
                {"description": "x", "quantity": "1", "unit_price": "1.001"},
            ],
        },
        headers=sales.headers(),
    )
    assert set(bad.get_json()["errors"]) == {"lines.0.product_id", "lines.1.unit_price", "valid_until"}
    assert sales.runtime.store.count() == before
    path = f"/v1/quotes/{first['id']}"
    assert post(sales, f"{path}/accept", status=409)  # a draft cannot be accepted
    sent = post(sales, f"{path}/send", status=200)
    assert sent["status"] == "sent" and post(sales, f"{path}/send", status=409)
    html = sales.client.get(f"{path}?format=html", headers=sales.headers())
    page = html.get_data(as_text=True)
    assert html.status_code == 200 and html.mimetype == "text/html"
    assert 'dir="rtl"' in page and 'lang="fa-IR"' in page and "پیش‌فاکتور" in page
    assert "&lt;b&gt;Karimi&lt;/b&gt;" in page and "<b>Karimi" not in page  # autoescaped
    assert "نصب و راه‌اندازی" in page and "۲۰۸٫۸۳" in page and 'dir="auto"' in page  # fa digits
    accepted = post(sales, f"{path}/accept", status=200)
    assert accepted["status"] == "accepted" and accepted["deal"]["status"] == "won"
    won = get(sales, f"/v1/deals/{d['id']}")
    assert won["amount"] == "208.83" and won["quote_id"] == first["id"]
    assert post(sales, f"/v1/quotes/{second['id']}/send", status=200)
    assert post(sales, f"/v1/quotes/{second['id']}/reject", {"reason": "no"}, status=200)["status"] == "rejected"
    sales.project()
    assert [q["number"] for q in get(sales, f"/v1/quotes?deal_id={d['id']}")["items"]] == [
        first["number"],
        second["number"],
    ]
    types = {e.type for e in sales.runtime.store.load(first["id"])}
    assert types == {"QuoteDrafted", "QuoteIssued", "QuoteAccepted"}


def test_worker_expires_sent_quotes_past_validity(sales: ServiceHarness, people) -> None:
    contact = people.add(new_id(), first_name="Sara")
    d = deal(sales, contact)
    quote = post(
        sales,
        "/v1/quotes",
        {
            "deal_id": d["id"],
            "valid_until": TODAY.isoformat(),
            "lines": [{"description": "x", "quantity": "1", "unit_price": "1"}],
        },
    )
    post(sales, f"/v1/quotes/{quote['id']}/send", status=200)
    sales.project()
    later = utcnow() + timedelta(days=2)
    book = SalesBook(sales.runtime, clock=lambda: later)
    assert book.expire_quotes() == 1
    assert book.expire_quotes() == 0  # the read model still says sent; the stream says expired already
    assert get(sales, f"/v1/quotes/{quote['id']}")["status"] == "expired"
    assert [e.type for e in sales.runtime.store.load(quote["id"])].count("QuoteExpired") == 1


def test_quote_accepted_while_expiry_runs_stays_accepted(sales: ServiceHarness, people, monkeypatch) -> None:
    contact = people.add(new_id(), first_name="Sara")
    d = deal(sales, contact)
    quotes = [
        post(
            sales,
            "/v1/quotes",
            {
                "deal_id": d["id"],
                "valid_until": TODAY.isoformat(),
                "lines": [{"description": "x", "quantity": "1", "unit_price": "1"}],
            },
        )
        for _ in range(2)
    ]
    for quote in quotes:
        post(sales, f"/v1/quotes/{quote['id']}/send", status=200)
    sales.project()
    later = utcnow() + timedelta(days=2)
    book = SalesBook(sales.runtime, clock=lambda: later)
    load = book.quotes.get_many

    def load_then_the_customer_accepts(ids: list[str]) -> dict:
        loaded = load(ids)  # expiry decided on these; the customer accepts one before its bulk append
        post(sales, f"/v1/quotes/{quotes[0]['id']}/accept", {"mark_deal_won": False}, status=200)
        return loaded

    monkeypatch.setattr(book.quotes, "get_many", load_then_the_customer_accepts)
    assert book.expire_quotes() == 1
    assert get(sales, f"/v1/quotes/{quotes[0]['id']}")["status"] == "accepted"
    assert get(sales, f"/v1/quotes/{quotes[1]['id']}")["status"] == "expired"


def test_customer_value_rfm_tier_and_forecast(sales: ServiceHarness, people, monkeypatch) -> None:
    monkeypatch.setenv("CRM_SALES_REPORTING_CURRENCY", "USD")
    contacts = [
        people.add(new_id(), first_name=f"C{i}", lifecycle_stage="customer" if i % 2 else "lead") for i in range(5)
    ]
    for i, contact in enumerate(contacts):
        for _ in range(i + 1):
            won = deal(sales, contact, amount=f"{(i + 1) * 100}.00")
            post(sales, f"/v1/deals/{won['id']}/won", status=200)
    deal(sales, contacts[0], amount="999.00", expected_close=TODAY.isoformat(), owner="sara")
    deal(sales, contacts[0], amount="7", currency="IRR")
    lost = deal(sales, contacts[1])
    post(sales, f"/v1/deals/{lost['id']}/lost", {"reason": "budget"}, status=200)
    sales.project()
    sales.spec.projections(sales.runtime)[-1].handle([])  # the local contacts projection is wired
    book = SalesBook(sales.runtime)
    for contact in contacts:
        book.local.remember({"id": contact, **people.people[contact]})
    assert reports.recompute_values(book) == 1  # the top customer became strategic
    assert reports.recompute_values(book) == 0  # nothing moved
    book.db["customer_values"].update_one({"_id": contacts[4]}, {"$set": {"tier": "standard"}})
    assert reports.recompute_values(book) == 0  # the view lost it; the customer's stream says strategic already
    top = get(sales, f"/v1/customers/{contacts[4]}/value")
    assert top["tier"] == "strategic" and top["lifetime_value"] == {"amount": "2500.00", "currency": "USD"}
    assert top["rfm"]["frequency"] == 5 and top["rfm"]["monetary"] == 5 and top["won_deals"] == 5
    low = get(sales, f"/v1/customers/{contacts[0]}/value")
    assert low["tier"] == "standard" and low["rfm"]["monetary"] == 1 and low["open_deals"] == 2
    assert low["open_pipeline"] == {"amount": "999.00", "currency": "USD"}
    assert low["predicted_value"] == {"amount": "300.00", "currency": "USD"}  # 100 × 1/yr × 3 yrs
    assert get(sales, "/v1/customers/never-sold/value")["lifetime_value"]["amount"] == "0.00"
    tier_events = [e for e in sales.runtime.store.load(contacts[4])]
    assert [(e.type, e.data["tier"], e.data["previous_tier"]) for e in tier_events] == [
        ("CustomerTierChanged", "strategic", "standard")
    ]
    start, end = TODAY.replace(day=1).isoformat(), (TODAY + timedelta(days=31)).isoformat()
    forecast = get(sales, f"/v1/forecast?from={start}&to={end}")
    assert forecast["weighted"] == [{"amount": "99.90", "currency": "USD"}]  # 999 × 10%
    assert forecast["by_owner"] == [{"owner": "sara", "weighted": [{"amount": "99.90", "currency": "USD"}]}]
    assert forecast["won_deals"] == 15 and forecast["lost_deals"] == 1 and forecast["win_rate"] == 0.9375
    assert forecast["average_sales_cycle_days"] is not None
    stages = {s["lifecycle_stage"]: s["won_deals"] for s in forecast["sales_by_lifecycle_stage"]}
    assert stages == {"customer": 6, "lead": 9}
    bad = sales.client.get("/v1/forecast?from=2026-02-01&to=2026-01-01", headers=sales.headers())
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"to"}
    bad = sales.client.get("/v1/forecast?from=someday&x=1", headers=sales.headers())
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"from", "to", "x"}


def test_auth_roles_and_idempotency(sales: ServiceHarness, people) -> None:
    contact = people.add(new_id(), first_name="Sara")
    body = {"title": "x", "contact_id": contact, "currency": "USD"}
    assert sales.client.post("/v1/deals", json=body).status_code == 401
    assert sales.client.post("/v1/deals", json=body, headers=sales.headers("sales:read")).status_code == 403
    assert sales.client.get("/v1/deals", headers=sales.headers("contacts:write")).status_code == 403
    headers = sales.headers("sales:write", **{"Idempotency-Key": "k1"})
    first = sales.client.post("/v1/deals", json=body, headers=headers)
    again = sales.client.post("/v1/deals", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json()["id"] == first.get_json()["id"]
    assert (
        sales.client.post("/v1/deals", data="{", content_type="application/json", headers=sales.headers()).status_code
        == 400
    )
    doc = sales.client.get("/openapi.json").get_json()
    assert "/v1/pipelines/{pipeline_id}/board" in json.dumps(doc)


def test_a_merge_moves_records_the_read_models_have_not_folded_yet(sales: ServiceHarness, people) -> None:
    duplicate, survivor, other = people.add(new_id()), people.add(new_id()), people.add(new_id())
    headers = sales.headers()
    fresh = sales.client.post(
        "/v1/deals",
        headers=headers,
        json={"title": "Fresh", "contact_id": duplicate, "amount": "10", "currency": "USD"},
    ).get_json()
    moved_away = sales.client.post(
        "/v1/deals",
        headers=headers,
        json={"title": "Moved", "contact_id": duplicate, "amount": "10", "currency": "USD"},
    ).get_json()
    book = SalesBook(sales.runtime)
    book.deals.change(moved_away["id"], lambda deal: deal.change_contact(other, "contact_merged"), Metadata())
    # no read model has folded any of this (nothing projected): only the event store knows
    book.contact_merged(duplicate, survivor)
    assert book.deals.get(fresh["id"]).contact_id == survivor
    assert book.deals.get(moved_away["id"]).contact_id == other  # no longer the duplicate's: left alone
