"""Issue 7: one customer's life across all four services, on `crm up`, through public APIs only.

`crm up` runs as a subprocess on free ports (every service's HTTP, gRPC and metrics ports,
the SMTP sink, Kafka, MongoDB) with its data under tmp, one gunicorn worker and short
worker intervals. The test uses the admin token it prints, REST, a plain Kafka reader
(every partition assigned, no consumer group) and the SMTP sink's .eml files. Time is
moved with `crmkit.clock`'s CRM_CLOCK_FILE, which the running processes re-read.

- lifecycle: lead → opportunity (deal created) → customer (won) → at risk (a year later)
  → churned (90 days after that) → customer again (another deal won: a win-back);
- strategic tier: sales ranks the big customer strategic (CustomerTierChanged); contacts
  shows derived.tier on the list and in a segment, the 360 has its value section, and
  the service desk gives a new ticket of that customer the stricter SLA policy;
- default triggers, each once: deal won → welcome email; ticket solved → survey email
  whose signed link rates the ticket (SatisfactionRated) once, a second answer is 409;
  a customer without email consent gets nothing (MessageSuppressed);
- every event on the four topics matches its JSON Schema in docs/events;
- SIGTERM stops the stack with exit code 0.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from kafka import KafkaConsumer, TopicPartition

from crmkit.testing import wait_until

from .conftest import LocalStack

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events"
TOPICS = ["crm.contacts.events", "crm.sales.events", "crm.servicedesk.events", "crm.messaging.events"]
DAY = 86400
SLOW = 90  # seconds: consumer-group joins take ~5 s each on the local broker, and there are many
WORKER_INTERVALS = {
    "CRM_CONTACTS_LIFECYCLE_INTERVAL_SECONDS": "1",
    "CRM_SALES_VALUE_INTERVAL": "1",
    "CRM_SERVICEDESK_SWEEP_SECONDS": "1",
    "CRM_360_DEADLINE_SECONDS": "5",
}


class Events:
    """Every event of the four topics, read from the beginning by a background reader (no group)."""

    def __init__(self, bootstrap: str) -> None:
        self.items: list[dict] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        partitions = [TopicPartition(t, p) for t in TOPICS for p in sorted(self.consumer.partitions_for_topic(t))]
        self.consumer.assign(partitions)
        self.consumer.seek_to_beginning(*partitions)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self.consumer.poll(timeout_ms=200).values():
                with self._lock:
                    self.items.extend(json.loads(r.value) for r in records)

    def of(self, name: str, **data: Any) -> list[dict]:
        with self._lock:
            found = [e for e in self.items if e["type"].split(".")[2] == name]
        return [e for e in found if all(e["data"].get(k) == v for k, v in data.items())]

    def all(self) -> list[dict]:
        with self._lock:
            return list(self.items)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.consumer.close()


def validate_against_catalogue(events: list[dict]) -> dict[str, int]:
    """Each event against docs/events/<service>/<Type>.v<N>.schema.json; returns counts per service."""
    validators: dict[str, Draft202012Validator] = {}
    counts: dict[str, int] = {}
    for envelope in events:
        _, service, name, version = envelope["type"].split(".")
        path = DOCS / service / f"{name}.{version}.schema.json"
        assert path.exists(), f"{envelope['type']} is on the wire but not in docs/events"
        if str(path) not in validators:
            validators[str(path)] = Draft202012Validator(json.loads(path.read_text()))
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validators[str(path)].iter_errors(envelope)]
        assert errors == [], (envelope["type"], errors)
        counts[service] = counts.get(service, 0) + 1
    return counts


def test_a_customer_lifecycle_across_the_four_services(tmp_path: Path) -> None:
    crm = LocalStack(tmp_path, WORKER_INTERVALS)
    crm.start()
    events = Events(f"127.0.0.1:{crm.ports['kafka']}")
    try:
        _journey(crm, events)
        counts = validate_against_catalogue(events.all())
        assert set(counts) == {"contacts", "sales", "servicedesk", "messaging"}, counts
    finally:
        events.close()
        code = crm.stop()
    assert code == 0, crm.output.read_text()[-3000:]


def _journey(crm: LocalStack, events: Events) -> None:
    # --- the service desk's policies: a standard one, and a stricter one for strategic customers
    standard = crm.ok(
        "service-desk",
        "POST",
        "/v1/sla-policies",
        {"name": "Standard", "targets": {"normal": {"first_response": 240, "resolution": 2880}}},
        201,
    )
    strict = crm.ok(
        "service-desk",
        "POST",
        "/v1/sla-policies",
        {
            "name": "Strategic",
            "customer_tiers": ["strategic"],
            "targets": {"normal": {"first_response": 15, "resolution": 120}},
        },
        201,
    )

    # --- two people: Ali grants email consent, Bahar does not
    ali = crm.ok(
        "contacts",
        "POST",
        "/v1/contacts",
        {"first_name": "علی", "last_name": "Rezaei", "email": "ali@example.com"},
        201,
    )
    bahar = crm.ok("contacts", "POST", "/v1/contacts", {"first_name": "Bahar", "email": "bahar@example.com"}, 201)
    assert ali["lifecycle_stage"] == "lead"
    crm.ok("contacts", "PUT", f"/v1/contacts/{ali['id']}/consents/email", {"status": "granted"})

    def stage(contact: dict) -> str:
        return crm.ok("contacts", "GET", f"/v1/contacts/{contact['id']}")["lifecycle_stage"]

    # --- lead → opportunity → customer
    first = crm.ok(
        "sales",
        "POST",
        "/v1/deals",
        {"title": "First order", "contact_id": ali["id"], "amount": "50000.00", "currency": "USD"},
        201,
    )
    wait_until(lambda: stage(ali) == "opportunity", SLOW, "deal created → opportunity")
    crm.ok("sales", "POST", f"/v1/deals/{first['id']}/won")
    wait_until(lambda: stage(ali) == "customer", SLOW, "deal won → customer")

    small = crm.ok(
        "sales",
        "POST",
        "/v1/deals",
        {"title": "Small", "contact_id": bahar["id"], "amount": "100.00", "currency": "USD"},
        201,
    )
    crm.ok("sales", "POST", f"/v1/deals/{small['id']}/won")

    # --- welcome: one email to Ali; Bahar (no consent) gets nothing, the message is suppressed
    def to(address: str) -> list[email.message.EmailMessage]:
        return [m for m in crm.mails() if address in str(m["To"])]

    wait_until(lambda: len(to("ali@example.com")) == 1, SLOW, "the welcome email")
    assert "Welcome" in str(to("ali@example.com")[0]["Subject"])
    suppressed = wait_until(lambda: events.of("MessageSuppressed"), SLOW, "the welcome to Bahar suppressed")
    assert len(suppressed) == 1
    queued_for_bahar = events.of("MessageQueued", contact_id=bahar["id"])
    assert [m["subject"] for m in queued_for_bahar] == [suppressed[0]["subject"]]

    def bahars_messages() -> list[dict]:  # the messages view folds MessageSuppressed after MessageQueued
        items = crm.ok("messaging", "GET", f"/v1/messages?contact_id={bahar['id']}")["items"]
        return items if items and all(m["status"] != "queued" for m in items) else []

    listed = wait_until(bahars_messages, SLOW, "the suppressed message in the list")
    assert [(m["status"], m["reason"]) for m in listed] == [("suppressed", suppressed[0]["data"]["reason"])]

    # --- strategic tier: sales ranks, contacts and the service desk learn it
    wait_until(
        lambda: events.of("CustomerTierChanged", contact_id=ali["id"], tier="strategic"),
        SLOW,
        "sales to rank Ali strategic",
    )
    assert not events.of("CustomerTierChanged", contact_id=bahar["id"], tier="strategic")

    def listed_tier() -> str | None:
        items = crm.ok("contacts", "GET", "/v1/contacts?email=ali@example.com")["items"]
        return items and (items[0].get("derived") or {}).get("tier")

    wait_until(lambda: listed_tier() == "strategic", SLOW, "derived.tier on the contact list")
    segment = crm.ok(
        "contacts",
        "POST",
        "/v1/segments",
        {
            "name": "Strategic customers",
            "rules": {"all": [{"field": "derived.tier", "op": "eq", "value": "strategic"}]},
        },
        201,
    )
    members = crm.ok("contacts", "GET", f"/v1/segments/{segment['id']}/members")["items"]
    assert [m["id"] for m in members] == [ali["id"]]
    view = crm.ok("contacts", "GET", f"/v1/contacts/{ali['id']}/360")
    assert view["value"]["status"] == "available", view["value"]
    assert view["value"]["tier"] == "strategic"

    def open_ticket(subject: str) -> dict:
        return crm.ok(
            "service-desk",
            "POST",
            "/v1/tickets",
            {
                "subject": subject,
                "description": "سفارش من نرسیده",
                "contact_id": ali["id"],
                "channel": "email",
                "type": "complaint",
            },
            201,
        )

    probe = open_ticket("probe")  # its view shows the tier the service desk knows now
    wait_until(
        lambda: crm.ok("service-desk", "GET", f"/v1/tickets/{probe['id']}")["contact"]["tier"] == "strategic",
        SLOW,
        "the service desk to learn the tier",
    )
    ticket = open_ticket("Order not delivered")
    assert ticket["customer_tier"] == "strategic", ticket
    assert ticket["sla_policy"]["id"] == strict["id"] != standard["id"], ticket["sla_policy"]

    # --- solved → the survey email; its link rates the ticket once, without a login
    crm.ok("service-desk", "POST", f"/v1/tickets/{ticket['id']}/status", {"status": "solved"})
    surveys = wait_until(
        lambda: [m for m in to("ali@example.com") if "How did we do" in str(m["Subject"])], SLOW, "the survey email"
    )
    assert len(surveys) == 1
    body = surveys[0].get_body().get_content()
    [link] = re.findall(r"http://127\.0\.0\.1:\d+(/v1/surveys/[A-Za-z0-9_.-]+)", body)
    code, page = crm.call("service-desk", "GET", link, auth=False)
    assert code == 200 and 'name="csat"' in page
    code, answer = crm.call(
        "service-desk", "POST", link, auth=False, form={"csat": "5", "nps": "9", "comment": "ممنون"}
    )
    assert code == 201, answer
    rated = wait_until(lambda: events.of("SatisfactionRated"), SLOW, "SatisfactionRated on Kafka")
    assert [(e["subject"], e["data"]["csat"], e["data"]["nps"]) for e in rated] == [(ticket["id"], 5, 9)]
    shown = crm.ok("service-desk", "GET", f"/v1/tickets/{ticket['id']}")["satisfaction"]
    assert (shown["csat"], shown["nps"], shown["comment"]) == (5, 9, "ممنون")
    assert crm.call("service-desk", "POST", link, {"csat": 1}, auth=False)[0] == 409
    assert crm.call("service-desk", "POST", link, auth=False, form={"csat": "1"})[0] == 409

    # --- a year without a purchase: at risk; 90 more days: churned
    crm.move_clock(366 * DAY)
    wait_until(lambda: crm.ok("contacts", "GET", f"/v1/contacts/{ali['id']}")["at_risk"], SLOW, "at risk")
    assert stage(ali) == "customer"
    wait_until(
        lambda: [e for e in events.of("ContactFlaggedAtRisk") if e["subject"] == ali["id"]],
        SLOW,
        "ContactFlaggedAtRisk on Kafka",
    )
    crm.move_clock((366 + 91) * DAY)
    wait_until(lambda: stage(ali) == "churned", SLOW, "churned")

    # --- back to today's clock; a new deal won: a win-back
    crm.move_clock(0)
    again = crm.ok(
        "sales",
        "POST",
        "/v1/deals",
        {"title": "Back again", "contact_id": ali["id"], "amount": "1200.00", "currency": "USD"},
        201,
    )
    crm.ok("sales", "POST", f"/v1/deals/{again['id']}/won")
    wait_until(lambda: stage(ali) == "customer", SLOW, "win-back → customer")
    back = crm.ok("contacts", "GET", f"/v1/contacts/{ali['id']}")
    assert back["win_backs"] == 1 and back["at_risk"] is False
    timeline = [
        (t["from"], t["to"]) for t in crm.ok("contacts", "GET", f"/v1/contacts/{ali['id']}/360")["lifecycle_timeline"]
    ]
    assert ("lead", "opportunity") in timeline and ("opportunity", "customer") in timeline
    assert ("customer", "churned") in timeline and timeline[-1][1] == "customer", timeline

    # --- every trigger fired once per event: two welcomes and one survey for Ali, nothing for Bahar
    wait_until(lambda: len(to("ali@example.com")) == 3, SLOW, "the second welcome email")
    subjects = sorted(str(m["Subject"]) for m in to("ali@example.com"))
    assert sum("Welcome" in s for s in subjects) == 2 and sum("How did we do" in s for s in subjects) == 1
    assert to("bahar@example.com") == []
    sent = wait_until(lambda: len(events.of("MessageSent")) == 3 and events.of("MessageSent"), SLOW, "3 sends")
    assert len({e["subject"] for e in sent}) == 3
    assert len(events.of("MessageQueued")) == 4  # 3 for Ali, 1 (suppressed) for Bahar
