"""End to end through the REST API: a policy (and its calendar) revised effective in the past, the
worker's recompute job and `crm sla recompute` move an open ticket's due time and breach, and the SLA
report shows the breach at its due time, not when it was found."""

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

from crm_servicedesk.app import sla_recomputer
from crm_servicedesk.commands import TicketDesk
from crm_servicedesk.recompute import Recompute
from crmkit import clock
from crmkit.events import parse_time, rfc3339
from crmkit.testing import ServiceHarness, wait_until

POLICY = {"name": "Around the clock", "targets": {"normal": {"first_response": 600}}}


def call(desk: ServiceHarness, method: str, path: str, body: object = None, **headers: str):
    return desk.client.open(path, method=method, json=body, headers=desk.headers("servicedesk:write", **headers))


def ticket(desk: ServiceHarness, tid: str) -> dict:
    return desk.client.get(f"/v1/tickets/{tid}", headers=desk.headers("servicedesk:read")).get_json()


def first_response(view: dict) -> dict:
    return {t["target"]: t for t in view["sla"]}["first_response"]


def sla_report(desk: ServiceHarness, start: datetime, end: datetime) -> dict:
    query = f"from={rfc3339(start)}&to={rfc3339(end)}"
    response = desk.client.get(f"/v1/reports/sla?{query}", headers=desk.headers("servicedesk:read"))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def run_job_once(desk: ServiceHarness) -> None:
    """The worker's recompute job, in a thread, until its run for the current policy versions is done."""
    recompute = Recompute(TicketDesk(desk.runtime))
    stop = threading.Event()
    job = threading.Thread(target=sla_recomputer(desk.runtime), args=(stop,))
    job.start()
    try:
        wait_until(
            lambda: recompute.up_to_date("worker", recompute.policy_marks()), timeout=60, what="the recompute job's run"
        )
    finally:
        stop.set()
        job.join(timeout=30)


