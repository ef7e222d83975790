"""SERVQUAL through the service desk's API: the instrument and the policy, surveys sent by staff and by the
policy's pass, the signed questionnaire page (Persian right to left, English), and the report."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from jsonschema import Draft7Validator

from crm_servicedesk.commands import TicketDesk
from crm_servicedesk.servqual_desk import ServqualDesk, quarter_of
from crmkit import clock, signing
from crmkit.testing import ServiceHarness, stored_events

from .test_api import open_ticket, post
from .test_customer_tiers import tier_changed

SHORT = {
    "items": {
        "tangibles": ["q1"],
        "reliability": ["q5", "q7"],
        "responsiveness": ["q11"],
        "assurance": ["q14"],
        "empathy": [],
    },
    "weights": {"tangibles": 10, "reliability": 40, "responsiveness": 30, "assurance": 20},
}
ONE_EACH = {
    "items": {
        "tangibles": ["q1"],
        "reliability": ["q5"],
        "responsiveness": ["q11"],
        "assurance": ["q14"],
        "empathy": ["q18"],
    }
}


def put(desk: ServiceHarness, path: str, body: object, *roles: str):
    return desk.client.put(path, json=body, headers=desk.headers(*(roles or ("servicedesk:write",))))


def configure(desk: ServiceHarness, instrument: dict | None = None, policy: dict | None = None) -> None:
    if instrument is not None:
        assert put(desk, "/v1/servqual/instrument", instrument).status_code == 200
    if policy is not None:
        assert put(desk, "/v1/servqual/policy", policy).status_code == 200


def send(desk: ServiceHarness, contact_id: str, ticket_id: str | None = None) -> dict:
    response = post(desk, "/v1/servqual/surveys", {"contact_id": contact_id, "ticket_id": ticket_id})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def link(survey_id: str, contact_id: str, ttl: timedelta = timedelta(days=60)) -> str:
    return "/v1/surveys/servqual/" + signing.sign(
        "servqual", {"survey_id": survey_id, "contact_id": contact_id}, ttl=ttl
    )


def answers(items: dict[str, list[str]], expectation: int, perception: int) -> dict:
    asked = [i for ids in items.values() for i in ids]
    return {"expectations": dict.fromkeys(asked, expectation), "perceptions": dict.fromkeys(asked, perception)}


def solve(desk: ServiceHarness, contact_id: str, **fields: object) -> str:
    ticket = open_ticket(desk, contact_id, **fields)
    assert post(desk, f"/v1/tickets/{ticket['id']}/status", {"status": "solved"}).status_code == 200
    return ticket["id"]


def _html_lang_dir(html: str) -> tuple[str, str]:
    head = html[html.index("<html") : html.index(">", html.index("<html"))]
    return head.split('lang="')[1].split('"')[0], head.split('dir="')[1].split('"')[0]


# --- the instrument and the policy ---------------------------------------------------------------------


def test_the_instrument_is_the_standard_22_until_an_admin_sets_a_shorter_one(desk: ServiceHarness) -> None:
    read = desk.headers("servicedesk:read")
    standard = desk.client.get("/v1/servqual/instrument", headers=read)
    assert standard.status_code == 200 and standard.headers["ETag"] == '"0"'
    assert standard.get_json()["item_count"] == 22 and standard.get_json()["weights"]["empathy"] == 0.2

    bad = put(
        desk,
        "/v1/servqual/instrument",
        {"items": {"tangibles": ["q5"]}, "weights": {"tangibles": 60, "reliability": 30}},
    )
    assert bad.status_code == 422 and bad.mimetype == "application/problem+json"
    assert set(bad.get_json()["errors"]) == {"items.tangibles.0", "weights"}, bad.get_json()
    unweighable = put(
        desk,
        "/v1/servqual/instrument",
        {
            "items": {"reliability": ["q5"], "empathy": ["q18", "q18"]},
            "weights": {"reliability": 0.5, "tangibles": 0.5},
        },
    )
    assert set(unweighable.get_json()["errors"]) == {"items.empathy", "weights.tangibles"}
    assert put(desk, "/v1/servqual/instrument", {"weights": {"reliability": "40"}}).status_code == 422
    assert put(desk, "/v1/servqual/instrument", SHORT, "servicedesk:read").status_code == 403
    assert desk.client.get("/v1/servqual/instrument", headers=read).get_json()["version"] == 0  # nothing stored

    before = clock.now()
    configured = put(desk, "/v1/servqual/instrument", SHORT)
    assert configured.status_code == 200, configured.get_json()
    body = configured.get_json()
    assert body["version"] == 1 and body["item_count"] == 5 and not body["standard"]
    assert body["weights"] == {
        "tangibles": 0.1,
        "reliability": 0.4,
        "responsiveness": 0.3,
        "assurance": 0.2,
        "empathy": 0,
    }
    assert (
        put(
            desk,
            "/v1/servqual/instrument",
            {**SHORT, "weights": {"tangibles": 0.1, "reliability": 0.4, "responsiveness": 0.3, "assurance": 0.2}},
        ).get_json()["version"]
        == 1
    )  # the same weights as fractions: nothing new
    history = desk.client.get("/v1/servqual/instrument/history", headers=read).get_json()["items"]
    assert [(h["type"], h["actor"]) for h in history] == [("ServqualInstrumentConfigured", "user:tester")]
    then = desk.client.get("/v1/servqual/instrument", query_string={"as_of": before.isoformat()}, headers=read)
    assert then.get_json()["version"] == 0 and then.get_json()["item_count"] == 22
    reset = put(desk, "/v1/servqual/instrument", {})
    assert reset.get_json()["version"] == 2 and reset.get_json()["standard"]


def test_the_policy_is_off_until_set_and_refuses_bad_values(desk: ServiceHarness) -> None:
    read = desk.headers("servicedesk:read")
    off = desk.client.get("/v1/servqual/policy", headers=read).get_json()
    assert off["enabled"] is False and off["version"] == 0 and off["counting_since"] is None
    bad = put(
        desk,
        "/v1/servqual/policy",
        {"enabled": True, "every_nth_solved_per_contact": 0, "every_nth_solved_overall": 2.5, "quarterly_tiers": [""]},
    )
    assert bad.status_code == 422
    assert set(bad.get_json()["errors"]) == {
        "every_nth_solved_per_contact",
        "every_nth_solved_overall",
        "quarterly_tiers.0",
    }, bad.get_json()
    assert set(put(desk, "/v1/servqual/policy", {"enabled": "yes"}).get_json()["errors"]) == {"enabled"}
    assert set(put(desk, "/v1/servqual/policy", {}).get_json()["errors"]) == {"enabled"}
    on = put(
        desk,
        "/v1/servqual/policy",
        {"enabled": True, "every_nth_solved_per_contact": 5, "quarterly_tiers": ["strategic"]},
    )
    assert on.status_code == 200 and on.get_json()["counting_since"] and on.get_json()["version"] == 1
    history = desk.client.get("/v1/servqual/policy/history", headers=read).get_json()["items"]
    assert [h["type"] for h in history] == ["ServqualPolicyConfigured"]


# --- a survey and its page ----------------------------------------------------------------------------


def test_a_survey_is_answered_once_on_its_persian_page_and_bad_answers_store_nothing(
    desk: ServiceHarness, directory
) -> None:
    cid = directory.add("c-fa", locale="fa-IR")
    configure(desk, SHORT)
    ticket = open_ticket(desk, cid, group="billing")
    survey = send(desk, cid, ticket["id"])
    assert (survey["status"], survey["trigger"], survey["group"], survey["ticket_id"]) == (
        "sent",
        {"rule": "manual"},
        "billing",
        ticket["id"],
    )
    assert survey["items"] == SHORT["items"] and survey["instrument_version"] == 1
    url = link(survey["id"], cid)

    page = desk.client.get(url)  # no Authorization header
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html" and _html_lang_dir(html) == ("fa", "rtl")
    assert "این شرکت قابل اتکا است." in html and "شرکت‌های عالی قابل اتکا هستند." in html  # q7, both parts
    assert len(re.findall(r'name="expectations\.q\d+" value="7"', html)) == 5
    assert len(re.findall(r'name="perceptions\.q\d+" value="1"', html)) == 5
    assert "> ۷</label>" in html and "q18" not in html  # Persian digits; empathy is not asked

    partial = desk.client.post(url, json={"expectations": {"q1": 7, "q5": 6, "q7": 8}, "perceptions": {"q99": 3}})
    assert partial.status_code == 422 and partial.mimetype == "application/problem+json"
    errors = partial.get_json()["errors"]
    assert set(errors) == {
        "expectations.q7",
        "expectations.q11",
        "expectations.q14",
        "perceptions.q1",
        "perceptions.q5",
        "perceptions.q7",
        "perceptions.q11",
        "perceptions.q14",
        "perceptions.q99",
    }, errors
    form = desk.client.post(url, data={"expectations.q1": "6", "expectations.q5": "x"})
    assert form.status_code == 422 and form.mimetype == "text/html"
    kept = form.get_data(as_text=True)
    assert 'name="expectations.q1" value="6" checked' in kept and kept.count("لطفاً به این جمله پاسخ دهید.") == 9
    history = desk.client.get(f"/v1/servqual/surveys/{survey['id']}/history", headers=desk.headers()).get_json()
    assert [h["type"] for h in history["items"]] == ["ServqualSurveySent"]  # nothing stored

    done = desk.client.post(url, json=answers(SHORT["items"], 6, 4))
    assert done.status_code == 201, done.get_json()
    assert done.get_json()["overall_gap"] == -2.0 and done.get_json()["dimension_gaps"]["empathy"] is None
    again = desk.client.post(url, json=answers(SHORT["items"], 1, 1))
    assert again.status_code == 409 and again.mimetype == "application/problem+json"
    assert "قبلاً پاسخ داده‌اید" in desk.client.get(url).get_data(as_text=True)
    stored = desk.client.get(f"/v1/servqual/surveys/{survey['id']}", headers=desk.headers()).get_json()
    assert stored["status"] == "answered" and stored["item_gaps"] == dict.fromkeys(["q1", "q5", "q7", "q11", "q14"], -2)
    assert stored["dimension_expectations"]["reliability"] == 6.0 and stored["overall_gap"] == -2.0
    recorded = stored_events(desk.runtime.db["events"], type="ServqualResponseRecorded")
    assert len(recorded) == 1 and recorded[0]["actor"] == f"contact:{cid}"


def test_an_english_contact_gets_english_and_a_browser_form_gets_a_thank_you_page(
    desk: ServiceHarness, directory
) -> None:
    cid = directory.add("c-en", locale="en-GB")
    configure(desk, ONE_EACH)
    url = link(send(desk, cid)["id"], cid)
    html = desk.client.get(url).get_data(as_text=True)
    assert _html_lang_dir(html) == ("en", "ltr") and "This company gives you individual attention." in html
    assert _html_lang_dir(desk.client.get(url + "?lang=fa").get_data(as_text=True)) == ("fa", "rtl")
    form = {
        f"{side}.{item}": "5" for side in ("expectations", "perceptions") for item in ("q1", "q5", "q11", "q14", "q18")
    }
    thanks = desk.client.post(url, data=form)
    assert thanks.status_code == 201 and "Thank you" in thanks.get_data(as_text=True)
    assert desk.client.post(url, data=form).status_code == 409


def test_forged_expired_foreign_or_erased_links_record_nothing(desk: ServiceHarness, directory) -> None:
    cid, other = directory.add("c-1"), directory.add("c-2")
    configure(desk, ONE_EACH)
    survey = send(desk, cid)
    body = answers(ONE_EACH["items"], 5, 5)
    forged = link(survey["id"], cid)[:-3] + "AAA"
    expired = link(survey["id"], cid, ttl=timedelta(seconds=-1))
    someone_else = link(survey["id"], other)
    csat = "/v1/surveys/servqual/" + signing.sign("survey", {"survey_id": survey["id"], "contact_id": cid})
    unknown = link("no-such-survey", cid)
    for url, status in ((forged, 404), (expired, 410), (someone_else, 404), (csat, 404), (unknown, 404)):
        assert desk.client.get(url).status_code == status, url
        assert desk.client.post(url, json=body).status_code == status, url
    desk.runtime.db["contacts"].update_one({"_id": cid}, {"$set": {"status": "erased"}}, upsert=True)
    assert desk.client.post(link(survey["id"], cid), json=body).status_code == 404
    got = desk.client.get(f"/v1/servqual/surveys/{survey['id']}", headers=desk.headers()).get_json()
    assert got["status"] == "sent" and got["answered_at"] is None


def test_staff_send_to_known_contacts_and_their_own_tickets_only(desk: ServiceHarness, directory) -> None:
    cid, other = directory.add("c-1"), directory.add("c-2")
    theirs = open_ticket(desk, other)
    unknown = post(desk, "/v1/servqual/surveys", {"contact_id": "nobody"})
    assert unknown.status_code == 422 and set(unknown.get_json()["errors"]) == {"contact_id"}
    foreign = post(desk, "/v1/servqual/surveys", {"contact_id": cid, "ticket_id": theirs["id"]})
    assert foreign.status_code == 422 and set(foreign.get_json()["errors"]) == {"ticket_id"}
    assert post(desk, "/v1/servqual/surveys", {"contact_id": cid}, "servicedesk:read").status_code == 403
    assert stored_events(desk.runtime.db["events"], type="ServqualSurveySent") == []


# --- the policy's pass (the worker's job) ---------------------------------------------------------------


def sent_events(desk: ServiceHarness) -> list[dict]:
    """The surveys recorded, in the order they were."""
    return sorted(
        stored_events(desk.runtime.db["events"], type="ServqualSurveySent"), key=lambda e: (e["time_ms"], e["_id"])
    )


def test_every_nth_solved_ticket_of_a_contact_sends_them_one_survey(desk: ServiceHarness, directory) -> None:
    servqual = ServqualDesk(TicketDesk(desk.runtime))
    a, b = directory.add("a"), directory.add("b")
    solve(desk, a)  # before the policy: not counted
    desk.project()
    assert servqual.apply_policy(clock.now() + timedelta(seconds=10)) == {"sent": 0}  # off
    configure(desk, policy={"enabled": True, "every_nth_solved_per_contact": 2})
    a_tickets = [solve(desk, a, group="billing") for _ in range(3)]
    solve(desk, b)
    desk.project()
    later = clock.now() + timedelta(seconds=10)
    assert servqual.apply_policy(later) == {"sent": 1}
    assert servqual.apply_policy(later) == {"sent": 0}  # a pass again sends nothing more
    [event] = sent_events(desk)
    assert (event["data"]["contact_id"], event["data"]["ticket_id"], event["data"]["group"]) == (
        a,
        a_tickets[1],
        "billing",
    )
    assert event["data"]["trigger"] == {"rule": "every_nth_solved", "scope": "contact", "n": 2}
    assert event["actor"] == "system:servqual-policy"
    a_tickets.append(solve(desk, a))
    desk.project()
    assert servqual.apply_policy(clock.now() + timedelta(seconds=10)) == {"sent": 1}
    assert [e["data"]["ticket_id"] for e in sent_events(desk)] == [a_tickets[1], a_tickets[3]]


def test_every_nth_solved_overall_and_one_survey_per_ticket_whichever_rule_picks_it(
    desk: ServiceHarness, directory
) -> None:
    servqual = ServqualDesk(TicketDesk(desk.runtime))
    contacts = [directory.add(f"c-{n}") for n in range(3)]
    configure(desk, policy={"enabled": True, "every_nth_solved_overall": 3})
    solved = [solve(desk, contacts[n % 3]) for n in range(7)]
    desk.project()
    assert servqual.apply_policy(clock.now() + timedelta(seconds=10)) == {"sent": 2}
    assert sorted(e["data"]["ticket_id"] for e in sent_events(desk)) == sorted([solved[2], solved[5]])
    assert {e["data"]["contact_id"] for e in sent_events(desk)} == {contacts[2]}
    configure(desk, policy={"enabled": True, "every_nth_solved_overall": 1, "every_nth_solved_per_contact": 1})
    one = solve(desk, contacts[0])
    desk.project()
    assert servqual.apply_policy(clock.now() + timedelta(seconds=10)) == {"sent": 1}  # both rules: one survey
    assert sent_events(desk)[-1]["data"]["ticket_id"] == one


def test_strategic_customers_get_one_survey_a_quarter(desk: ServiceHarness, directory) -> None:
    servqual = ServqualDesk(TicketDesk(desk.runtime))
    big, small = directory.add("big"), directory.add("small")
    now = clock.now()
    servqual.desk.tiers.handle([tier_changed(big, 1, "strategic", now), tier_changed(small, 1, "standard", now)])
    open_ticket(desk, big, group="key-accounts")
    desk.project()
    configure(desk, policy={"enabled": True, "quarterly_tiers": ["strategic"]})
    assert servqual.apply_policy(now) == {"sent": 1}
    assert servqual.apply_policy(now) == {"sent": 0}  # the store refuses the same quarter's survey again
    desk.project()
    assert servqual.apply_policy(now) == {"sent": 0}  # and the read model skips it
    [event] = sent_events(desk)
    assert event["data"]["contact_id"] == big and event["data"]["customer_tier"] == "strategic"
    assert event["data"]["trigger"] == {"rule": "quarterly", "period": quarter_of(now), "tier": "strategic"}
    assert event["data"]["group"] == "key-accounts" and event["data"]["ticket_id"] is None
    next_quarter = now + timedelta(days=92)
    assert servqual.apply_policy(next_quarter) == {"sent": 1}
    assert sent_events(desk)[-1]["data"]["trigger"]["period"] == quarter_of(next_quarter) != quarter_of(now)
    configure(desk, policy={"enabled": False, "quarterly_tiers": ["strategic"]})
    assert servqual.apply_policy(now + timedelta(days=200)) == {"sent": 0}


# --- the report ------------------------------------------------------------------------------------------


def test_the_report_gives_gaps_by_dimension_item_tier_group_and_period(
    desk: ServiceHarness, directory, monkeypatch
) -> None:
    a, b, c = directory.add("a"), directory.add("b"), directory.add("c")
    TicketDesk(desk.runtime).tiers.handle([tier_changed(a, 1, "strategic", clock.now())])
    configure(desk, ONE_EACH)
    first = send(desk, a, open_ticket(desk, a, group="billing")["id"])
    second = send(desk, b, open_ticket(desk, b, group="support")["id"])
    send(desk, c)  # never answered
    assert desk.client.post(link(first["id"], a), json=answers(ONE_EACH["items"], 7, 5)).status_code == 201
    monkeypatch.setenv(clock.OFFSET_VARIABLE, str(timedelta(days=40).total_seconds()))
    assert desk.client.post(link(second["id"], b), json=answers(ONE_EACH["items"], 4, 6)).status_code == 201
    monkeypatch.delenv(clock.OFFSET_VARIABLE)
    desk.project()
    read = desk.headers("servicedesk:read")

    report = desk.client.get("/v1/reports/servqual", headers=read).get_json()
    assert (report["surveys_sent"], report["responses"], report["response_rate_percent"]) == (3, 2, 66.67)
    assert report["overall"]["weighted_gap"] == 0.0 and report["overall"]["unweighted_gap"] == 0.0
    assert report["dimensions"]["tangibles"] == {"responses": 2, "expectation": 5.5, "perception": 5.5, "gap": 0.0}
    assert [(i["id"], i["responses"], i["gap"]) for i in report["items"]] == [
        ("q1", 2, 0.0),
        ("q5", 2, 0.0),
        ("q11", 2, 0.0),
        ("q14", 2, 0.0),
        ("q18", 2, 0.0),
    ]
    assert [(t["customer_tier"], t["weighted_gap"]) for t in report["by_customer_tier"]] == [
        ("strategic", -2.0),
        (None, 2.0),
    ]
    assert [(g["group"], g["responses"], g["dimensions"]["empathy"]) for g in report["by_agent_group"]] == [
        ("billing", 1, -2.0),
        ("support", 1, 2.0),
    ]
    months = report["over_time"]
    assert report["period"] == "month" and len(months) in (2, 3)
    assert (months[0]["responses"], months[0]["weighted_gap"]) == (1, -2.0)
    assert (months[-1]["responses"], months[-1]["weighted_gap"]) == (1, 2.0)
    assert all(m["responses"] == 0 and m["weighted_gap"] is None for m in months[1:-1])
    assert months[0]["period"] == clock.now().strftime("%Y-%m")

    billing = desk.client.get("/v1/reports/servqual?team=billing&period=week", headers=read).get_json()
    assert billing["responses"] == 1 and billing["overall"]["weighted_gap"] == -2.0
    assert re.match(r"^\d{4}-W\d{2}$", billing["over_time"][0]["period"])
    strategic = desk.client.get("/v1/reports/servqual?customer_tier=strategic", headers=read).get_json()
    assert strategic["responses"] == 1 and strategic["surveys_sent"] == 1
    start = (clock.now() - timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    end = (clock.now() + timedelta(days=2)).strftime("%Y-%m-%dT00:00:00Z")
    days = desk.client.get(
        "/v1/reports/servqual", query_string={"from": start, "to": end, "period": "day"}, headers=read
    ).get_json()
    assert days["responses"] == 1 and [d["responses"] for d in days["over_time"]] == [0, 1, 0]

    bad = desk.client.get(
        "/v1/reports/servqual", query_string={"period": "fortnight", "from": end, "to": start}, headers=read
    )
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) >= {"period"}
    too_long = desk.client.get("/v1/reports/servqual", query_string={"from": "0001-01-01T00:00:00Z"}, headers=read)
    assert too_long.status_code == 422 and "from" in too_long.get_json()["errors"]


def test_a_report_at_the_calendars_last_day_ends_its_last_bucket_there(desk: ServiceHarness) -> None:
    for period in ("day", "week", "month", "quarter", "year"):
        edge = desk.client.get(
            "/v1/reports/servqual",
            headers=desk.headers(),
            query_string={"from": "9999-12-30T00:00:00Z", "to": "9999-12-31T23:00:00Z", "period": period},
        )
        assert edge.status_code == 200, (period, edge.get_json())
        buckets = edge.get_json()["over_time"]
        assert buckets[-1]["end"].startswith("9999-12-31T23:59:59") or period == "day", (period, buckets)


def _json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: `nullable: true` becomes null among the types (or values)."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        if "enum" in converted and None not in converted["enum"]:
            converted["enum"] = [*converted["enum"], None]
    return converted


def test_every_servqual_answer_is_what_the_document_says(desk: ServiceHarness, directory) -> None:
    """The responses (with data in them) against their documented schemas: what the fuzz run's ST108 checks."""
    document = _json_schema(desk.client.get("/openapi.json").get_json())

    def conforms(path: str, method: str, response: Any) -> None:
        operation = document["paths"][path][method]["responses"][str(response.status_code)]
        schema = operation["content"]["application/json"]["schema"]
        errors = [
            f"{list(e.absolute_path)}: {e.message}"
            for e in Draft7Validator({**schema, "components": document["components"]}).iter_errors(response.get_json())
        ]
        assert errors == [], (path, errors)

    cid = directory.add("c-1")
    TicketDesk(desk.runtime).tiers.handle([tier_changed(cid, 1, "strategic", clock.now())])
    read = desk.headers("servicedesk:read")
    conforms("/v1/servqual/instrument", "put", put(desk, "/v1/servqual/instrument", SHORT))
    conforms(
        "/v1/servqual/policy",
        "put",
        put(desk, "/v1/servqual/policy", {"enabled": True, "quarterly_tiers": ["strategic"]}),
    )
    survey = send(desk, cid, open_ticket(desk, cid, group="billing")["id"])
    answered = desk.client.post(link(survey["id"], cid), json=answers(SHORT["items"], 6, 3))
    conforms("/v1/surveys/servqual/{token}", "post", answered)
    desk.project()
    for path, url in (
        ("/v1/servqual/instrument", "/v1/servqual/instrument"),
        ("/v1/servqual/policy", "/v1/servqual/policy"),
        ("/v1/servqual/surveys", "/v1/servqual/surveys"),
        ("/v1/servqual/surveys/{survey_id}", f"/v1/servqual/surveys/{survey['id']}"),
        ("/v1/servqual/surveys/{survey_id}/history", f"/v1/servqual/surveys/{survey['id']}/history"),
        ("/v1/servqual/instrument/history", "/v1/servqual/instrument/history"),
        ("/v1/reports/servqual", "/v1/reports/servqual?period=quarter"),
    ):
        response = desk.client.get(url, headers=read)
        assert response.status_code == 200, (url, response.get_json())
        conforms(path, "get", response)
