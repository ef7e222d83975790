"""The production profile: what the chassis refuses to start with (crmkit.profile; docs/operations.md)."""

from __future__ import annotations

import json
import secrets

import pytest

from crmkit import profile
from crmkit.profile import Problem
from crmkit.testing import production_secrets


def safe_chassis_env() -> dict[str, str]:
    """Everything the chassis asks of production, as a deployment's Secrets and ConfigMaps give it."""
    return {
        "CRM_ENV": "production",
        **production_secrets("contacts"),
        "CRM_MONGO_URL": "mongodb://crm-contacts:pw@crm-mongo-svc:27017/crm_contacts?replicaSet=crm-mongo",
        "CRM_KAFKA_BOOTSTRAP": "crm-kafka-kafka-bootstrap:9092",
    }


def variables(found: list[Problem]) -> list[str]:
    return [problem.variable for problem in found]


def test_development_is_the_default_and_refuses_nothing() -> None:
    """A fresh clone (`make run`, the tests) configures nothing and must start as before."""
    assert profile.current({}) == "development"
    assert profile.problems({}) == []
    assert profile.problems({"CRM_ENV": "development"}, [lambda _env: [Problem("X", "service check")]]) == []


def test_an_unknown_profile_is_refused_rather_than_read_as_development() -> None:
    [problem] = profile.problems({"CRM_ENV": "prod"})
    assert problem.variable == "CRM_ENV" and "'prod' is not a profile" in problem.reason


def test_production_with_nothing_configured_lists_every_chassis_problem() -> None:
    assert variables(profile.problems({"CRM_ENV": "production"})) == [
        "CRM_JWT_KEYS",
        "CRM_SERVICE_KEY",
        "CRM_SERVICE_PUBLIC_KEYS",
        "CRM_LINK_SECRET",
        "CRM_MONGO_URL",
        "CRM_KAFKA_BOOTSTRAP",
        "CRM_KAFKA_SECURITY_PROTOCOL",
    ]


def test_production_with_every_secret_from_the_environment_passes() -> None:
    assert profile.problems(safe_chassis_env()) == []
    single = {**safe_chassis_env(), "CRM_JWT_SECRET": secrets.token_urlsafe(48)}
    del single["CRM_JWT_KEYS"]
    assert profile.problems(single) == []  # the one-key form is a secret from the environment too


def test_a_service_check_adds_its_problems_after_the_chassis() -> None:
    def check(environ):
        return [Problem("CRM_DEMO_URL", "unset")] if "CRM_DEMO_URL" not in environ else []

    env = safe_chassis_env()
    assert variables(profile.problems(env, [check])) == ["CRM_DEMO_URL"]
    assert profile.problems({**env, "CRM_DEMO_URL": "https://demo.example.com"}, [check]) == []
    # crm up checks several services at once: a problem two of them find is listed once
    assert variables(profile.problems(env, [check, check])) == ["CRM_DEMO_URL"]


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("CRM_LINK_SECRET", "tiny-s3cret", "shorter than 32"),
        ("CRM_JWT_KEYS", "not json", "not a key ring"),
        ("CRM_JWT_KEYS", json.dumps({"signing": "k2", "keys": {"k1": "x" * 48}}), "'k2' is not one of"),
        ("CRM_JWT_KEYS", json.dumps({"signing": "k1", "keys": {"k1": {"secret": "weak-s3cret"}}}), "shorter than 32"),
    ],
)
def test_weak_or_malformed_secrets_are_refused(variable: str, value: str, expected: str) -> None:
    found = profile.problems({**safe_chassis_env(), variable: value})
    assert len(found) == 1 and found[0].variable.startswith(variable) and expected in found[0].reason
    assert "s3cret" not in str(found[0])  # a secret is never logged, not even a weak one


def test_the_example_secrets_placeholders_are_refused() -> None:
    """Applying deploy/k8s/secrets.example.yaml unchanged must not produce a running installation."""
    env = {
        **safe_chassis_env(),
        "CRM_SERVICE_KEY": "CHANGE-ME",
        "CRM_LINK_SECRET": "CHANGE-ME-at-least-48-random-bytes",
    }
    assert variables(profile.problems(env)) == ["CRM_LINK_SECRET", "CRM_SERVICE_KEY"]


@pytest.mark.parametrize(
    "url, reason",
    [
        (None, "unset"),
        ("", "unset"),
        ("http://crm.example.com", "not an https URL"),
        ("https://", "not an https URL"),
        ("crm.example.com", "not an https URL"),
        ("https://127.0.0.1:8004", "127.0.0.1 is this machine"),
        ("https://localhost", "localhost is this machine"),
        ("https://[::1]:8004/", "::1 is this machine"),
        ("https://0.0.0.0", "0.0.0.0 is this machine"),
        ("https://app.localhost", "is this machine"),
    ],
)
def test_a_public_url_must_be_https_and_not_this_machine(url: str | None, reason: str) -> None:
    env = {} if url is None else {"CRM_X_URL": url}
    [problem] = profile.url_problems("CRM_X_URL", env, "set it to your ingress")
    assert problem.variable == "CRM_X_URL" and reason in problem.reason and problem.reason.endswith("your ingress")


def test_a_url_that_carries_credentials_is_never_echoed() -> None:
    [problem] = profile.url_problems("CRM_X_URL", {"CRM_X_URL": "http://user:hunter2@gw.example.com"}, "fix it")
    assert "hunter2" not in str(problem)
    assert profile.url_problems("CRM_X_URL", {"CRM_X_URL": "https://messaging.example.com/"}, "fix it") == []


def test_refusing_exits_with_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as refused:
        profile.refuse_unsafe([], {"CRM_ENV": "production"})
    assert refused.value.code == profile.EX_CONFIG
    profile.refuse_unsafe([], safe_chassis_env())  # returns: nothing to refuse
