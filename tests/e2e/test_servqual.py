"""Issue 17, SERVQUAL end to end on the shared `crm up`, through public APIs only.

An admin sets a shorter instrument and a policy (every 2nd solved ticket of a contact);
a Persian-speaking customer's second solved ticket makes the service desk's worker send
a survey (`ServqualSurveySent`), which messaging's default trigger emails with a signed
link; the customer answers on the public page (Persian, right to left): an incomplete
form is refused and stores nothing, the complete one is recorded once; the report gives
the gaps for the customer's agent group. The instrument and policy are put back as they
were at the end, so the tests after this one on the shared stack send no surveys.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from crmkit.testing import wait_until

from .conftest import LocalStack

pytestmark = pytest.mark.e2e

SLOW = 120  # seconds: the worker's pass (15 s), projections, messaging's trigger and dispatch, on a busy machine
ITEMS = {
    "tangibles": ["q1"],
    "reliability": ["q5", "q7"],
    "responsiveness": ["q11"],
    "assurance": ["q14"],
    "empathy": ["q18"],
}
WEIGHTS = {"tangibles": 10, "reliability": 30, "responsiveness": 25, "assurance": 20, "empathy": 15}
EXPECTED = {"q1": 6, "q5": 7, "q7": 7, "q11": 6, "q14": 5, "q18": 5}
PERCEIVED = {"q1": 6, "q5": 4, "q7": 6, "q11": 3, "q14": 5, "q18": 7}


def _form(expectations: dict[str, int], perceptions: dict[str, int]) -> dict[str, str]:
    return {
        **{f"expectations.{k}": str(v) for k, v in expectations.items()},
        **{f"perceptions.{k}": str(v) for k, v in perceptions.items()},
    }


def test_a_servqual_survey_from_the_policy_to_the_report(crm: LocalStack) -> None:
    before = {
        "instrument": crm.ok("service-desk", "GET", "/v1/servqual/instrument"),
        "policy": crm.ok("service-desk", "GET", "/v1/servqual/policy"),
    }
    try:
        _journey(crm)
    finally:  # the shared stack goes back to what it was
        crm.ok(
            "service-desk",
            "PUT",
            "/v1/servqual/policy",
            {
                name: before["policy"][name]
                for name in ("enabled", "every_nth_solved_per_contact", "every_nth_solved_overall", "quarterly_tiers")
            },
        )
        crm.ok(
            "service-desk",
            "PUT",
            "/v1/servqual/instrument",
            {"items": before["instrument"]["items"], "weights": before["instrument"]["weights"]},
        )


def _journey(crm: LocalStack) -> None:
    unique = uuid.uuid4().hex[:8]
    address, group = f"servqual-{unique}@example.com", f"servqual-{unique}"

    # --- the admin: a bad instrument is refused whole; then a shorter one and the policy
    code, problem = crm.call(
        "service-desk", "PUT", "/v1/servqual/instrument", {"items": {"empathy": ["q1"]}, "weights": {"tangibles": 50}}
    )
    assert code == 422 and set(problem["errors"]) == {"items.empathy.0", "weights"}, problem
    instrument = crm.ok("service-desk", "PUT", "/v1/servqual/instrument", {"items": ITEMS, "weights": WEIGHTS})
    assert instrument["item_count"] == 6 and instrument["weights"]["reliability"] == 0.3
    policy = crm.ok("service-desk", "PUT", "/v1/servqual/policy", {"enabled": True, "every_nth_solved_per_contact": 2})
    assert policy["enabled"] and policy["counting_since"]

    # --- a customer who reads Persian, with email consent, has two tickets solved
    contact = crm.ok(
        "contacts",
        "POST",
        "/v1/contacts",
        {"first_name": "نسرین", "last_name": "Karimi", "email": address, "locale": "fa-IR"},
        201,
    )
    crm.ok("contacts", "PUT", f"/v1/contacts/{contact['id']}/consents/email", {"status": "granted"})
    tickets = [
        crm.ok(
            "service-desk",
            "POST",
            "/v1/tickets",
            {
                "subject": f"درخواست {n}",
                "contact_id": contact["id"],
                "channel": "email",
                "type": "request",
                "group": group,
            },
            201,
        )
        for n in (1, 2)
    ]
    for ticket in tickets:
        crm.ok("service-desk", "POST", f"/v1/tickets/{ticket['id']}/status", {"status": "solved"})

    # --- the worker's pass sends one survey, about the second ticket; messaging emails its link
    def surveys() -> list[dict[str, Any]]:
        return crm.ok("service-desk", "GET", f"/v1/servqual/surveys?contact_id={contact['id']}")["items"]

    [survey] = wait_until(surveys, SLOW, "the policy's survey")
    assert survey["ticket_id"] == tickets[1]["id"] and survey["group"] == group
    assert survey["trigger"] == {"rule": "every_nth_solved", "scope": "contact", "n": 2}

    def links() -> list[str]:
        bodies = [m.get_body().get_content() for m in crm.mails() if address in str(m["To"])]
        return [
            path
            for body in bodies
            for path in re.findall(r"http://127\.0\.0\.1:\d+(/v1/surveys/servqual/[A-Za-z0-9_.-]+)", body)
        ]

    [link] = wait_until(links, SLOW, "the SERVQUAL email")

    # --- the customer's page: Persian, right to left; incomplete is refused, complete recorded once
    code, page = crm.call("service-desk", "GET", link, auth=False)
    assert code == 200 and 'lang="fa" dir="rtl"' in page and "این شرکت قابل اتکا است." in page
    assert len(re.findall(r'name="perceptions\.q\d+" value="7"', page)) == 6
    code, page = crm.call("service-desk", "POST", link, auth=False, form=_form(EXPECTED, {"q1": 6}))
    assert code == 422 and "لطفاً به این جمله پاسخ دهید." in page
    assert crm.ok("service-desk", "GET", f"/v1/servqual/surveys/{survey['id']}")["status"] == "sent"
    code, page = crm.call("service-desk", "POST", link, auth=False, form=_form(EXPECTED, PERCEIVED))
    assert code == 201 and "سپاسگزاریم" in page
    assert crm.call("service-desk", "POST", link, auth=False, form=_form(EXPECTED, PERCEIVED))[0] == 409

    # --- the report for the customer's agent group: gap = perception − expectation, weighted overall
    def report() -> dict[str, Any]:
        found = crm.ok("service-desk", "GET", f"/v1/reports/servqual?team={group}&period=day")
        return found if found["responses"] == 1 else {}

    found = wait_until(report, SLOW, "the answer in the report")
    gaps = {"tangibles": 0.0, "reliability": -2.0, "responsiveness": -3.0, "assurance": 0.0, "empathy": 2.0}
    assert {d: found["dimensions"][d]["gap"] for d in gaps} == gaps
    assert found["overall"]["weighted_gap"] == pytest.approx(-0.6 - 0.75 + 0.3)  # 0.3×−2 + 0.25×−3 + 0.15×2
    assert found["by_agent_group"] == [
        {"group": group, "responses": 1, "weighted_gap": found["overall"]["weighted_gap"], "dimensions": gaps}
    ]
    assert [b["responses"] for b in found["over_time"]] == [1]
    assert found["surveys_sent"] == 1 and found["response_rate_percent"] == 100.0
