"""SASL/SCRAM against the local stand-in: how far Tansu can pin crmkit.config.kafka_client_options.

Tansu 0.6 authenticates SCRAM-SHA-512 (`broker --authentication`), but keeps its users in
its storage, and creating one (`tansu user create`, i.e. AlterUserScramCredentials) itself
needs an authenticated client: a memory-only broker can never hold a user. So a login that
succeeds cannot run here (on real Kafka it is what the Kubernetes manifests do, docs/operations.md
"Kafka security"). What can run, and must also hold on real Kafka:

- a client without a login gets nothing from a broker that demands one;
- a client built from CRM_KAFKA_* speaks SCRAM-SHA-512 with the broker, and a password the
  broker does not accept is refused at the proof (RFC 5802: the server's final message is
  `e=<reason>` instead of the `v=` signature), so the client never gets metadata.

The option mapping itself, and that every client the code builds carries it, are unit tests:
libs/crmkit/tests/test_crmkit_kafka_security.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.net.sasl import scram

from crmkit import stack
from crmkit.config import kafka_client_options

REFUSED_WITHIN_MS = 3000  # how long a client keeps trying to bootstrap before it gives up
pytestmark = pytest.mark.servers  # starts a broker of its own (with --authentication)


@pytest.fixture(scope="module")
def authenticating_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = stack.free_port()
    process = stack.start_kafka(port, tmp_path_factory.mktemp("sasl"), authentication=True)
    yield f"127.0.0.1:{port}"
    stack.stop_process(process)


def cluster_topics(bootstrap: str) -> set[str]:
    """Metadata as the readiness probe asks for it, with the process's CRM_KAFKA_* settings."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="compat-sasl",
        allow_auto_create_topics=False,
        bootstrap_timeout_ms=REFUSED_WITHIN_MS,
        request_timeout_ms=REFUSED_WITHIN_MS,
        **kafka_client_options(),
    )
    try:
        return consumer.topics()
    finally:
        consumer.close()


@pytest.fixture
def server_verdicts(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The SCRAM server-final messages the client receives (`v=…` accepted, `e=…` refused)."""
    seen: list[bytes] = []
    original = scram.ScramClient.process_server_final_message

    def record(self: Any, message: bytes) -> Any:
        seen.append(message)
        return original(self, message)

    monkeypatch.setattr(scram.ScramClient, "process_server_final_message", record)
    return seen


def test_a_client_without_a_login_gets_nothing(authenticating_broker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_KAFKA_SECURITY_PROTOCOL", raising=False)
    with pytest.raises(KafkaError):
        cluster_topics(authenticating_broker)


def test_a_wrong_password_is_refused_at_the_scram_proof(
    authenticating_broker: str, server_verdicts: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("CRM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CRM_KAFKA_SASL_USERNAME", "crm-contacts")
    monkeypatch.setenv("CRM_KAFKA_SASL_PASSWORD", "not-the-password")
    with pytest.raises(KafkaError):
        cluster_topics(authenticating_broker)
    assert server_verdicts, "the client never reached the end of a SCRAM exchange"
    assert all(verdict.startswith(b"e=") for verdict in server_verdicts), server_verdicts
