"""The newcomer's path through `crm up` (what `make run` runs), over real sockets.

Start the whole stack on free ports, create a contact with the printed admin token, see
the CloudEvent with a plain kafka-python consumer, get the contact over gRPC, find it in
the list once the worker has projected it; stop with SIGTERM; start again on the same
data directory and find everything still there and replayed to the fresh broker.
"""

import json
import urllib.request
from pathlib import Path

import grpc
import pytest
from kafka import KafkaConsumer

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crmkit import rpc
from crmkit.testing import wait_until

from .conftest import SERVICES, LocalStack

pytestmark = pytest.mark.e2e


def contact_events(crm: LocalStack) -> list[dict]:
    consumer = KafkaConsumer(
        "crm.contacts.events", bootstrap_servers=crm.kafka, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    try:
        return [json.loads(message.value) for message in consumer]
    finally:
        consumer.close()


def test_newcomer_creates_a_contact_and_sees_it_everywhere_and_after_a_restart(tmp_path: Path) -> None:
    crm = LocalStack(tmp_path)
    crm.start()
    try:
        for service in SERVICES:
            assert crm.call(service, "GET", "/healthz", auth=False)[0] == 200
        sara = crm.ok("contacts", "POST", "/v1/contacts", {"first_name": "سارا", "email": "sara@example.com"}, 201)

        created = wait_until(lambda: [e for e in contact_events(crm) if e["subject"] == sara["id"]], what="the event")
        assert created[0]["type"] == "crm.contacts.ContactCreated.v1"
        assert set(created[0]["data"]["first_name"]) == {"pii"}  # personal fields travel encrypted
        assert "سارا" not in json.dumps(created, ensure_ascii=False)

        target = f"127.0.0.1:{crm.grpc_ports['contacts']}"
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as anonymous:
            contacts_pb2_grpc.ContactDirectoryStub(channel).GetContact(  # gRPC answers nobody without a token
                contacts_pb2.GetContactRequest(contact_id=sara["id"]), timeout=5
            )
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with rpc.token_channel(target, crm.token) as channel:
            stub = contacts_pb2_grpc.ContactDirectoryStub(channel)
            found = stub.GetContact(contacts_pb2.GetContactRequest(contact_id=sara["id"]), timeout=5)
        assert found.first_name == "سارا" and found.email == "sara@example.com"

        wait_until(
            lambda: crm.call("contacts", "GET", "/v1/contacts?q=sara")[1]["items"], what="the worker's projection"
        )
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{crm.ports['contacts']}/metrics", timeout=5).read()
        assert b"crm_http_request_duration_seconds_bucket" in metrics
    finally:
        assert crm.stop() == 0
    assert "stack stopped" in crm.output.read_text()

    crm.start()  # same data directory, a fresh memory-only broker
    try:
        again = crm.ok("contacts", "GET", f"/v1/contacts/{sara['id']}")
        assert again["email"] == "sara@example.com"
        replayed = wait_until(lambda: [e for e in contact_events(crm) if e["subject"] == sara["id"]], what="the replay")
        assert [e["id"] for e in replayed] == [created[0]["id"]]
    finally:
        assert crm.stop() == 0
