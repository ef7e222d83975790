"""Proof of consent per send, end to end through the public APIs of contacts and messaging:
the consent decision contacts gave at send time (its event id and version, status, source,
legal basis, when the person decided) is recorded on MessageSent / MessageSuppressed,
answered by GET /v1/messages/{id}/consent, counted by GET /v1/reports/consent-proofs,
and kept in clear on the stored event (nothing in it is personal), while the address
beside it is sealed."""

from __future__ import annotations

from typing import Any

from crmkit.testing import stored_events

from .conftest import World


def put_consent(world: World, contact_id: str, channel: str, **body: object) -> None:
    response = world.contacts.client.put(
        f"/v1/contacts/{contact_id}/consents/{channel}", json=body, headers=world.contacts.headers()
    )
    assert response.status_code == 200, response.get_json()


def last_consent_event(world: World, contact_id: str) -> dict[str, Any]:
    """The newest ContactConsentChanged of the contact, as its public history shows it."""
    history = world.contacts.client.get(
        f"/v1/contacts/{contact_id}/history?limit=100", headers=world.contacts.headers()
    ).get_json()["items"]
    return [entry for entry in history if entry["type"] == "ContactConsentChanged"][-1]


def send_and_dispatch(world: World, contact_id: str, body: str = "Hello") -> str:
    queued = world.send(contact_id=contact_id, channel="email", body=body)
    assert queued.status_code == 202, queued.get_json()
    world.dispatch()
    return queued.get_json()["id"]


def test_a_send_and_a_suppression_each_carry_the_consent_decision_they_relied_on(world: World) -> None:
    sara = world.contact(consents=(), first_name="Sara", email="sara@example.com")
    put_consent(
        world,
        sara["id"],
        "email",
        status="granted",
        legal_basis="contract",
        source="web_form",
        at="2026-02-01T09:30:00Z",
    )
    granted = last_consent_event(world, sara["id"])
    sent_id = send_and_dispatch(world, sara["id"])
    assert world.get(f"/v1/messages/{sent_id}").get_json()["status"] == "sent"

    proof = world.get(f"/v1/messages/{sent_id}/consent")
    assert proof.status_code == 200, proof.get_json()
    assert proof.get_json() == {
        "message_id": sent_id,
        "contact_id": sara["id"],
        "channel": "email",
        "status": "sent",
        "consent": {
            "contact_id": sara["id"],
            "granted": True,
            "reason": None,
            "status": "granted",
            "legal_basis": "contract",
            "source": "web_form",
            "decided_at": "2026-02-01T09:30:00.000Z",
            "event_id": granted["event_id"],
            "event_version": granted["version"],
            "checked_at": "2026-03-02T10:00:00.000Z",
        },
    }

    world.clock.advance(hours=1)
    put_consent(
        world,
        sara["id"],
        "email",
        status="withdrawn",
        legal_basis="consent",
        source="phone_call",
        at="2026-03-02T10:30:00Z",
    )
    withdrawn = last_consent_event(world, sara["id"])
    assert withdrawn["event_id"] != granted["event_id"] and withdrawn["version"] > granted["version"]
    suppressed_id = send_and_dispatch(world, sara["id"], "Again")
    suppressed = world.get(f"/v1/messages/{suppressed_id}/consent").get_json()
    assert suppressed["status"] == "suppressed"
    assert suppressed["consent"] == {
        "contact_id": sara["id"],
        "granted": False,
        "reason": "consent_withdrawn",
        "status": "withdrawn",
        "legal_basis": "consent",
        "source": "phone_call",
        "decided_at": "2026-03-02T10:30:00.000Z",
        "event_id": withdrawn["event_id"],
        "event_version": withdrawn["version"],
        "checked_at": "2026-03-02T11:00:00.000Z",
    }

    # the first message's proof is still the grant it went out on
    assert world.get(f"/v1/messages/{sent_id}/consent").get_json()["consent"]["event_id"] == granted["event_id"]

    # the stored events carry the proof in clear (nothing in it is personal); the address beside it is sealed
    events = world.messaging.runtime.db["events"]
    [sent_event] = stored_events(events, type="MessageSent", stream_id=sent_id)
    assert sent_event["data"]["consent"]["event_id"] == granted["event_id"]
    assert sent_event["data"]["consent"]["source"] == "web_form"
    assert sent_event["data"]["consent"]["legal_basis"] == "contract"
    assert set(sent_event["data"]["address"]) == {"pii"}
    [suppressed_event] = stored_events(events, type="MessageSuppressed", stream_id=suppressed_id)
    assert suppressed_event["data"]["consent"]["event_version"] == withdrawn["version"]
    assert suppressed_event["data"]["consent"]["reason"] == "consent_withdrawn"


