"""`?as_of=` and `/history` on the service desk's records (issue 16): tickets and SLA policies.

A record is read as it was at a moment (folded from its events up to then; a ticket's SLA
clocks counted up to that moment), and its history lists every change with who made it,
when, and each field's before and after, paged by version. A policy's calendar is part of
the policy, so its history shows calendar revisions too.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from crmkit.events import parse_time, rfc3339, utcnow
from crmkit.testing import ServiceHarness

POLICY = {"name": "Standard", "targets": {"normal": {"first_response": 60, "resolution": 480}}}
HOURS = {
    "time_zone": "Asia/Tehran",
    "working_days": ["saturday", "sunday", "monday", "tuesday", "wednesday"],
    "start": "08:00",
    "end": "16:00",
}


def call(desk: ServiceHarness, method: str, path: str, body: Any = None, status: int = 200, **query: Any) -> Any:
    response = desk.client.open(
        path,
        method=method,
        json=body,
        query_string=query,
        headers=desk.headers("servicedesk:read", "servicedesk:write"),
    )
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def after(moment: str) -> datetime:
    """`moment`, once the clock has passed it (times have millisecond precision)."""
    when = parse_time(moment)
    while utcnow() <= when:
        time.sleep(0.001)
    return when


def as_of(desk: ServiceHarness, path: str, moment: datetime | str, status: int = 200) -> Any:
    return call(desk, "GET", path, status=status, as_of=rfc3339(moment) if isinstance(moment, datetime) else moment)


def worked_ticket(desk: ServiceHarness, contact_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A ticket opened, assigned, answered and solved; its view after each step."""
    call(desk, "POST", "/v1/sla-policies", POLICY, status=201)
    opened = call(
        desk,
        "POST",
        "/v1/tickets",
        {"subject": "No invoice", "contact_id": contact_id, "channel": "email", "type": "question"},
        status=201,
    )
    path = f"/v1/tickets/{opened['id']}"
    after(opened["updated_at"])
    steps = [call(desk, "POST", f"{path}/assign", {"assignee": "sam"})]
    after(steps[-1]["updated_at"])
    steps.append(call(desk, "POST", f"{path}/comments", {"body": "Here it is"}, status=201))
    after(steps[-1]["updated_at"])
    steps.append(call(desk, "POST", f"{path}/status", {"status": "solved"}))
    return opened, steps


def test_a_ticket_as_it_was_with_its_sla_clocks_counted_then(desk: ServiceHarness, directory) -> None:
    opened, (assigned, answered, solved) = worked_ticket(desk, directory.add("c-1"))
    path = f"/v1/tickets/{opened['id']}"

    created = parse_time(opened["created_at"])  # the event's time, a moment after opened_at
    then = as_of(desk, path, created)
    assert (then["version"], then["status"], then["assignee"], then["comments"]) == (1, "new", None, [])
    clocks = {t["target"]: t for t in then["sla"]}
    waited = (created - parse_time(opened["opened_at"])).total_seconds() / 60
    assert abs(clocks["first_response"]["remaining_minutes"] - (60 - waited)) < 0.01  # counted then, not now
    assert clocks["first_response"]["status"] == "active" and then["contact"]["name"] == "Sara Ahmadi"

    before_reply = as_of(desk, path, parse_time(assigned["updated_at"]))
    assert (before_reply["version"], before_reply["assignee"], before_reply["first_response_at"]) == (2, "sam", None)
    replied = as_of(desk, path, parse_time(answered["updated_at"]))
    assert replied["version"] == answered["version"] and [c["body"] for c in replied["comments"]] == ["Here it is"]
    assert {t["target"]: t for t in replied["sla"]}["first_response"]["status"] == "met"
    assert as_of(desk, path, parse_time(solved["updated_at"]))["status"] == "solved"
    assert call(desk, "GET", path)["status"] == "solved"


def test_a_ticket_before_it_existed_is_404_and_a_bad_time_is_422(desk: ServiceHarness, directory) -> None:
    opened, _ = worked_ticket(desk, directory.add("c-1"))
    path = f"/v1/tickets/{opened['id']}"
    as_of(desk, path, parse_time(opened["created_at"]) - timedelta(milliseconds=1), status=404)
    as_of(desk, "/v1/tickets/no-such-ticket", utcnow(), status=404)
    for bad in ("yesterday", "2026-01-01T10:00:00", "2026-13-01T00:00:00Z"):
        assert set(as_of(desk, path, bad, status=422)["errors"]) == {"as_of"}


