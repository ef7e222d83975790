"""Issue 17: won and lost reasons on `crm up`, through public APIs only.

A pipeline of its own names its reasons (list only); deals on it are won and lost with a
reason and a note, a reason it does not list is refused, and the performance report
(`GET /v1/forecast`) counts and sums them by reason and owner once the read model has them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crmkit.events import new_id
from crmkit.testing import wait_until

from .conftest import LocalStack

pytestmark = pytest.mark.e2e
SLOW = 60  # seconds: the deals read model is folded from the topic


def _rows(crm: LocalStack, kind: str, pipeline_id: str) -> list[dict[str, Any]]:
    today = datetime.now(UTC).date()
    report = crm.ok("sales", "GET", f"/v1/forecast?from={today.replace(day=1)}&to={today + timedelta(days=1)}")
    return [row for row in report[kind] if row["pipeline_id"] == pipeline_id]


def test_deals_are_won_and_lost_for_their_pipelines_reasons_and_reported_by_them(crm: LocalStack) -> None:
    owner = f"owner-{new_id()[-8:]}"
    contact = crm.ok("contacts", "POST", "/v1/contacts", {"first_name": "Nima", "email": f"{owner}@example.com"}, 201)
    pipeline = crm.ok(
        "sales",
        "POST",
        "/v1/pipelines",
        {
            "name": "Enterprise",
            "stages": [{"name": "Pitch", "probability": "30"}],
            "win_reasons": [{"code": "roi", "label": "Clear ROI"}],
            "loss_reasons": [{"code": "security", "label": "Security review"}, {"code": "price", "label": "Price"}],
            "free_text_reasons": False,
        },
        201,
    )
    assert [r["code"] for r in pipeline["loss_reasons"]] == ["security", "price"]

    def deal(amount: str) -> str:
        return crm.ok(
            "sales",
            "POST",
            "/v1/deals",
            {
                "title": "Platform",
                "contact_id": contact["id"],
                "pipeline_id": pipeline["id"],
                "owner": owner,
                "amount": amount,
                "currency": "EUR",
            },
            201,
        )["id"]

    won, lost, also_lost = deal("900.00"), deal("300.00"), deal("200.00")
    shown = crm.ok("sales", "POST", f"/v1/deals/{won}/won", {"reason": "roi", "reason_note": "payback in 6 months"})
    assert (shown["won_reason_code"], shown["won_reason"], shown["won_reason_note"]) == (
        "roi",
        "Clear ROI",
        "payback in 6 months",
    )
    code, refused = crm.call("sales", "POST", f"/v1/deals/{lost}/lost", {"reason": "they went quiet"})
    assert code == 422 and set(refused["errors"]) == {"reason"}
    assert crm.ok("sales", "GET", f"/v1/deals/{lost}")["status"] == "open"
    crm.ok("sales", "POST", f"/v1/deals/{lost}/lost", {"reason": "security"})
    crm.ok("sales", "POST", f"/v1/deals/{also_lost}/lost", {"reason": "security", "reason_note": "no SSO"})

    def reported() -> bool:
        return (
            bool(_rows(crm, "loss_reasons", pipeline["id"]))
            and sum(row["deals"] for row in _rows(crm, "loss_reasons", pipeline["id"])) == 2
        )

    wait_until(reported, timeout=SLOW, what="the performance report to count the lost deals")
    (lost_row,) = _rows(crm, "loss_reasons", pipeline["id"])
    assert (lost_row["reason"], lost_row["label"], lost_row["deals"]) == ("security", "Security review", 2)
    assert lost_row["amounts"] == [{"amount": "500.00", "currency": "EUR"}]
    assert lost_row["by_owner"] == [{"owner": owner, "deals": 2, "amounts": [{"amount": "500.00", "currency": "EUR"}]}]
    (won_row,) = _rows(crm, "win_reasons", pipeline["id"])
    assert (won_row["reason"], won_row["deals"], won_row["amounts"]) == (
        "roi",
        1,
        [{"amount": "900.00", "currency": "EUR"}],
    )
