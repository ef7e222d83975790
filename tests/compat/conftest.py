"""Fixtures for the server compatibility tests: a fresh database or topic per test.

The clients are configured the way the services configure theirs (crmkit.runtime,
crmkit.publisher, crmkit.projector), so a test pins what the code really sends.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from pymongo import MongoClient
from pymongo.database import Database

from crmkit.testing import Servers


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def mongo_client(servers: Servers) -> Iterator[MongoClient]:
    """A client with the options crmkit.runtime.Runtime uses (tz-aware, UTC)."""
    client: MongoClient = MongoClient(
        servers.mongo_url, serverSelectionTimeoutMS=5000, connectTimeoutMS=3000, tz_aware=True, tzinfo=UTC
    )
    yield client
    client.close()


@pytest.fixture
def db(mongo_client: MongoClient) -> Iterator[Database]:
    """A database of this test's own, dropped afterwards."""
    name = unique_name("compat")
    yield mongo_client[name]
    mongo_client.drop_database(name)


@pytest.fixture(scope="session")
def kafka_admin(servers: Servers) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(bootstrap_servers=servers.kafka_bootstrap, client_id="compat-admin")
    yield admin
    admin.close()


@pytest.fixture(scope="session")
def new_topic(kafka_admin: KafkaAdminClient) -> Callable[[int], str]:
    """Creates a topic with a fresh name and `partitions` partitions; returns its name."""

    def create(partitions: int = 3) -> str:
        name = unique_name("compat").replace("_", ".")
        kafka_admin.create_topics([NewTopic(name, partitions, 1)])
        return name

    return create
