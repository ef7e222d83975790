"""Pytest fixtures every service's tests share (loaded by the root conftest.py).

The session starts its own Kafka-protocol and MongoDB-protocol servers on free ports,
so `make test` runs beside a running `make run`. Each test that asks for `service_env`
gets its own database and topic, so tests never see each other's data.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crmkit import stack
from crmkit.events import new_id


@dataclass(frozen=True)
class Servers:
    kafka_bootstrap: str
    mongo_url: str
    data_dir: Path
    kafka_process: subprocess.Popen
    mongo_process: subprocess.Popen


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
        "CRM_JWT_SECRET": "test-secret-" + suffix,
        "CRM_TEST_SUFFIX": suffix,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env


def isolate(monkeypatch: pytest.MonkeyPatch, service: str, suffix: str) -> None:
    """Give `service` a database and topic named for this test."""
    key = service.upper().replace("-", "")
    compact = service.replace("-", "")
    monkeypatch.setenv(f"CRM_{key}_DATABASE", f"t_{compact}_{suffix}")
    monkeypatch.setenv(f"CRM_{key}_TOPIC", f"t.{compact}.{suffix}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the servers, so `make unit` can skip them."""
    for item in items:
        if "servers" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.servers)


def pytest_configure() -> None:
    os.environ.setdefault("CRM_LOG_LEVEL", "WARNING")