def test_a_ticket_s_history_names_who_changed_what_paged_by_version(desk: ServiceHarness, directory) -> None:
    opened, _ = worked_ticket(desk, directory.add("c-1"))
    path = f"/v1/tickets/{opened['id']}/history"
    whole = call(desk, "GET", path)["items"]
    assert [e["type"] for e in whole] == [
        "TicketOpened",
        "TicketAssigned",
        "TicketCommented",
        "TicketStatusChanged",
        "TicketStatusChanged",
        "TicketSolved",
    ]
    assert whole[1]["changes"]["assignee"] == {"before": None, "after": "sam"}
    assert whole[3]["changes"]["status"] == {"before": "new", "after": "open"}  # the first agent reply opens it
    assert whole[4]["changes"]["status"] == {"before": "open", "after": "solved"}
    assert {e["actor"] for e in whole} == {"user:tester"} and all(e["event_id"] and e["time"] for e in whole)
    pages, cursor = [], None
    while True:
        page = call(desk, "GET", path, limit=2, **({"cursor": cursor} if cursor else {}))
        pages.append([e["version"] for e in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [[1, 2], [3, 4], [5, 6]]
    call(desk, "GET", path, status=422, cursor="not a version")
    call(desk, "GET", "/v1/tickets/no-such-ticket/history", status=404)


def test_a_policy_as_it_was_before_a_revision_of_its_calendar(desk: ServiceHarness) -> None:
    policy = call(desk, "POST", "/v1/sla-policies", POLICY, status=201)
    path = f"/v1/sla-policies/{policy['id']}"
    defined_at = after(policy["updated_at"])
    effective = rfc3339(utcnow() + timedelta(days=1))
    revised = call(
        desk,
        "PATCH",
        path,
        {"effective_at": effective, "business_hours": HOURS, "targets": {"normal": {"first_response": 30}}},
    )
    assert revised["version"] == 2

    then = as_of(desk, path, defined_at)
    assert (then["version"], then["business_hours"], len(then["versions"])) == (1, None, 1)
    assert then["targets"]["normal"]["first_response"] == 60
    now = as_of(desk, path, parse_time(revised["updated_at"]))
    assert now == call(desk, "GET", path) and now["business_hours"] == HOURS
    assert [(v["version"], v["effective_at"]) for v in now["versions"]] == [(1, None), (2, effective)]
    as_of(desk, path, defined_at - timedelta(seconds=1), status=404)
    assert set(as_of(desk, path, "not a time", status=422)["errors"]) == {"as_of"}


def test_a_policy_s_history_lists_its_revisions_with_before_and_after(desk: ServiceHarness) -> None:
    policy = call(desk, "POST", "/v1/sla-policies", POLICY, status=201)
    path = f"/v1/sla-policies/{policy['id']}"
    effective = rfc3339(utcnow() + timedelta(days=1))
    call(desk, "PATCH", path, {"effective_at": effective, "business_hours": HOURS})
    call(desk, "PATCH", path, {"effective_at": effective, "name": "Office hours"})

    first = call(desk, "GET", f"{path}/history", limit=2)
    assert [e["type"] for e in first["items"]] == ["SlaPolicyDefined", "SlaPolicyRevised"]
    assert first["items"][0]["changes"]["name"] == {"before": None, "after": "Standard"}
    assert first["items"][1]["changes"]["business_hours"] == {"before": None, "after": HOURS}
    assert first["next_cursor"] == "2" and first["items"][1]["actor"] == "user:tester"
    rest = call(desk, "GET", f"{path}/history", limit=2, cursor="2")
    assert [e["version"] for e in rest["items"]] == [3] and rest["next_cursor"] is None
    assert rest["items"][0]["changes"]["name"] == {"before": "Standard", "after": "Office hours"}
    call(desk, "GET", "/v1/sla-policies/no-such-policy/history", status=404)
