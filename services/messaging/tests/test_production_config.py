"""Messaging in production refuses links nobody can open and messages nobody receives
(crm_messaging.config.production_problems, run by the chassis at every process's start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from crm_messaging.config import production_problems
from crmkit import profile, stack
from crmkit.testing import grpc_serving, production_secrets, start_service_process, wait_until

GATEWAY = {"URL": "https://gateway.example.com/api", "USERNAME": "crm", "PASSWORD": "gateway-password"}


def safe_messaging_env() -> dict[str, str]:
    """A complete production configuration: what the prod overlay and its Secrets give messaging."""
    return {
        "CRM_ENV": "production",
        "CRM_MESSAGING_PUBLIC_URL": "https://messaging.example.com",
        "CRM_SURVEY_URL_BASE": "https://support.example.com",
        "CRM_DETAILS_URL_BASE": "https://contacts.example.com",
        "CRM_MESSAGING_SMTP_SINK": "false",
        "CRM_MESSAGING_SMTP_HOST": "smtp.example.com",
        "CRM_MESSAGING_SMTP_PORT": "587",
        "CRM_MESSAGING_SMTP_TLS": "starttls",
        "CRM_MESSAGING_SMTP_USERNAME": "crm",
        "CRM_MESSAGING_SMTP_PASSWORD": "smtp-password",
        **{f"CRM_MESSAGING_{channel}_PROVIDER": "http" for channel in ("SMS", "FAX")},
        **{f"CRM_MESSAGING_{channel}_{key}": value for channel in ("SMS", "FAX") for key, value in GATEWAY.items()},
    }


def variables(environ: dict[str, str]) -> list[str]:
    return [problem.variable for problem in production_problems(environ)]


def test_a_complete_production_configuration_passes() -> None:
    assert production_problems(safe_messaging_env()) == []


def test_the_local_defaults_are_each_refused() -> None:
    """What a deployment that sets nothing for messaging would do: every one is named."""
    assert variables({"CRM_ENV": "production"}) == [
        "CRM_MESSAGING_PUBLIC_URL",
        "CRM_SURVEY_URL_BASE",
        "CRM_DETAILS_URL_BASE",
        "CRM_MESSAGING_SMTP_SINK",
        "CRM_MESSAGING_SMTP_HOST",
        "CRM_MESSAGING_SMS_PROVIDER",
        "CRM_MESSAGING_FAX_PROVIDER",
    ]


@pytest.mark.parametrize(
    "variable, value, reason",
    [
        ("CRM_MESSAGING_PUBLIC_URL", "http://127.0.0.1:8004", "not an https URL"),
        ("CRM_MESSAGING_PUBLIC_URL", "https://localhost:8004", "this machine"),
        ("CRM_SURVEY_URL_BASE", "http://support.example.com", "not an https URL"),
        ("CRM_DETAILS_URL_BASE", "http://127.0.0.1:8001", "not an https URL"),
        ("CRM_MESSAGING_SMS_PROVIDER", "file", "marked sent, never delivered"),
        ("CRM_MESSAGING_FAX_PROVIDER", "htpp", "not a provider"),
        ("CRM_MESSAGING_SMS_URL", "", "unset"),
        ("CRM_MESSAGING_FAX_URL", "https://127.0.0.1:9000", "this machine"),
        ("CRM_MESSAGING_SMS_PASSWORD", "", "without credentials"),
        ("CRM_MESSAGING_SMTP_SINK", "true", "local SMTP sink"),
        ("CRM_MESSAGING_SMTP_HOST", "127.0.0.1", "this machine"),
        ("CRM_MESSAGING_SMTP_TLS", "none", "in clear"),
    ],
)
def test_each_unsafe_setting_is_named_with_its_reason(variable: str, value: str, reason: str) -> None:
    [problem] = production_problems({**safe_messaging_env(), variable: value})
    assert problem.variable == variable and reason in problem.reason


def test_development_keeps_the_local_defaults() -> None:
    assert profile.problems({}, [production_problems]) == []


def test_a_production_process_with_the_local_defaults_refuses_to_start(tmp_path) -> None:
    """The real boot path (`crm serve messaging worker`): it exits before connecting to
    anything (no broker or database answers here), naming every problem in one JSON line."""
    env = {
        "CRM_ENV": "production",
        "CRM_MESSAGING_PUBLIC_URL": "http://127.0.0.1:8004",
        "CRM_MESSAGING_SMS_PROVIDER": "file",
        "CRM_DATA_DIR": str(tmp_path),
    }
    for process in ("worker", "api"):
        run = subprocess.run(
            [sys.executable, "-m", "crmkit.cli", "serve", "messaging", process],
            env={**clean_environment(), **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == profile.EX_CONFIG, run.stderr
        [line] = [json.loads(text) for text in run.stderr.splitlines() if '"problems"' in text]
        assert line["level"] == "critical" and line["process"] == process
        named = [problem.split(":")[0] for problem in line["problems"]]
        assert named == [
            "CRM_JWT_KEYS",
            "CRM_SERVICE_KEY",
            "CRM_SERVICE_PUBLIC_KEYS",
            "CRM_LINK_SECRET",
            "CRM_MONGO_URL",
            "CRM_KAFKA_BOOTSTRAP",
            "CRM_KAFKA_SECURITY_PROTOCOL",
            "CRM_MESSAGING_PUBLIC_URL",
            "CRM_SURVEY_URL_BASE",
            "CRM_DETAILS_URL_BASE",
            "CRM_MESSAGING_SMTP_SINK",
            "CRM_MESSAGING_SMTP_HOST",
            "CRM_MESSAGING_SMS_PROVIDER",
            "CRM_MESSAGING_FAX_PROVIDER",
        ]
        assert not list(tmp_path.iterdir()), "nothing is generated into CRM_DATA_DIR before refusing"


def test_a_production_process_with_a_complete_configuration_starts(service_env: dict[str, str]) -> None:
    """The same boot path with what the prod overlay sets: the gRPC process serves."""
    port = stack.free_port()
    env = {
        **safe_messaging_env(),
        **production_secrets("messaging"),
        "CRM_MESSAGING_GRPC_PORT": str(port),
        "CRM_MESSAGING_METRICS_PORT": str(stack.free_port() - 1),
    }
    process = start_service_process("messaging", "grpc", env)
    try:
        wait_until(lambda: process.poll() is not None or grpc_serving(f"127.0.0.1:{port}"), 60, "grpc serving")
        assert process.poll() is None, f"exited with {process.returncode}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def clean_environment() -> dict[str, str]:
    """This process's environment without any CRM_* setting (the tests set some)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("CRM_")}
