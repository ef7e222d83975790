"""Typed settings (crmkit.settings): every bad variable named at once, built again only when one moves."""

from __future__ import annotations

import pytest

from crmkit.config import Ports, ProjectionPolicy, Settings, topic_of
from crmkit.service import ServiceSpec, configured
from crmkit.settings import ChassisSettings, Credentials, Current, Env, LocalStack, SettingsError, chassis, load


def test_defaults_when_nothing_is_set() -> None:
    knobs = load(ChassisSettings.read, {})
    assert (knobs.projector_batch, knobs.rate_limit_per_minute, knobs.grpc_bind, knobs.grpc_max_streams) == (
        500,
        60_000,
        "127.0.0.1",
        None,
    )
    assert (knobs.api_workers, knobs.api_threads, knobs.strict_events) == (2, 4, False)


def test_every_bad_variable_is_named_not_only_the_first() -> None:
    with pytest.raises(SettingsError) as caught:
        load(
            ChassisSettings.read,
            {
                "CRM_PROJECTOR_BATCH": "lots",
                "CRM_RATE_LIMIT_PER_MINUTE": "-1",
                "CRM_IDEMPOTENCY_TTL_SECONDS": "0",
                "CRM_API_THREADS": "4",
            },
        )
    named = [name for name, _ in caught.value.problems]
    assert named == ["CRM_PROJECTOR_BATCH", "CRM_RATE_LIMIT_PER_MINUTE", "CRM_IDEMPOTENCY_TTL_SECONDS"]
    assert "'lots' is not a whole number" in str(caught.value)


def test_typed_reads() -> None:
    env = Env({"A": " 7 ", "B": "2.5", "C": "yes", "D": "maybe", "E": "blue", "F": ""})
    assert env.integer("A", 1) == 7 and env.number("B", 1.0) == 2.5 and env.flag("C", False) is True
    assert env.flag("D", False) is False and env.choice("E", "red", ("red", "green")) == "red"
    assert env.integer("F", 3) == 3 and env.optional("F") is None and env.text("F", "x") == ""
    assert [name for name, _ in env.problems] == ["D", "E"]
    assert env.seen == {"A": " 7 ", "B": "2.5", "C": "yes", "D": "maybe", "E": "blue", "F": ""}


def test_current_is_built_once_and_again_when_a_variable_it_read_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[int] = []

    def read(env: Env) -> int:
        builds.append(1)
        return env.integer("CRM_TEST_KNOB", 1)

    knob = Current(read)
    monkeypatch.delenv("CRM_TEST_KNOB", raising=False)
    assert (knob(), knob(), len(builds)) == (1, 1, 1)
    monkeypatch.setenv("CRM_TEST_KNOB", "5")
    assert (knob(), knob(), len(builds)) == (5, 5, 2)
    monkeypatch.setenv("CRM_TEST_KNOB", "five")
    with pytest.raises(SettingsError, match="CRM_TEST_KNOB"):
        knob()


def test_the_chassis_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_GRPC_MAX_STREAMS", "3")
    assert chassis().grpc_max_streams == 3


def test_service_settings_name_every_bad_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_WIDGETS_HTTP_PORT", "eighty")
    monkeypatch.setenv("CRM_WIDGETS_GRPC_PORT", "70000")
    with pytest.raises(SettingsError) as caught:
        Settings.for_service("widgets", http=1, grpc=2, metrics=3)
    assert [name for name, _ in caught.value.problems] == ["CRM_WIDGETS_HTTP_PORT", "CRM_WIDGETS_GRPC_PORT"]


def test_topic_of_another_service_honours_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_SALES_TOPIC", raising=False)
    assert topic_of("sales") == "crm.sales.events" and topic_of("service-desk") == "crm.servicedesk.events"
    monkeypatch.setenv("CRM_SALES_TOPIC", "elsewhere.sales")
    assert topic_of("sales") == "elsewhere.sales"


def test_projection_policy_names_its_bad_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_PROJECTION_ATTEMPTS", "x")
    monkeypatch.setenv("CRM_PROJECTION_STALL_SECONDS", "-1")
    with pytest.raises(SettingsError) as caught:
        ProjectionPolicy.from_env()
    assert [name for name, _ in caught.value.problems] == ["CRM_PROJECTION_ATTEMPTS", "CRM_PROJECTION_STALL_SECONDS"]


def test_a_process_refuses_to_start_naming_every_bad_variable_of_the_chassis_and_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def service_settings() -> object:
        return load(lambda env: env.number("CRM_WIDGETS_PACE", 1.0, above=0))

    spec = ServiceSpec(
        name="widgets",
        title="Widgets",
        description="",
        ports=Ports(1, 2, 3),
        blueprints=lambda _runtime: [],
        servicers=lambda _server, _runtime: [],
        projections=lambda _runtime: [],
        prepare=lambda _runtime: None,
        configure=service_settings,
    )
    monkeypatch.setenv("CRM_PROJECTOR_BATCH", "lots")
    monkeypatch.setenv("CRM_WIDGETS_HTTP_PORT", "eighty")
    monkeypatch.setenv("CRM_WIDGETS_PACE", "0")
    with pytest.raises(SystemExit) as stopped:
        configured(spec, "worker")
    assert stopped.value.code == 78
    assert [name for name, _ in stopped.value.__cause__.problems] == [
        "CRM_WIDGETS_HTTP_PORT",
        "CRM_PROJECTOR_BATCH",
        "CRM_WIDGETS_PACE",
    ]
    for name in ("CRM_PROJECTOR_BATCH", "CRM_WIDGETS_HTTP_PORT", "CRM_WIDGETS_PACE"):
        monkeypatch.delenv(name)
    assert configured(spec, "worker").ports.http == 1


def test_the_local_stack_and_the_credentials_are_read_in_one_place_too() -> None:
    assert load(LocalStack.read, {}) == LocalStack(None, None, 9092, 27017, 3)
    with pytest.raises(SettingsError) as caught:
        load(LocalStack.read, {"CRM_KAFKA_PORT": "0", "CRM_TOPIC_PARTITIONS": "many"})
    assert [name for name, _ in caught.value.problems] == ["CRM_KAFKA_PORT", "CRM_TOPIC_PARTITIONS"]
    known = load(Credentials.read, {"CRM_JWT_SECRET": "s", "CRM_SERVICE_NAME": ""})
    assert (known.jwt_secret, known.jwt_keys, known.service_name) == ("s", None, None)
