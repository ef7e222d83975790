"""Pytest fixtures every service's tests share (loaded by the root conftest.py).

The session starts its own Kafka-protocol and MongoDB-protocol servers on free ports,
so `make test` runs beside a running `make run`. Each test that asks for `service_env`
gets its own database and topic, so tests never see each other's data.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from crmkit import auth, keys, rpc, stack
from crmkit.config import slug
from crmkit.events import new_id
from crmkit.eventstore import EventStore
from crmkit.service import ServiceSpec

T = TypeVar("T")


@dataclass(frozen=True)
class Servers:
    kafka_bootstrap: str
    mongo_url: str
    data_dir: Path
    kafka_process: subprocess.Popen[bytes]
    mongo_process: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    home = tmp_path_factory.mktemp("crm-var")
    kafka_port, mongo_port = stack.free_port(), stack.free_port()
    kafka = stack.start_kafka(kafka_port, home / "log")
    mongo = stack.start_mongo(mongo_port, home / "mongo", home / "log")
    yield Servers(f"127.0.0.1:{kafka_port}", f"mongodb://127.0.0.1:{mongo_port}", home, kafka, mongo)
    stack.stop_process(kafka)
    stack.stop_process(mongo)


@pytest.fixture
def service_env(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Point every service at the test servers, with a database and topic of this test's own."""
    suffix = new_id().replace("-", "")[-12:]
    env = {
        "CRM_KAFKA_BOOTSTRAP": servers.kafka_bootstrap,
        "CRM_MONGO_URL": servers.mongo_url,
        "CRM_DATA_DIR": str(servers.data_dir),
        "CRM_JWT_SECRET": "test-secret-for-hs256-" + suffix,
        "CRM_TEST_SUFFIX": suffix,
        "CRM_KAFKA_GROUP_PREFIX": f"t{suffix}",  # worker processes of different tests never share a group
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env


def isolate(monkeypatch: pytest.MonkeyPatch, service: str, suffix: str) -> None:
    """Give `service` a database and topic named for this test."""
    compact = slug(service)
    key = compact.upper()
    monkeypatch.setenv(f"CRM_{key}_DATABASE", f"t_{compact}_{suffix}")
    monkeypatch.setenv(f"CRM_{key}_TOPIC", f"t.{compact}.{suffix}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the servers, so `make unit` can skip them."""
    for item in items:
        if "servers" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.servers)


def pytest_configure() -> None:
    os.environ.setdefault("CRM_LOG_LEVEL", "WARNING")
    os.environ["CRM_STRICT_EVENTS"] = "1"  # every event a test emits must match the catalogue
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ... under `pytest -n N`
    if worker:
        count = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
        stack.LISTEN_PORTS = share_of(stack.LISTEN_PORTS, int(worker.removeprefix("gw")), count)


def share_of(ports: range, index: int, count: int) -> range:
    """Test worker `index`'s own slice of `ports`, one of `count`. Workers start servers side by
    side, and a port one worker has chosen for a stack still starting looks free to the other
    (`stack.free_port` remembers only its own process's choices): two stacks then fight for it."""
    size = len(ports) // count
    return range(ports.start + index * size, ports.start + (index + 1) * size)


class ServiceHarness:
    """One service wired to the test servers: a Flask test client plus its runtime.

    `project()` runs the service's projections over everything stored, the way the
    worker would, so list/search tests need not wait for Kafka.
    """

    def __init__(self, spec: ServiceSpec) -> None:
        from crmkit.web import create_app

        self.spec = spec
        self.runtime = spec.runtime()
        spec.prepare(self.runtime)
        stack.ensure_topics(self.runtime.settings.kafka_bootstrap, [self.runtime.settings.topic])
        self.app = create_app(
            self.runtime, spec.blueprints(self.runtime), title=spec.title, description=spec.description
        )
        self.client = self.app.test_client()

    def headers(self, *roles: str, subject: str = "tester", team: str | None = None, **extra: str) -> dict[str, str]:
        """A bearer token with `roles` (admin when none), and a `team` claim when given."""
        token = auth.issue(os.environ["CRM_JWT_SECRET"], subject, list(roles or ["admin"]), team=team)
        return {"Authorization": f"Bearer {token}", **extra}

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *roles: str,
        team: str | None = None,
        status: int = 200,
        **query: Any,
    ) -> Any:
        """`method path` with a JSON `body` and `query`, as a token with `roles` (admin when none) and
        `team`; asserts the answer's `status` (its body is the failure message) and returns its JSON."""
        headers = self.headers(*roles, team=team)
        response = self.client.open(path, method=method, json=body, query_string=query or None, headers=headers)
        assert response.status_code == status, response.get_data(as_text=True)
        return response.get_json()

    def project(self) -> None:
        projections = self.spec.projections(self.runtime)
        for batch in self.runtime.store.scan():
            for projection in projections:
                projection.handle(batch)

    def close(self) -> None:
        self.runtime.close()


