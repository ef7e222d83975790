"""Every container of every overlay passes the production checks its processes run at start
(crmkit.profile and each service's `production_checks`), on the environment the rendered
manifests give it. The same functions judge both, so the prod overlay cannot drift from
what the services refuse: a variable the overlay forgets fails here, not in a pod.

A value from a Secret cannot be read from the manifests; it stands in as a well-formed one
(the example file's placeholders are refused on their own, tests of crmkit.profile).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import yaml

from crmkit import profile
from crmkit.service import discover
from crmkit.testing import production_secrets

ROOT = Path(__file__).resolve().parents[2]
SECRETS_EXAMPLE = ROOT / "deploy" / "k8s" / "secrets.example.yaml"


OVERLAYS = {"dev": profile.DEVELOPMENT, "prod": profile.PRODUCTION}  # overlay: its CRM_ENV


def containers(objects: list[dict]) -> list[tuple[str, str, dict]]:
    """(service, object name, container) of every Deployment and CronJob."""
    out = []
    for obj in objects:
        if obj["kind"] == "Deployment":
            template = obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        service = obj["metadata"]["labels"]["app.kubernetes.io/name"].removeprefix("crm-")
        out += [(service, f"{obj['kind']}/{obj['metadata']['name']}", c) for c in template["spec"]["containers"]]
    return out


def environment(service: str, container: dict, objects: list[dict]) -> dict[str, str]:
    """What the container's process sees in os.environ, a Secret's value stood in for."""
    maps = {m["metadata"]["name"]: m.get("data", {}) for m in objects if m["kind"] == "ConfigMap"}
    example = {
        s["metadata"]["name"]: s.get("stringData") or {} for s in yaml.safe_load_all(SECRETS_EXAMPLE.read_text())
    }
    stand_ins = production_secrets(service)

    def from_secret(name: str) -> str:
        return stand_ins.get(name) or secrets.token_urlsafe(24)

    env: dict[str, str] = {}
    for source in container.get("envFrom", []):  # envFrom first: `env` entries override it
        if "configMapRef" in source:
            env |= maps[source["configMapRef"]["name"]]
        else:
            env |= {name: from_secret(name) for name in example[source["secretRef"]["name"]]}
    for entry in container.get("env", []):
        reference = entry.get("valueFrom", {})
        if "secretKeyRef" in reference:
            env[entry["name"]] = from_secret(entry["name"])
        elif "configMapKeyRef" in reference:
            env[entry["name"]] = maps[reference["configMapKeyRef"]["name"]][reference["configMapKeyRef"]["key"]]
        elif "value" in entry:
            env[entry["name"]] = entry["value"]
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_passes_the_checks_of_its_profile(rendered, overlay):
    objects, services = rendered[overlay], discover()
    found = containers(objects)
    assert found
    for service, workload, container in found:
        env = environment(service, container, objects)
        assert profile.current(env) == OVERLAYS[overlay], workload
        problems = profile.problems(env, [services[service].production_checks])
        assert not problems, f"{overlay}: {workload} would refuse to start:\n" + "\n".join(map(str, problems))


def test_the_policy_has_teeth(rendered):
    """Without the prod overlay's messaging settings (the base's alone), messaging is refused."""
    objects = rendered["prod"]
    [(service, _, container)] = [c for c in containers(objects) if c[1] == "Deployment/crm-messaging-worker"]
    env = environment(service, container, objects)
    bare = {k: v for k, v in env.items() if not k.startswith("CRM_MESSAGING_") or k.endswith(("_PORT", "_DATABASE"))}
    refused = {p.variable for p in profile.problems(bare, [discover()["messaging"].production_checks])}
    assert {
        "CRM_MESSAGING_PUBLIC_URL",
        "CRM_MESSAGING_SMS_PROVIDER",
        "CRM_MESSAGING_FAX_PROVIDER",
        "CRM_MESSAGING_SMTP_SINK",
    } <= refused
