"""Insight reports over REST: contacts made through the API, sales and service-desk events
as the worker would deliver them (RecordedEvents handed to the insight projections)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from kafka import KafkaProducer

from crm_contacts.insights.projections import insight_projections
from crmkit import stack
from crmkit.events import RecordedEvent, new_id, rfc3339, utcnow
from crmkit.projector import ProjectorRunner
from crmkit.testing import ServiceHarness, wait_until


def event(
    service: str, aggregate: str, stream: str, version: int, kind: str, when: datetime, **data: Any
) -> RecordedEvent:
    return RecordedEvent(
        id=new_id(),
        service=service,
        stream_id=stream,
        aggregate_type=aggregate,
        version=version,
        type=kind,
        schema_version=2 if kind == "ContactLifecycleStageChanged" else 1,
        data=data,
        time=when,
        actor="system",
        correlation_id=new_id(),
        causation_id=None,
    )


def deliver(contacts: ServiceHarness, events: list[RecordedEvent]) -> None:
    for projection in insight_projections(contacts.runtime.db, contacts.runtime.store, contacts.runtime.settings.topic):
        projection.handle(events)


def post(contacts: ServiceHarness, path: str, body: dict) -> dict:
    response = contacts.client.post(path, json=body, headers=contacts.headers("contacts:write"))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def get(contacts: ServiceHarness, report: str, **query: Any) -> dict:
    response = contacts.client.get(
        f"/v1/insights/{report}", query_string=query, headers=contacts.headers("contacts:read")
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def stage(contact: str, version: int, before: str, after: str, at: datetime, by: str) -> RecordedEvent:
    return event(
        "contacts",
        "contact",
        contact,
        version,
        "ContactLifecycleStageChanged",
        at,
        contact_id=contact,
        **{"from": before, "to": after, "cause": {"kind": "automation", "by": by}},
    )


def deal(
    deal_id: str,
    contact: str,
    amount: str,
    currency: str,
    created: datetime,
    closed: datetime | None = None,
    outcome: str = "won",
) -> list[RecordedEvent]:
    events = [
        event(
            "sales",
            "deal",
            deal_id,
            1,
            "DealCreated",
            created,
            deal_id=deal_id,
            contact_id=contact,
            pipeline_id="default",
            stage="qualification",
            at=rfc3339(created),
            title="t",
            amount=amount,
            currency=currency,
        )
    ]
    if closed is not None and outcome == "won":
        events.append(
            event(
                "sales",
                "deal",
                deal_id,
                2,
                "DealWon",
                closed,
                deal_id=deal_id,
                contact_id=contact,
                amount=amount,
                currency=currency,
                at=rfc3339(closed),
                **{"from": "qualification"},
            )
        )
    elif closed is not None:
        events.append(
            event(
                "sales",
                "deal",
                deal_id,
                2,
                "DealLost",
                closed,
                deal_id=deal_id,
                reason="price",
                at=rfc3339(closed),
                **{"from": "qualification"},
            )
        )
    return events


def ticket(
    ticket_id: str, contact: str, kind: str, opened: datetime, rating: tuple[int, int | None, datetime] | None = None
) -> list[RecordedEvent]:
    events = [
        event(
            "servicedesk",
            "ticket",
            ticket_id,
            1,
            "TicketOpened",
            opened,
            contact_id=contact,
            type=kind,
            channel="web",
            priority="normal",
            customer_tier=None,
            opened_at=rfc3339(opened),
            subject="sealed",
            description=None,
        )
    ]
    if rating is not None:
        csat, nps, at = rating
        events += [
            event(
                "servicedesk",
                "ticket",
                ticket_id,
                2,
                "TicketStatusChanged",
                at,
                to="solved",
                at=rfc3339(at),
                reason="manual",
                **{"from": "open"},
            ),
            event("servicedesk", "ticket", ticket_id, 3, "TicketSolved", at, at=rfc3339(at)),
            event(
                "servicedesk",
                "ticket",
                ticket_id,
                4,
                "SatisfactionRated",
                at,
                contact_id=contact,
                csat=csat,
                nps=nps,
                servqual=None,
                comment=None,
                at=rfc3339(at),
            ),
        ]
    return events


@pytest.fixture
def world(contacts: ServiceHarness) -> dict[str, Any]:
    """Four contacts (A, B, C customers; D a lead; A, B, D tagged vip), then a period in
    which B churns and is won back, C churns, A buys again, D buys for the first time,
    A and C complain, and both rate their tickets."""
    before = utcnow() - timedelta(seconds=1)
    ids = {
        name: post(contacts, "/v1/contacts", {"first_name": name, "lifecycle_stage": stage_name, "tags": tags})["id"]
        for name, stage_name, tags in (
            ("A", "customer", ["vip"]),
            ("B", "customer", ["vip"]),
            ("C", "customer", []),
            ("D", "lead", ["vip"]),
        )
    }
    vip = post(
        contacts,
        "/v1/segments",
        {"name": "VIP", "rules": {"all": [{"field": "tags", "op": "contains", "value": "vip"}]}},
    )["id"]
    post(
        contacts,
        "/v1/segments",
        {"name": "Everyone else", "rules": {"all": [{"field": "tags", "op": "not_in", "value": ["vip"]}]}},
    )
    contacts.project()
    t0 = utcnow() + timedelta(minutes=1)
    a, b, c, d = (ids[k] for k in "ABCD")
    events = [
        stage(b, 2, "customer", "churned", t0 + timedelta(minutes=2), "rule:churn"),
        stage(b, 3, "churned", "customer", t0 + timedelta(minutes=3), "rule:win-back"),
        stage(c, 2, "customer", "churned", t0 + timedelta(minutes=4), "rule:churn"),
        *deal("deal-1", a, "100.00", "USD", before - timedelta(days=2), before - timedelta(days=1)),
        *deal("deal-2", a, "50.00", "USD", t0, t0 + timedelta(minutes=5)),
        *deal("deal-3", d, "1000", "IRR", t0, t0 + timedelta(minutes=6)),
        *deal("deal-4", c, "75.00", "USD", t0, t0 + timedelta(minutes=6), outcome="lost"),
        event(
            "sales",
            "customer",
            a,
            1,
            "CustomerTierChanged",
            before - timedelta(days=1),
            contact_id=a,
            tier="strategic",
            previous_tier="standard",
            clv={"amount": "100.00", "currency": "USD"},
        ),
        *ticket("ticket-1", a, "complaint", t0 + timedelta(minutes=7), (5, 10, t0 + timedelta(minutes=8))),
        *ticket("ticket-2", d, "question", t0 + timedelta(minutes=7)),
        *ticket("ticket-3", c, "complaint", t0 + timedelta(minutes=7), (2, 3, t0 + timedelta(minutes=9))),
    ]
    deliver(contacts, events)
    deliver(contacts, events[::-1] + events)  # at least once: repeats and stale copies change nothing
    return {
        "ids": ids,
        "vip": vip,
        "events": events,
        "period": {"from": rfc3339(t0), "to": rfc3339(t0 + timedelta(hours=1))},
        "since_before": {"from": rfc3339(before), "to": rfc3339(t0 + timedelta(hours=1))},
    }


def test_churn_retention_and_win_backs(contacts: ServiceHarness, world: dict[str, Any]) -> None:
    churn = get(contacts, "churn", **world["period"])
    assert churn["report"] == "churn" and churn["period"] == world["period"] and churn["segment_id"] is None
    assert {
        k: churn[k]
        for k in (
            "customers_at_start",
            "churned",
            "retained",
            "churned_and_not_back",
            "lost_otherwise",
            "churn_rate",
            "retention_rate",
        )
    } == {
        "customers_at_start": 3,
        "churned": 2,
        "retained": 2,
        "churned_and_not_back": 1,
        "lost_otherwise": 0,
        "churn_rate": 0.6667,
        "retention_rate": 0.6667,
    }
    vip = get(contacts, "churn", segment_id=world["vip"], **world["period"])
    assert (vip["customers_at_start"], vip["churn_rate"], vip["retention_rate"]) == (2, 0.5, 1.0)
    backs = get(contacts, "win-backs", **world["period"])
    assert (backs["win_backs"], backs["by_cause"]) == (1, {"automation:rule:win-back": 1})


def test_acquisition_vs_retention_and_contacts_per_sale(contacts: ServiceHarness, world: dict[str, Any]) -> None:
    split = get(contacts, "acquisition-retention", **world["period"])
    assert (split["new_customers"], split["returning_customers"]) == (1, 1)
    assert split["by_currency"] == {
        "IRR": {"new_customer_revenue": "1000", "returning_customer_revenue": "0", "total_revenue": "1000"},
        "USD": {"new_customer_revenue": "0.00", "returning_customer_revenue": "50.00", "total_revenue": "50.00"},
    }
    ratio = get(contacts, "contacts-per-sale", **world["since_before"])
    assert (ratio["contacts_created"], ratio["deals_won"], ratio["contacts_per_sale"]) == (4, 2, 2.0)
    none_won = get(
        contacts,
        "contacts-per-sale",
        segment_id=world["vip"],
        **{"from": world["since_before"]["from"], "to": world["period"]["from"]},
    )
    assert (none_won["contacts_created"], none_won["deals_won"], none_won["contacts_per_sale"]) == (3, 0, None)


def test_sales_by_segment_and_by_lifecycle_stage(contacts: ServiceHarness, world: dict[str, Any]) -> None:
    by_segment = get(contacts, "sales-by-segment", **world["period"])
    assert [(i["name"], i["deals_won"], i["customers"], i["revenue"]) for i in by_segment["items"]] == [
        ("VIP", 2, 2, {"IRR": "1000", "USD": "50.00"}),
        ("Everyone else", 0, 0, {}),
    ]
    first = get(contacts, "sales-by-segment", limit=1, **world["period"])
    assert len(first["items"]) == 1 and first["next_cursor"]
    second = get(contacts, "sales-by-segment", limit=1, cursor=first["next_cursor"], **world["period"])
    assert second["items"][0]["name"] == "Everyone else" and second["next_cursor"] is None
    one = get(contacts, "sales-by-segment", segment_id=world["vip"], **world["period"])
    assert [i["segment_id"] for i in one["items"]] == [world["vip"]]
    by_stage = get(contacts, "sales-by-stage", **world["period"])
    assert by_stage["stages"] == {
        "customer": {"deals_won": 1, "customers": 1, "revenue": {"USD": "50.00"}},
        "lead": {"deals_won": 1, "customers": 1, "revenue": {"IRR": "1000"}},
    }


def test_complaint_rate_and_satisfaction_by_tier(contacts: ServiceHarness, world: dict[str, Any]) -> None:
    rate = get(contacts, "complaint-rate", **world["period"])
    # customers at the end: A, B (won back), D (a won deal); C churned
    assert (rate["complaints"], rate["customers"], rate["complaints_per_100_customers"]) == (2, 3, 66.67)
    assert rate["complaints_from_customers"] == 1 and rate["tickets_opened"] == 3
    vip = get(contacts, "complaint-rate", segment_id=world["vip"], **world["period"])
    assert (vip["complaints"], vip["customers"], vip["complaints_per_100_customers"]) == (1, 3, 33.33)
    tiers = get(contacts, "satisfaction-by-tier", **world["period"])["tiers"]
    assert tiers["strategic"]["csat_average"] == 5.0 and tiers["strategic"]["nps"]["score"] == 100.0
    assert tiers["standard"]["csat_average"] == 2.0 and tiers["standard"]["nps"]["score"] == -100.0


def test_an_empty_database_answers_with_zeros_and_nulls(contacts: ServiceHarness) -> None:
    churn = get(contacts, "churn")
    assert churn["customers_at_start"] == 0 and churn["churn_rate"] is None
    assert get(contacts, "acquisition-retention")["by_currency"] == {}
    assert get(contacts, "satisfaction-by-tier")["tiers"] == {}


def test_a_deal_reopened_or_moved_to_another_contact_counts_where_it_is_now(contacts: ServiceHarness) -> None:
    at = utcnow()
    events = deal("deal-x", "c1", "10.00", "EUR", at, at + timedelta(seconds=1))
    events.append(
        event(
            "sales",
            "deal",
            "deal-x",
            3,
            "DealContactChanged",
            at,
            deal_id="deal-x",
            reason="merged",
            **{"from": "c1", "to": "c2"},
        )
    )
    deliver(contacts, events)
    doc = contacts.runtime.db["insight_deals"].find_one({"_id": "deal-x"})
    assert (doc["contact_id"], doc["status"], doc["amount_minor"], doc["scale"], doc["version"]) == (
        "c2",
        "won",
        1000,
        2,
        3,
    )
    deliver(
        contacts,
        [
            event(
                "sales",
                "deal",
                "deal-x",
                4,
                "DealReopened",
                at,
                deal_id="deal-x",
                to="proposal",
                at=rfc3339(at),
                **{"from": "won"},
            )
        ],
    )
    doc = contacts.runtime.db["insight_deals"].find_one({"_id": "deal-x"})
    assert (doc["status"], doc["won_ms"]) == ("open", None)


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        (
            {"from": "yesterday", "to": "2024-13-01T00:00:00Z", "segment_id": "not an id!", "colour": "red"},
            {"from", "to", "segment_id", "colour"},
        ),
        ({"from": "2024-02-01T00:00:00Z", "to": "2024-01-01T00:00:00Z"}, {"from", "to"}),
        ({"from": "2024-01-01T00:00:00"}, {"from"}),  # no zone
        ({"segment_id": "no-such-segment"}, {"segment_id"}),
        ({"from": "2999-01-01T00:00:00Z"}, {"from"}),  # after the default `to` (now)
    ],
)
def test_bad_input_is_422_listing_every_field(contacts: ServiceHarness, query: dict, fields: set) -> None:
    response = contacts.client.get("/v1/insights/churn", query_string=query, headers=contacts.headers("contacts:read"))
    assert response.status_code == 422, response.get_json()
    assert response.content_type == "application/problem+json"
    assert set(response.get_json()["errors"]) == fields


def test_sales_by_segment_checks_its_page_size(contacts: ServiceHarness) -> None:
    response = contacts.client.get(
        "/v1/insights/sales-by-segment",
        query_string={"limit": 0, "from": "x"},
        headers=contacts.headers("contacts:read"),
    )
    assert response.status_code == 422 and set(response.get_json()["errors"]) == {"limit", "from"}


def test_reports_need_a_token_with_contacts_read(contacts: ServiceHarness) -> None:
    assert contacts.client.get("/v1/insights/churn").status_code == 401
    assert contacts.client.get("/v1/insights/churn", headers=contacts.headers("sales:read")).status_code == 403
    assert contacts.client.get("/v1/insights/churn", headers=contacts.headers("contacts:write")).status_code == 200


def test_openapi_lists_every_report(contacts: ServiceHarness) -> None:
    paths = contacts.client.get("/openapi.json").get_json()["paths"]
    for report in (
        "churn",
        "win-backs",
        "acquisition-retention",
        "contacts-per-sale",
        "sales-by-segment",
        "sales-by-stage",
        "complaint-rate",
        "satisfaction-by-tier",
    ):
        assert f"/v1/insights/{report}" in paths


def test_the_worker_projects_sales_events_from_the_sales_topic(
    contacts: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real path: CloudEvents on the sales topic (CRM_SALES_TOPIC), a projector in its own group."""
    bootstrap = contacts.runtime.settings.kafka_bootstrap
    topic = f"t.sales.{new_id()[-12:]}"
    monkeypatch.setenv("CRM_SALES_TOPIC", topic)
    stack.ensure_topics(bootstrap, [topic])
    at = utcnow()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for recorded in deal("deal-k", "c-k", "12.34", "EUR", at, at):
        producer.send(topic, key=recorded.stream_id.encode(), value=recorded.to_bytes())
    producer.flush()
    producer.close()
    [projection] = [p for p in contacts.spec.projections(contacts.runtime) if p.name == "insight_deals"]
    assert projection.topics == [topic]
    runner = ProjectorRunner(
        "contacts",
        projection,
        bootstrap,
        contacts.runtime.store.open,
        db=contacts.runtime.db,
        group_prefix=f"t{new_id()[-12:]}",
    )
    try:
        doc = wait_until(
            lambda: (
                runner.poll_once() is not None
                and contacts.runtime.db["insight_deals"].find_one({"_id": "deal-k", "status": "won"})
            ),
            what="the won deal projected from Kafka",
        )
    finally:
        runner.consumer.close()
    assert (doc["contact_id"], doc["amount_minor"], doc["scale"], doc["currency"]) == ("c-k", 1234, 2, "EUR")