def test_a_revision_effective_in_the_past_moves_due_times_and_breaches_and_the_report_follows(
    desk: ServiceHarness, directory, monkeypatch
) -> None:
    cid = directory.add("c-1")
    policy = call(desk, "POST", "/v1/sla-policies", POLICY).get_json()
    opened = call(
        desk,
        "POST",
        "/v1/tickets",
        {"subject": "No invoice", "contact_id": cid, "channel": "email", "type": "question"},
    ).get_json()
    t0 = parse_time(opened["opened_at"])
    assert parse_time(first_response(opened)["due_at"]) == t0 + timedelta(hours=10)
    monkeypatch.setenv(clock.OFFSET_VARIABLE, str(timedelta(hours=3).total_seconds()))  # three hours later

    # the first response target was 60 minutes all along: a revision from before the ticket opened
    effective = rfc3339(t0 - timedelta(hours=1))
    revised = call(
        desk,
        "PATCH",
        f"/v1/sla-policies/{policy['id']}",
        {"effective_at": effective, "targets": {"normal": {"first_response": 60}}},
        **{"If-Match": '"1"'},
    )
    assert revised.status_code == 200, revised.get_json()
    assert revised.headers["ETag"] == '"2"'
    body = revised.get_json()
    assert [(v["version"], v["effective_at"]) for v in body["versions"]] == [(1, None), (2, effective)]
    assert body["versions"][1]["changed"] == ["targets"]
    stale = call(
        desk,
        "PATCH",
        f"/v1/sla-policies/{policy['id']}",
        {"effective_at": effective, "enabled": False},
        **{"If-Match": '"1"'},
    )
    assert stale.status_code == 412
    desk.project()
    run_job_once(desk)
    desk.project()

    view = ticket(desk, opened["id"])
    due = t0 + timedelta(hours=1)
    assert view["sla_policy"]["versions"] == [2] and view["sla_policy"]["version"] == 2
    assert parse_time(first_response(view)["due_at"]) == due and first_response(view)["status"] == "breached"
    [breach] = view["breaches"]
    assert parse_time(breach["breached_at"]) == due  # not when the job found it, three hours on
    assert parse_time(breach["detected_at"]) >= t0 + timedelta(hours=3)
    types = [e.type for e in desk.runtime.store.load(opened["id"])]
    assert types == ["TicketOpened", "SlaRecomputed", "SlaBreached"]

    at_due = sla_report(desk, t0 - timedelta(minutes=1), t0 + timedelta(hours=2))["breaches"]
    assert at_due["count"] == 1 and at_due["by_target"]["first_response"] == 1
    assert at_due["items"][0]["ticket_id"] == opened["id"] and parse_time(at_due["items"][0]["breached_at"]) == due
    assert at_due["by_day"] == {due.astimezone(UTC).date().isoformat(): 1}
    when_found = sla_report(desk, t0 + timedelta(hours=2), t0 + timedelta(hours=4))["breaches"]
    assert when_found["count"] == 0

    run_job_once(desk)  # again, nothing has changed: nothing is recorded
    assert [e.type for e in desk.runtime.store.load(opened["id"])] == types

    # the calendar: the ticket's opening day and the next are holidays, effective since before it opened
    days = [(t0 + timedelta(days=n)).date().isoformat() for n in (0, 1)]
    holidays = call(desk, "PATCH", f"/v1/sla-policies/{policy['id']}", {"effective_at": effective, "holidays": days})
    assert holidays.status_code == 200 and holidays.get_json()["version"] == 3
    desk.project()
    env = {**os.environ, clock.OFFSET_VARIABLE: str(timedelta(hours=3).total_seconds())}
    cli = subprocess.run(
        [sys.executable, "-m", "crmkit.cli", "sla", "recompute", "--from", days[0]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert "recomputed 1 tickets' SLA clocks; 1 changed" in cli.stderr
    desk.project()
    view = ticket(desk, opened["id"])
    moved = datetime.fromisoformat(days[1]).replace(tzinfo=UTC) + timedelta(days=1, hours=1)
    assert view["sla_policy"]["versions"] == [3]
    assert parse_time(first_response(view)["due_at"]) == moved  # first working hour after the holidays
    assert view["breaches"] == [] and first_response(view)["status"] == "active"  # the breach is withdrawn
    assert sla_report(desk, t0 - timedelta(minutes=1), t0 + timedelta(hours=2))["breaches"]["count"] == 0
    [recomputed] = [e for e in desk.runtime.store.load(opened["id"]) if e.type == "SlaRecomputed"][1:]
    assert recomputed.data["withdrawn"] == ["first_response"] and recomputed.actor == "system:sla-recompute"

    again = subprocess.run(
        [sys.executable, "-m", "crmkit.cli", "sla", "recompute", "--from", days[0]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "0 changed" in again.stderr, again.stderr


def test_a_calendar_starts_from_iran_s_public_holidays(desk: ServiceHarness, directory) -> None:
    created = call(
        desk,
        "POST",
        "/v1/sla-policies",
        {
            **POLICY,
            "holidays": ["2026-01-01"],
            "holidays_from": {"country": "IR", "years": [2026, 2027]},
            "business_hours": {
                "time_zone": "Asia/Tehran",
                "start": "08:00",
                "end": "16:00",
                "working_days": ["saturday", "sunday", "monday", "tuesday", "wednesday"],
            },
        },
    )
    assert created.status_code == 201, created.get_json()
    policy = created.get_json()
    assert {"2026-01-01", "2026-03-21", "2026-03-24", "2027-03-21"} <= set(policy["holidays"])
    assert "holidays_from" not in policy
    [stored] = [e for e in desk.runtime.store.load(policy["id"])]
    assert stored.data["holidays"] == policy["holidays"]  # the dates themselves, not the request

    revised = call(
        desk,
        "PATCH",
        f"/v1/sla-policies/{policy['id']}",
        {"effective_at": "2026-06-01T00:00:00+03:30", "holidays_from": {"country": "DE", "years": [2026]}},
    )
    assert revised.status_code == 200, revised.get_json()
    body = revised.get_json()
    assert {"2026-03-21", "2026-10-03", "2026-12-25"} <= set(body["holidays"])  # Iran's kept, Germany's added
    assert body["versions"][-1]["effective_at"] == "2026-05-31T20:30:00.000Z"
    repeat = call(
        desk,
        "PATCH",
        f"/v1/sla-policies/{policy['id']}",
        {"effective_at": "2026-06-01T00:00:00+03:30", "holidays_from": {"country": "DE", "years": [2026]}},
    )
    assert repeat.status_code == 200 and repeat.get_json()["version"] == 2  # the same again: no new version


def test_bad_revisions_list_every_field_and_store_nothing(desk: ServiceHarness, directory) -> None:
    policy = call(desk, "POST", "/v1/sla-policies", POLICY).get_json()
    stored = desk.runtime.store.count()
    bad = call(
        desk,
        "PATCH",
        f"/v1/sla-policies/{policy['id']}",
        {
            "effective_at": "2026-01-01T00:00:00",
            "targets": {"normal": {"first_response": 0}},
            "business_hours": {"time_zone": "Mars/Base", "working_days": [], "start": "9", "end": "25:00"},
            "holidays": ["2026-02-30"],
            "holidays_from": {"country": "XX", "years": [1800]},
            "colour": "red",
        },
    )
    assert bad.status_code == 422 and bad.content_type == "application/problem+json"
    assert set(bad.get_json()["errors"]) >= {
        "effective_at",
        "targets.normal.first_response",
        "business_hours.time_zone",
        "business_hours.working_days",
        "business_hours.start",
        "business_hours.end",
        "holidays.0",
        "holidays_from.country",
        "holidays_from.years.0",
        "colour",
    }
    far = call(
        desk, "PATCH", f"/v1/sla-policies/{policy['id']}", {"effective_at": "1999-01-01T00:00:00Z", "enabled": False}
    )
    assert far.status_code == 422 and set(far.get_json()["errors"]) == {"effective_at"}
    nothing = call(desk, "PATCH", f"/v1/sla-policies/{policy['id']}", {"effective_at": "2026-01-01T00:00:00Z"})
    assert nothing.status_code == 422 and set(nothing.get_json()["errors"]) == {"_body"}
    for payload in ([], "x", {"effective_at": 5, "enabled": "yes", "holidays_from": {"country": "IR"}}):
        response = call(desk, "PATCH", f"/v1/sla-policies/{policy['id']}", payload)
        assert response.status_code == 422, (payload, response.get_json())
    assert (
        call(
            desk, "PATCH", "/v1/sla-policies/nope", {"effective_at": "2026-01-01T00:00:00Z", "enabled": False}
        ).status_code
        == 404
    )
    garbled = call(
        desk,
        "PATCH",
        f"/v1/sla-policies/{policy['id']}",
        {"effective_at": "2026-01-01T00:00:00Z", "enabled": False},
        **{"If-Match": "v1"},
    )
    assert garbled.status_code == 422 and set(garbled.get_json()["errors"]) == {"If-Match"}
    assert desk.runtime.store.count() == stored


def test_crm_sla_recompute_is_a_command_with_described_arguments() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "crmkit.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "sla" in shown and "recompute the service desk's SLA clocks" in " ".join(shown.split())
    bad = subprocess.run(
        [sys.executable, "-m", "crmkit.cli", "sla", "recompute", "--from", "yesterday"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "not a date" in bad.stderr


def test_a_recompute_interrupted_between_batches_resumes_where_it_stopped(desk: ServiceHarness, directory) -> None:
    cid = directory.add("c-1")
    policy = call(desk, "POST", "/v1/sla-policies", POLICY).get_json()
    tids = sorted(
        call(
            desk, "POST", "/v1/tickets", {"subject": f"s{n}", "contact_id": cid, "channel": "web", "type": "question"}
        ).get_json()["id"]
        for n in range(3)
    )
    assert (
        call(
            desk,
            "PATCH",
            f"/v1/sla-policies/{policy['id']}",
            {"effective_at": rfc3339(clock.now() - timedelta(days=1)), "targets": {"normal": {"resolution": 60}}},
        ).status_code
        == 200
    )
    desk.project()
    recompute = Recompute(TicketDesk(desk.runtime), batch=1)

    def killed(done: int) -> None:
        raise KeyboardInterrupt  # the process dies right after its first batch's checkpoint

    try:
        recompute.run("cli", progress=killed)
        raise AssertionError("the run was not interrupted")
    except KeyboardInterrupt:
        pass
    state = desk.runtime.db["sla_recomputes"].find_one({"_id": "cli"})
    assert state["state"] == "running" and state["cursor"] == tids[0] and state["changed"] == 1

    assert recompute.run("cli") == {"tickets": 3, "changed": 3}  # resumed: the first ticket is not read again
    for tid in tids:
        assert [e.type for e in desk.runtime.store.load(tid)].count("SlaRecomputed") == 1
    assert recompute.run("cli") == {"tickets": 3, "changed": 0}  # a new run: every ticket already follows v2
