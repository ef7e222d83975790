"""Kafka client security from CRM_KAFKA_* (crmkit.config.kafka_client_options), and that every
Kafka client the code builds carries it.

The local broker cannot hold a SCRAM user (tests/compat/test_compat_kafka_security.py says
why), so these tests check the mapping to kafka-python's settings and, with the client
classes replaced by a recorder, what each construction site hands to kafka-python.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from crmkit import config, projector, publisher, runtime, stack, streams
from crmkit.config import KafkaSecurityError, Settings, kafka_client_options
from crmkit.testing import Servers

VARIABLES = (
    "CRM_KAFKA_SECURITY_PROTOCOL",
    "CRM_KAFKA_SASL_MECHANISM",
    "CRM_KAFKA_SASL_USERNAME",
    "CRM_KAFKA_SASL_USERNAME_FILE",
    "CRM_KAFKA_SASL_PASSWORD",
    "CRM_KAFKA_SASL_PASSWORD_FILE",
    "CRM_KAFKA_SSL_CAFILE",
    "CRM_KAFKA_SSL_CERTFILE",
    "CRM_KAFKA_SSL_KEYFILE",
    "CRM_KAFKA_SSL_CHECK_HOSTNAME",
)
SASL = {
    "CRM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "CRM_KAFKA_SASL_USERNAME": "crm-contacts",
    "CRM_KAFKA_SASL_PASSWORD": "s3cret",
}
REPO = Path(config.REPO_ROOT)


@pytest.fixture
def kafka_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set CRM_KAFKA_* security variables on top of none at all."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def put(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return put


@pytest.fixture
def pem(tmp_path: Path) -> Any:
    """A file that exists (the mapping checks existence; kafka-python reads the contents)."""

    def make(name: str) -> str:
        path = tmp_path / name
        path.write_text("-----BEGIN CERTIFICATE-----\n")
        return str(path)

    return make


def test_plaintext_is_the_default(kafka_env: Any) -> None:
    assert kafka_client_options() == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_maps_to_kafka_python_names(kafka_env: Any, pem: Any, tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("from-a-secret\n")
    kafka_env(
        CRM_KAFKA_SECURITY_PROTOCOL="sasl_ssl",
        CRM_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        CRM_KAFKA_SASL_USERNAME="crm-sales",
        CRM_KAFKA_SASL_PASSWORD_FILE=str(password),
        CRM_KAFKA_SSL_CAFILE=pem("ca.crt"),
    )
    assert kafka_client_options() == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "crm-sales",
        "sasl_plain_password": "from-a-secret",
        "ssl_cafile": str(tmp_path / "ca.crt"),
        "ssl_check_hostname": True,
    }


def test_scram_sha_512_is_the_default_mechanism(kafka_env: Any) -> None:
    kafka_env(**SASL)
    assert kafka_client_options()["sasl_mechanism"] == "SCRAM-SHA-512"


def test_mutual_tls_takes_certificate_and_key(kafka_env: Any, pem: Any) -> None:
    kafka_env(
        CRM_KAFKA_SECURITY_PROTOCOL="SSL",
        CRM_KAFKA_SSL_CAFILE=pem("ca.crt"),
        CRM_KAFKA_SSL_CERTFILE=pem("user.crt"),
        CRM_KAFKA_SSL_KEYFILE=pem("user.key"),
        CRM_KAFKA_SSL_CHECK_HOSTNAME="false",
    )
    options = kafka_client_options()
    assert options["security_protocol"] == "SSL"
    assert {options["ssl_cafile"], options["ssl_certfile"], options["ssl_keyfile"]} == {
        pem("ca.crt"),
        pem("user.crt"),
        pem("user.key"),
    }
    assert options["ssl_check_hostname"] is False
    assert not any(key.startswith("sasl_") for key in options)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"CRM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "CRM_KAFKA_SECURITY_PROTOCOL"),
        ({**SASL, "CRM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "CRM_KAFKA_SASL_MECHANISM"),
        ({"CRM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CRM_KAFKA_SASL_PASSWORD": "x"}, "CRM_KAFKA_SASL_USERNAME"),
        ({"CRM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CRM_KAFKA_SASL_USERNAME": "u"}, "CRM_KAFKA_SASL_PASSWORD"),
        ({**SASL, "CRM_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/password"}, "CRM_KAFKA_SASL_PASSWORD"),
        (
            {**SASL, "CRM_KAFKA_SASL_PASSWORD": "", "CRM_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/password"},
            "CRM_KAFKA_SASL_PASSWORD_FILE",
        ),
        ({"CRM_KAFKA_SECURITY_PROTOCOL": "SSL", "CRM_KAFKA_SSL_CAFILE": "/nonexistent/ca.crt"}, "CRM_KAFKA_SSL_CAFILE"),
        (
            {"CRM_KAFKA_SECURITY_PROTOCOL": "SSL", "CRM_KAFKA_SSL_CHECK_HOSTNAME": "maybe"},
            "CRM_KAFKA_SSL_CHECK_HOSTNAME",
        ),
        # credentials a protocol would ignore: the deployment would believe it is protected
        ({"CRM_KAFKA_SASL_USERNAME": "u", "CRM_KAFKA_SASL_PASSWORD": "x"}, "CRM_KAFKA_SASL_USERNAME"),
        ({"CRM_KAFKA_SECURITY_PROTOCOL": "SSL", "CRM_KAFKA_SASL_MECHANISM": "PLAIN"}, "CRM_KAFKA_SASL_MECHANISM"),
        ({**SASL, "CRM_KAFKA_SSL_CAFILE": "/etc/hosts"}, "CRM_KAFKA_SSL_CAFILE"),
    ],
)
def test_a_setting_that_cannot_work_is_refused_naming_its_variable(
    kafka_env: Any, values: dict[str, str], named: str
) -> None:
    kafka_env(**values)
    with pytest.raises(KafkaSecurityError, match=named):
        kafka_client_options()


def test_a_password_both_inline_and_from_a_file_is_refused(kafka_env: Any, pem: Any) -> None:
    kafka_env(**SASL, CRM_KAFKA_SASL_PASSWORD_FILE=pem("password"))
    with pytest.raises(KafkaSecurityError, match="CRM_KAFKA_SASL_PASSWORD and CRM_KAFKA_SASL_PASSWORD_FILE"):
        kafka_client_options()


def test_a_certificate_without_its_key_is_refused(kafka_env: Any, pem: Any) -> None:
    kafka_env(CRM_KAFKA_SECURITY_PROTOCOL="SSL", CRM_KAFKA_SSL_CERTFILE=pem("user.crt"))
    with pytest.raises(KafkaSecurityError, match="CRM_KAFKA_SSL_KEYFILE"):
        kafka_client_options()


def test_a_process_with_a_bad_setting_stops_at_start(
    kafka_env: Any, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runtime is what every process (api, grpc, worker, crm replay/rebuild) builds first."""
    monkeypatch.setenv("CRM_MONGO_URL", servers.mongo_url)
    kafka_env(CRM_KAFKA_SECURITY_PROTOCOL="SASL_SSL", CRM_KAFKA_SASL_USERNAME="crm-contacts")
    with pytest.raises(KafkaSecurityError, match="CRM_KAFKA_SASL_PASSWORD"):
        runtime.Runtime(Settings.for_service("widgets", http=1, grpc=2, metrics=3))