@contextlib.contextmanager
def harness(spec: ServiceSpec, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Iterator[ServiceHarness]:
    """A harness for `spec` with a database and topic of this test's own; its calls to other
    services speak for `spec` (the last harness made in a test decides)."""
    isolate(monkeypatch, spec.name, env["CRM_TEST_SUFFIX"])
    monkeypatch.setenv("CRM_SERVICE_NAME", spec.name)
    subject = ServiceHarness(spec)
    try:
        yield subject
    finally:
        subject.close()


def wait_until(
    check: Callable[[], T],
    timeout: float = 30.0,
    what: str = "condition",
    *,
    interval: float = 0.05,
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds.

    For effects that happen asynchronously (Kafka, a worker): the test waits for the
    outcome itself, never for a fixed amount of time.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {result!r}")
        time.sleep(interval)


def start_service_process(
    service: str, process: str, env: dict[str, str], log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Run one real process of a service (`crm serve SERVICE PROCESS`) with `env` on top of ours;
    its output goes to `log` (appended) when given, else to ours."""
    argv = [sys.executable, "-m", "crmkit.cli", "serve", service, process]
    if log is None:
        return subprocess.Popen(argv, env={**os.environ, **env})
    with open(log, "ab") as output:
        return subprocess.Popen(argv, env={**os.environ, **env}, stdout=output, stderr=subprocess.STDOUT)


def grpc_serving(target: str) -> bool:
    """Whether the gRPC server at `target` answers grpc.health.v1 with SERVING (False while it starts)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            # types-grpcio-health-checking's HealthStub declares no methods; grpcio's has Check
            reply: health_pb2.HealthCheckResponse = stub.Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def stored_events_match_published_schemas(store: EventStore, docs: Path) -> set[str]:
    """Check every stored event, as it goes on the wire (sealed), against docs/events.

    Returns the event types seen; an event without a published schema or one that breaks
    it fails the test with the type and the errors.
    """
    from jsonschema import Draft202012Validator

    seen: set[str] = set()
    for batch in store.scan(sealed=True):
        for event in batch:
            path = docs / event.service / f"{event.type}.v{event.schema_version}.schema.json"
            assert path.exists(), f"{event.full_type} has no published schema: run `make catalogue`"
            schema = json.loads(path.read_text())
            errors = [e.message for e in Draft202012Validator(schema).iter_errors(json.loads(event.to_bytes()))]
            assert errors == [], (event.full_type, errors)
            seen.add(event.type)
    return seen


def stored_events(collection: Any, query: dict[str, Any] | None = None, **match: Any) -> list[dict[str, Any]]:
    """Events exactly as stored (sealed), one dict each: the fields of their commit (stream,
    time, actor, causation, published...) with the event's own (event_id, type, data, version).

    `query` selects commits on the server (commit fields only); `match` keeps the events whose
    field equals the value given (e.g. `type="MessageSent"`). For tests that look under the API.
    """
    found = []
    for commit in collection.find(query or {}).sort("_id", 1):
        for offset, event in enumerate(commit.get("events") or [commit]):  # a document from before commits
            unfolded = {
                **{k: v for k, v in commit.items() if k != "events"},
                **event,
                "version": commit["version"] + offset,
            }
            if all(unfolded.get(name) == value for name, value in match.items()):
                found.append(unfolded)
    return found


def grpc_channel(target: str, *roles: str, audience: str = "crm") -> grpc.Channel:
    """A channel to the gRPC server at `target` whose calls carry a test token with `roles` (default admin)."""
    token = auth.issue(os.environ["CRM_JWT_SECRET"], "tester", list(roles or ["admin"]), audience=audience)
    return rpc.token_channel(target, token)


def production_secrets(service: str) -> dict[str, str]:
    """Fresh keys for `service` as a deployment's Secrets give them (crmkit.profile): a token
    key ring, its own service key, every service's public key, a link secret and a Kafka login."""
    credentials = keys.new_service_credentials(sorted(auth.SERVICE_GRANTS))
    ring = {"signing": "k1", "keys": {"k1": {"secret": secrets.token_urlsafe(48), "created": "2026-01-01T00:00:00"}}}
    return {
        "CRM_JWT_KEYS": json.dumps(ring),
        "CRM_SERVICE_KEY": credentials[service][0],
        "CRM_SERVICE_PUBLIC_KEYS": json.dumps({name: public for name, (_, public) in credentials.items()}),
        "CRM_LINK_SECRET": secrets.token_urlsafe(48),
        "CRM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CRM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "CRM_KAFKA_SASL_USERNAME": f"crm-{service}",
        "CRM_KAFKA_SASL_PASSWORD": secrets.token_urlsafe(24),
    }
