"""What the end-to-end tests share: the whole stack, started the way a newcomer starts it."""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crmkit import stack
from crmkit.testing import grpc_serving, wait_until

SERVICES = {"contacts": "CONTACTS", "sales": "SALES", "service-desk": "SERVICEDESK", "messaging": "MESSAGING"}


class LocalStack:
    """`crm up` as a subprocess on free ports: every service's HTTP, gRPC and metrics ports,
    the SMTP sink, the support mailbox (inbound SMTP), Kafka and MongoDB, with its data under
    `home`. `start()` may be called again after `stop()`: same ports, same data (a restart)."""

    def __init__(self, home: Path, extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        self.clock_file = home / "clock-offset"
        self.ports: dict[str, int] = {
            "kafka": stack.free_port(),
            "mongo": stack.free_port(),
            "smtp": stack.free_port(),
            "inbound_smtp": stack.free_port(),
        }
        self.grpc_ports: dict[str, int] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
        self.env.update(
            {
                "CRM_DATA_DIR": str(home),
                "CRM_KAFKA_PORT": str(self.ports["kafka"]),
                "CRM_MONGO_PORT": str(self.ports["mongo"]),
                "CRM_MESSAGING_SMTP_PORT": str(self.ports["smtp"]),
                "CRM_SERVICEDESK_INBOUND_SMTP_PORT": str(self.ports["inbound_smtp"]),  # the support mailbox
                "CRM_API_WORKERS": "1",
                "CRM_TOPIC_PARTITIONS": "1",
                "CRM_LOG_LEVEL": "WARNING",
                "CRM_CLOCK_FILE": str(self.clock_file),
                **(extra_env or {}),
            }
        )
        for service, key in SERVICES.items():
            http, grpc_port, metrics = stack.free_port(), stack.free_port(), stack.free_port()
            while metrics + 1 in self.ports.values():
                metrics = stack.free_port()
            self.ports[service] = http
            self.grpc_ports[service] = grpc_port
            self.env.update(
                {
                    f"CRM_{key}_HTTP_PORT": str(http),
                    f"CRM_{key}_GRPC_PORT": str(grpc_port),
                    f"CRM_{key}_METRICS_PORT": str(metrics),
                }
            )
        self.env["CRM_SURVEY_URL_BASE"] = f"http://127.0.0.1:{self.ports['service-desk']}"
        self.env["CRM_DETAILS_URL_BASE"] = f"http://127.0.0.1:{self.ports['contacts']}"
        self.output = home / "crm-up.out"
        self.process: subprocess.Popen | None = None
        self.token = ""

    def start(self) -> None:
        with open(self.output, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "crmkit.cli", "up"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            self._wait_until_serving()
        except BaseException:  # a stack that never came up is stopped (crm up stops what it started), not left running
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.process.kill()
            raise

    def _wait_until_serving(self) -> None:
        printed = wait_until(
            lambda: "Ctrl-C" in self.output.read_text() and self.output.read_text(),
            timeout=90,
            what="crm up to print its banner",
        )
        lines = printed.splitlines()
        self.token = lines[lines.index("Admin token (12h):") + 1].strip()
        for service in SERVICES:  # generous: on a busy 2-core machine all four took ~2 min to come up
            wait_until(
                lambda s=service: self.call(s, "GET", "/readyz")[0] == 200, timeout=180, what=f"{service} to be ready"
            )
            wait_until(
                lambda p=self.grpc_ports[service]: grpc_serving(f"127.0.0.1:{p}"),
                timeout=120,
                what=f"{service}'s gRPC server (services call each other) to serve",
            )

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=90)

    @property
    def kafka(self) -> str:
        return f"127.0.0.1:{self.ports['kafka']}"

    def move_clock(self, seconds: float) -> None:
        temporary = self.clock_file.with_suffix(".tmp")
        temporary.write_text(f"{seconds}\n")
        temporary.replace(self.clock_file)

    def call(
        self,
        service: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: bool = True,
        form: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports[service]}{path}", data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, _decode(response.read(), response.headers.get_content_type())
        except urllib.error.HTTPError as error:
            return error.code, _decode(error.read(), error.headers.get_content_type())
        except OSError:
            return 0, None

    def ok(self, service: str, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        code, answer = self.call(service, method, path, body)
        assert code == status, (method, path, code, answer)
        return answer

    def mails(self) -> list[email.message.EmailMessage]:
        folder = self.home / "messaging" / "mail"
        return (
            [
                email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
                for p in sorted(folder.glob("*.eml"))
            ]
            if folder.exists()
            else []
        )


@pytest.fixture(scope="session")
def crm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One `crm up` on the defaults for every end-to-end test that needs nothing else: a stack takes
    about a minute to come up on 2 cores, and the suite must fit CI's budget. Tests that share it
    make their own records and never assume an empty store; one that needs other settings, a
    restart or a moved clock starts its own LocalStack. One default is shortened: contacts' timer
    pass (lifecycle and freshness) runs every 10 s, not 60, so a test waiting for a record to go
    stale waits for the record, not for the next pass."""
    shared = LocalStack(tmp_path_factory.mktemp("shared-stack"), {"CRM_CONTACTS_LIFECYCLE_INTERVAL_SECONDS": "10"})
    shared.start()
    SHARED.append(shared)
    try:
        yield shared
    finally:
        assert shared.stop() == 0, shared.output.read_text()[-3000:]


SHARED: list[LocalStack] = []


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the last end-to-end test, stop the shared stack at once rather than at the session's
    end: its idle workers would take a core's worth of CPU from the suites that run after it."""
    if SHARED and (nextitem is None or Path(__file__).parent not in Path(nextitem.path).parents):
        SHARED.pop().stop()


def _decode(raw: bytes, content_type: str) -> Any:
    if "json" in content_type:
        return json.loads(raw or b"{}")
    return raw.decode("utf-8", "replace")