class Recorder:
    """Stands in for KafkaProducer/KafkaConsumer/KafkaAdminClient: keeps the settings, talks to no one."""

    built: list[dict[str, Any]] = []

    def __init__(self, *topics: str, **config: Any) -> None:
        Recorder.built.append(config)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set()

    def topics(self) -> set[str]:
        return set()

    def list_topics(self) -> list[str]:
        return []

    def create_topics(self, topics: list[Any]) -> None:
        return None

    def end_offsets(self, partitions: list[Any]) -> dict[Any, int]:
        return {}

    def close(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Projection:
    name = "probe"
    topics = ["crm.sales.events"]


def test_every_client_the_chassis_builds_carries_the_security_settings(
    kafka_env: Any, monkeypatch: pytest.MonkeyPatch, db: Database, servers: Servers
) -> None:
    kafka_env(**SASL)
    monkeypatch.setenv("CRM_MONGO_URL", servers.mongo_url)
    for module, name in (
        (publisher, "KafkaProducer"),
        (projector, "KafkaConsumer"),
        (runtime, "KafkaConsumer"),
        (streams, "KafkaConsumer"),
        (stack, "KafkaConsumer"),
        (stack, "KafkaAdminClient"),
    ):
        monkeypatch.setattr(module, name, Recorder)
    Recorder.built = []

    publisher.make_producer("broker:9093", "crm-contacts-1")  # the outbox
    projector.ProjectorRunner("contacts", _Projection(), "broker:9093", lambda events: events, db=db)  # projections
    list(projector.read_topics("broker:9093", ["crm.sales.events"]))  # crm rebuild
    process = runtime.Runtime(Settings.for_service("widgets", http=1, grpc=2, metrics=3))
    process._cluster_topics()  # readiness
    process.close()
    with pytest.raises(SystemExit):
        streams.tail("broker:9093", "crm.sales.events", from_beginning=True, event_type=None, out=None)  # crm tail
    stack.ensure_topics("broker:9093", ["crm.sales.events"])  # crm up against a real cluster
    stack.topic_is_empty("broker:9093", "crm.sales.events")

    assert len(Recorder.built) == 7
    expected = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "crm-contacts",
        "sasl_plain_password": "s3cret",
    }
    for settings in Recorder.built:
        assert expected.items() <= settings.items()


def _kafka_clients_built(path: Path) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("KafkaProducer", "KafkaConsumer", "KafkaAdminClient")
    ]


def _passes_security(call: ast.Call) -> bool:
    return any(
        keyword.arg is None
        and isinstance(keyword.value, ast.Call)
        and getattr(keyword.value.func, "id", None) == "kafka_client_options"
        for keyword in call.keywords
    )


def test_no_kafka_client_in_the_code_is_built_without_the_security_settings() -> None:
    """A client added later without `**kafka_client_options()` would talk plaintext to a secured cluster."""
    sources = [*(REPO / "libs" / "crmkit" / "crmkit").rglob("*.py"), *REPO.glob("services/*/crm_*/**/*.py")]
    built = [(path, call) for path in sources for call in _kafka_clients_built(path)]
    assert len(built) >= 7
    assert [f"{path.relative_to(REPO)}:{call.lineno}" for path, call in built if not _passes_security(call)] == []
