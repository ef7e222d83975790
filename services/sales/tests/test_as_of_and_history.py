"""`?as_of=` and `/history` on every sales record (issue 16): deals, quotes, activities, products, pipelines.

Each record is read as it was at a moment (folded from its events up to then), and its
history lists every change with who made it, when, and each field's before and after.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from crmkit.events import parse_time, rfc3339, utcnow
from crmkit.testing import ServiceHarness

FUTURE = (utcnow() + timedelta(days=30)).date().isoformat()


def after(moment: str) -> datetime:
    """`moment`, once the clock has passed it (times have millisecond precision)."""
    when = parse_time(moment)
    while utcnow() <= when:
        time.sleep(0.001)
    return when


def as_of(sales: ServiceHarness, path: str, moment: datetime | str, status: int = 200) -> Any:
    value = rfc3339(moment) if isinstance(moment, datetime) else moment
    return sales.call("GET", path, status=status, as_of=value)


def test_a_deal_as_it_was_and_its_history_of_stages_and_amounts(sales: ServiceHarness, people: Any) -> None:
    contact = people.add("c-asof-1", first_name="Ana")
    deal = sales.call(
        "POST",
        "/v1/deals",
        {"title": "Laptops", "contact_id": contact, "amount": "1000.00", "currency": "USD"},
        status=201,
    )
    created = after(deal["created_at"])
    sales.call("PATCH", f"/v1/deals/{deal['id']}", {"amount": "1500.00", "owner": "sam"})
    moved = sales.call("POST", f"/v1/deals/{deal['id']}/stage", {"stage": "proposal"})
    after(moved["updated_at"])
    sales.call("POST", f"/v1/deals/{deal['id']}/won")

    then = as_of(sales, f"/v1/deals/{deal['id']}", created)
    assert (then["version"], then["amount"], then["owner"], then["stage"], then["status"]) == (
        1,
        "1000.00",
        None,
        "qualification",
        "open",
    )
    assert [h["stage"] for h in then["stage_history"]] == ["qualification"]
    assert then["stage_history"][0]["left_at"] is None and then["stage_history"][0]["seconds_in_stage"] == 0
    assert then["contact"]["id"] == contact
    before_won = as_of(sales, f"/v1/deals/{deal['id']}", parse_time(moved["updated_at"]))
    assert (before_won["version"], before_won["stage"], before_won["amount"]) == (3, "proposal", "1500.00")
    now = sales.call("GET", f"/v1/deals/{deal['id']}")
    assert (now["version"], now["status"]) == (4, "won")

    history = sales.call("GET", f"/v1/deals/{deal['id']}/history")
    assert [e["type"] for e in history["items"]] == ["DealCreated", "DealUpdated", "DealStageChanged", "DealWon"]
    assert history["items"][1]["changes"]["amount"] == {"before": "1000.00", "after": "1500.00"}
    assert history["items"][1]["changes"]["owner"] == {"before": None, "after": "sam"}
    assert history["items"][2]["changes"]["stage"] == {"before": "qualification", "after": "proposal"}
    assert history["items"][3]["changes"]["status"] == {"before": "open", "after": "won"}
    assert {e["actor"] for e in history["items"]} == {"user:tester"}
    assert all(e["event_id"] and e["time"] and e["correlation_id"] is not None for e in history["items"])
    assert history["next_cursor"] is None


def test_a_history_is_paged_by_version(sales: ServiceHarness) -> None:
    product = sales.call(
        "POST",
        "/v1/products",
        {"sku": "PAGE-1", "name": "Widget", "unit_price": "10.00", "currency": "USD"},
        status=201,
    )
    for price in ("11.00", "12.00", "13.00", "14.00"):
        sales.call("PATCH", f"/v1/products/{product['id']}", {"unit_price": price})
    url = f"/v1/products/{product['id']}/history"
    first = sales.call("GET", url, limit=2)
    second = sales.call("GET", url, limit=2, cursor=first["next_cursor"])
    last = sales.call("GET", url, limit=2, cursor=second["next_cursor"])
    assert [[e["version"] for e in page["items"]] for page in (first, second, last)] == [[1, 2], [3, 4], [5]]
    assert first["next_cursor"] == "2" and last["next_cursor"] is None
    assert second["items"][1]["changes"] == {"unit_price": {"before": "12.00", "after": "13.00"}}
    assert first["items"][0]["changes"]["sku"] == {"before": None, "after": "PAGE-1"}
    bad = sales.client.get(url, query_string={"cursor": "not-a-version"}, headers=sales.headers())
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"cursor"}


def test_a_product_as_it_was(sales: ServiceHarness) -> None:
    product = sales.call(
        "POST",
        "/v1/products",
        {"sku": "ASOF-1", "name": "Widget", "unit_price": "10.00", "currency": "USD"},
        status=201,
    )
    created = after(product["created_at"])
    sales.call("PATCH", f"/v1/products/{product['id']}", {"unit_price": "12.50", "active": False})
    response = sales.client.get(
        f"/v1/products/{product['id']}", query_string={"as_of": rfc3339(created)}, headers=sales.headers("sales:read")
    )
    assert response.status_code == 200 and response.headers["ETag"] == '"1"'
    assert (response.get_json()["unit_price"], response.get_json()["active"]) == ("10.00", True)
    assert sales.call("GET", f"/v1/products/{product['id']}")["unit_price"] == "12.50"


def test_an_activity_and_a_quote_as_they_were_and_their_histories(sales: ServiceHarness, people: Any) -> None:
    contact = people.add("c-asof-2", first_name="Bo")
    deal = sales.call(
        "POST",
        "/v1/deals",
        {"title": "Desks", "contact_id": contact, "amount": "300.00", "currency": "USD"},
        status=201,
    )
    activity = sales.call(
        "POST",
        "/v1/activities",
        {"type": "call", "subject": "Call Bo", "deal_id": deal["id"], "due_at": "2099-01-01T10:00:00Z"},
        status=201,
    )
    scheduled = after(activity["created_at"])
    sales.call("POST", f"/v1/activities/{activity['id']}/complete", {"outcome": "Interested"})
    was = as_of(sales, f"/v1/activities/{activity['id']}", scheduled)
    assert (was["status"], was["outcome"], was["version"]) == ("open", None, 1)
    changes = sales.call("GET", f"/v1/activities/{activity['id']}/history")["items"][1]["changes"]
    assert changes["status"] == {"before": "open", "after": "completed"}
    assert changes["outcome"] == {"before": None, "after": "Interested"}

    quote = sales.call(
        "POST",
        "/v1/quotes",
        {
            "deal_id": deal["id"],
            "valid_until": FUTURE,
            "lines": [{"description": "Desk", "quantity": "2", "unit_price": "150.00"}],
        },
        status=201,
    )
    drafted = after(quote["created_at"])
    sales.call("POST", f"/v1/quotes/{quote['id']}/send")
    assert as_of(sales, f"/v1/quotes/{quote['id']}", drafted)["status"] == "draft"
    html = sales.client.get(
        f"/v1/quotes/{quote['id']}", query_string={"as_of": rfc3339(drafted), "format": "html"}, headers=sales.headers()
    )
    assert html.status_code == 200 and html.headers["ETag"] == '"1"'
    history = sales.call("GET", f"/v1/quotes/{quote['id']}/history")["items"]
    assert [e["type"] for e in history] == ["QuoteDrafted", "QuoteIssued"]
    assert history[0]["changes"]["total"] == {"before": None, "after": "300.00"}
    assert history[1]["changes"]["status"] == {"before": "draft", "after": "sent"}


def test_a_pipeline_as_it_was_and_its_history(sales: ServiceHarness) -> None:
    pipeline = sales.call(
        "POST",
        "/v1/pipelines",
        {"name": "Renewals", "stages": [{"name": "Contacted", "probability": "20"}]},
        status=201,
    )
    created = after(pipeline["created_at"])
    assert as_of(sales, f"/v1/pipelines/{pipeline['id']}", created)["name"] == "Renewals"
    as_of(sales, f"/v1/pipelines/{pipeline['id']}", created - timedelta(seconds=5), status=404)
    (entry,) = sales.call("GET", f"/v1/pipelines/{pipeline['id']}/history")["items"]
    assert entry["type"] == "PipelineCreated" and entry["changes"]["name"] == {"before": None, "after": "Renewals"}
    assert [s["key"] for s in entry["changes"]["stages"]["after"]] == ["contacted", "won", "lost"]


@pytest.mark.parametrize("kind", ["deals", "quotes", "activities", "products", "pipelines"])
def test_unknown_records_are_404_and_a_bad_as_of_is_422(sales: ServiceHarness, kind: str) -> None:
    for path in (f"/v1/{kind}/nope", f"/v1/{kind}/nope/history"):
        assert sales.client.get(path, headers=sales.headers()).status_code == 404, path
    for bad in ("yesterday", "2026-13-01T00:00:00Z", "2026-01-01T00:00:00"):  # the last has no zone
        response = sales.client.get(f"/v1/{kind}/nope", query_string={"as_of": bad}, headers=sales.headers())
        assert response.status_code == 422 and set(response.get_json()["errors"]) == {"as_of"}, (kind, bad)


def test_a_deal_before_it_existed_is_404_and_records_of_another_kind_are_not_found(
    sales: ServiceHarness, people: Any
) -> None:
    contact = people.add("c-asof-3", first_name="Cy")
    deal = sales.call("POST", "/v1/deals", {"title": "Chairs", "contact_id": contact, "currency": "EUR"}, status=201)
    as_of(sales, f"/v1/deals/{deal['id']}", parse_time(deal["created_at"]) - timedelta(seconds=1), status=404)
    sales.call("GET", f"/v1/quotes/{deal['id']}/history", status=404)  # a deal's id is no quote's
    sales.call("GET", f"/v1/products/{deal['id']}", status=404, as_of=rfc3339(utcnow()))
