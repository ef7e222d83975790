"""ExportContactRecords: a person's messages, each with the proof of the consent its send
relied on (what GET /v1/messages/{id}/consent answers), for their export (contacts asks).
Against the real servicer and gRPC server (auth included), with contacts and messaging
running; a message not projected yet is found through the dispatcher's schedule.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from crm.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from crm_messaging.grpc_api import register
from crmkit import auth, keys, rpc, stack

from .conftest import World


@pytest.fixture
def target(world: World) -> Iterator[str]:
    port = stack.free_port()
    server, _ = rpc.build_server("messaging", port, lambda srv: register(srv, world.desk))
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def export(target: str, contact_ids: list[str], *roles: str, token: str | None = None) -> dict:
    token = token or auth.issue(keys.ring(), "dpo", list(roles or ["messaging:export"]))
    with rpc.token_channel(target, token) as channel:
        reply = messaging_pb2_grpc.MessageStatusStub(channel).ExportContactRecords(
            messaging_pb2.ExportContactRecordsRequest(contact_ids=contact_ids), timeout=10
        )
    return json.loads(reply.records_json)


def test_the_export_holds_the_persons_messages_with_their_consent_proofs(world: World, target: str) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    other = world.contact(first_name="Omid", email="omid@example.com")
    sent = world.send(contact_id=sara["id"], channel="email", subject="سلام", body="Hello Sara").get_json()
    world.send(contact_id=other["id"], channel="email", body="Not hers")
    world.dispatch()
    world.messaging.project()
    waiting = world.send(contact_id=sara["id"], channel="email", body="Not sent yet").get_json()  # not projected

    records = export(target, [sara["id"]])

    assert [m["id"] for m in records["messages"]] == [sent["id"], waiting["id"]]
    first, second = records["messages"]
    assert (first["status"], first["subject"]) == ("sent", "سلام") and first["body"].startswith("Hello Sara")
    assert first["consent_proof"] == world.get(f"/v1/messages/{sent['id']}/consent").get_json()
    assert first["consent_proof"]["consent"]["granted"] is True and first["consent_proof"]["consent"]["event_id"]
    assert second["status"] == "queued" and second["consent_proof"]["consent"] is None


def test_an_unknown_contact_has_no_messages(world: World, target: str) -> None:
    assert export(target, ["nobody"]) == {"messages": []}


def test_the_export_needs_the_export_role(world: World, target: str) -> None:
    for roles in (["messaging:read"], ["messaging:write"], ["contacts:export"]):
        with pytest.raises(grpc.RpcError) as refused:
            export(target, ["nobody"], *roles)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "messaging:export" in refused.value.details()
    contacts_service = auth.service_token("contacts", keys.own_key("contacts"), "messaging")
    assert export(target, ["nobody"], token=contacts_service) == {"messages": []}
    with pytest.raises(grpc.RpcError) as bad:
        export(target, [""], "admin")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
