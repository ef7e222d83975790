"""The newcomer's path through `crm up` (what `make run` runs), over real sockets.

Start the stack on free ports, create a contact with the printed admin token, see the
CloudEvent with a plain kafka-python consumer, get the contact over gRPC, find it in
the list once the worker has projected it; stop with SIGTERM; start again on the same
data directory and find everything still there and replayed to the fresh broker.
"""

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from kafka import KafkaConsumer

from crm.contacts.v1 import contacts_pb2, contacts_pb2_grpc
from crmkit import stack
from crmkit.testing import wait_until

pytestmark = pytest.mark.e2e


class Stack:
    def __init__(self, home: Path) -> None:
        self.ports = {name: stack.free_port() for name in ("kafka", "mongo", "http", "grpc", "metrics")}
        self.ports["grpc_metrics"] = self.ports["metrics"] + 1
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
        self.env.update({
            "CRM_DATA_DIR": str(home),
            "CRM_KAFKA_PORT": str(self.ports["kafka"]),
            "CRM_MONGO_PORT": str(self.ports["mongo"]),
            "CRM_CONTACTS_HTTP_PORT": str(self.ports["http"]),
            "CRM_CONTACTS_GRPC_PORT": str(self.ports["grpc"]),
            "CRM_CONTACTS_METRICS_PORT": str(self.ports["metrics"]),
            "CRM_API_WORKERS": "1",
        })
        self.process: subprocess.Popen | None = None
        self.output: Path = home / "crm-up.out"

    def start(self) -> str:
        """Start `crm up`; return the admin token it prints."""
        with open(self.output, "w") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "crmkit.cli", "up"], env=self.env,
                                            stdout=out, stderr=subprocess.STDOUT)
        printed = wait_until(lambda: "Ctrl-C" in self.output.read_text() and self.output.read_text(),
                             timeout=60, what="crm up to print its banner")
        lines = printed.splitlines()
        token = lines[lines.index("Admin token (12h):") + 1].strip()
        wait_until(lambda: self.get("/readyz")[0] == 200, timeout=60, what="the api to be ready")
        return token

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=90)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports['http']}{path}"

    def get(self, path: str, token: str | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(self.url(path))
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        return self._send(request)

    def post(self, path: str, body: dict, token: str) -> tuple[int, dict]:
        request = urllib.request.Request(self.url(path), data=json.dumps(body).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
        return self._send(request)

    @staticmethod
    def _send(request: urllib.request.Request) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")
        except OSError:
            return 0, {}

    def events(self) -> list[dict]:
        consumer = KafkaConsumer("crm.contacts.events", bootstrap_servers=f"127.0.0.1:{self.ports['kafka']}",
                                 auto_offset_reset="earliest", consumer_timeout_ms=3000)
        try:
            return [json.loads(message.value) for message in consumer]
        finally:
            consumer.close()


def test_newcomer_creates_a_contact_and_sees_it_everywhere_and_after_a_restart(tmp_path: Path) -> None:
    crm = Stack(tmp_path)
    token = crm.start()
    try:
        status, sara = crm.post("/v1/contacts", {"first_name": "سارا", "email": "sara@example.com"}, token)
        assert status == 201, sara

        created = wait_until(lambda: [e for e in crm.events() if e["subject"] == sara["id"]], what="the event")
        assert created[0]["type"] == "crm.contacts.ContactCreated.v1"
        assert set(created[0]["data"]["first_name"]) == {"pii"}  # personal fields travel encrypted
        assert "سارا" not in json.dumps(created, ensure_ascii=False)

        with grpc.insecure_channel(f"127.0.0.1:{crm.ports['grpc']}") as channel:
            stub = contacts_pb2_grpc.ContactDirectoryStub(channel)
            found = stub.GetContact(contacts_pb2.GetContactRequest(contact_id=sara["id"]), timeout=5)
        assert found.first_name == "سارا" and found.email == "sara@example.com"

        wait_until(lambda: crm.get("/v1/contacts?q=sara", token)[1].get("items"), what="the worker's projection")
        metrics = urllib.request.urlopen(crm.url("/metrics"), timeout=5).read().decode()
        assert "crm_http_request_duration_seconds_bucket" in metrics
    finally:
        assert crm.stop() == 0
    assert "stack stopped" in crm.output.read_text()

    token = crm.start()  # same data directory, a fresh memory-only broker
    try:
        status, again = crm.get(f"/v1/contacts/{sara['id']}", token)
        assert status == 200 and again["email"] == "sara@example.com"
        replayed = wait_until(lambda: [e for e in crm.events() if e["subject"] == sara["id"]], what="the replay")
        assert [e["id"] for e in replayed] == [created[0]["id"]]
    finally:
        assert crm.stop() == 0