def test_the_report_counts_sends_and_suppressions_by_legal_basis_and_source(world: World) -> None:
    sara = world.contact(consents=(), first_name="Sara", email="sara@example.com")
    reza = world.contact(consents=(), first_name="Reza", email="reza@example.com")
    nima = world.contact(consents=(), first_name="Nima", email="nima@example.com")
    put_consent(world, sara["id"], "email", status="granted", legal_basis="contract", source="web_form")
    put_consent(world, reza["id"], "email", status="granted", legal_basis="consent", source="import")
    send_and_dispatch(world, sara["id"])
    send_and_dispatch(world, sara["id"], "Two")
    send_and_dispatch(world, reza["id"])
    send_and_dispatch(world, nima["id"])  # no consent recorded: suppressed, no basis, no source
    put_consent(world, reza["id"], "email", status="withdrawn", source="unsubscribe_link")
    send_and_dispatch(world, reza["id"], "Late")
    world.clock.advance(days=3)
    send_and_dispatch(world, sara["id"], "Outside the period")
    world.messaging.project()

    report = world.get("/v1/reports/consent-proofs?from=2026-03-01&to=2026-03-02")
    assert report.status_code == 200, report.get_json()
    assert report.get_json() == {
        "from": "2026-03-01",
        "to": "2026-03-02",
        "sent": 3,
        "suppressed": 2,
        "by_legal_basis": [
            {"legal_basis": None, "sent": 0, "suppressed": 1},
            {"legal_basis": "consent", "sent": 1, "suppressed": 1},
            {"legal_basis": "contract", "sent": 2, "suppressed": 0},
        ],
        "by_source": [
            {"source": None, "sent": 0, "suppressed": 1},
            {"source": "import", "sent": 1, "suppressed": 0},
            {"source": "unsubscribe_link", "sent": 0, "suppressed": 1},
            {"source": "web_form", "sent": 2, "suppressed": 0},
        ],
        "by_reason": [
            {"reason": "consent_withdrawn", "suppressed": 1},
            {"reason": "no_consent_recorded", "suppressed": 1},
        ],
    }
    later = world.get("/v1/reports/consent-proofs?from=2026-03-05&to=2026-03-05").get_json()
    assert (later["sent"], later["suppressed"]) == (1, 0)
    assert later["by_source"] == [{"source": "web_form", "sent": 1, "suppressed": 0}]


def test_unknown_messages_bad_periods_and_messages_without_a_decision(world: World) -> None:
    unknown = world.get("/v1/messages/no-such-message/consent")
    assert unknown.status_code == 404 and unknown.content_type == "application/problem+json"

    sara = world.contact(first_name="Sara", email="sara@example.com")
    world.clock.now = world.clock.now.replace(hour=0)  # queued, not yet dispatched: no decision yet
    queued = world.send(contact_id=sara["id"], channel="email", body="Hi").get_json()
    pending = world.get(f"/v1/messages/{queued['id']}/consent").get_json()
    assert pending == {
        "message_id": queued["id"],
        "contact_id": sara["id"],
        "channel": "email",
        "status": "queued",
        "consent": None,
    }

    for query, bad in (
        ("", {"from", "to"}),
        ("?from=2026-03-05&to=2026-03-01", {"to"}),
        ("?from=2020-01-01&to=2026-03-01", {"from", "to"}),
        ("?from=x&to=2026-01-01", {"from"}),
    ):
        response = world.get(f"/v1/reports/consent-proofs{query}")
        assert response.status_code == 422, (query, response.get_json())
        assert set(response.get_json()["errors"]) >= bad, (query, response.get_json())
    for edge in ("from=9999-12-31&to=9999-12-31", "from=0001-01-01&to=0001-01-01"):
        empty = world.get(f"/v1/reports/consent-proofs?{edge}")
        assert empty.status_code == 200 and (empty.get_json()["sent"], empty.get_json()["suppressed"]) == (0, 0)


def test_the_proof_outlives_the_persons_erasure_while_the_address_does_not(world: World) -> None:
    sara = world.contact(consents=(), first_name="Sara", email="sara@example.com")
    put_consent(world, sara["id"], "email", status="granted", legal_basis="consent", source="web_form")
    sent_id = send_and_dispatch(world, sara["id"])
    world.desk.erase_contact(sara["id"])  # what LocalContacts does on ContactErased

    assert world.get(f"/v1/messages/{sent_id}").get_json()["address"] is None
    proof = world.get(f"/v1/messages/{sent_id}/consent").get_json()["consent"]
    assert proof["granted"] is True and proof["source"] == "web_form" and proof["legal_basis"] == "consent"


def test_reading_the_proof_needs_what_reading_the_message_needs(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    sent_id = send_and_dispatch(world, sara["id"])
    client = world.messaging.client
    path = f"/v1/messages/{sent_id}/consent"
    assert client.get(path).status_code == 401
    assert client.get(path, headers=world.messaging.headers("messaging:read")).status_code == 200
    assert client.get(path, headers=world.messaging.headers("sales:read")).status_code == 403
    report = "/v1/reports/consent-proofs?from=2026-03-01&to=2026-03-02"
    assert client.get(report, headers=world.messaging.headers("messaging:read")).status_code == 200
    assert client.get(report, headers=world.messaging.headers("sales:read")).status_code == 403
