"""The domain is pure: importing a service's domain modules loads no driver, server or web framework.

Domain modules decide (aggregates, their rules, the arithmetic of money, business hours,
SERVQUAL, segments); they build on `crmkit.aggregate`, `crmkit.events` and `crmkit.errors`,
which import only the standard library. What does I/O (`crmkit.repository`,
`crmkit.eventstore`, the web and gRPC edges, the projectors) imports the domain, never the
other way round. So the domain can be tested, and reasoned about, without any server.

Each service is imported in a fresh interpreter (a pytest process has long since imported
pymongo), with an import hook that refuses the forbidden packages: the failure's traceback
names the import chain that reached one.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Infrastructure a domain module must not need: the database driver (and its bson), Kafka,
# the web framework (and its toolkit), gRPC and protobuf, metrics, request validation.
FORBIDDEN = (
    "pymongo",
    "bson",
    "kafka",
    "flask",
    "werkzeug",
    "grpc",
    "google.protobuf",
    "prometheus_client",
    "marshmallow",
    "jsonschema",
)

PURE_MODULES = {
    "contacts": ("crm_contacts.records.domain", "crm_contacts.segments.domain", "crm_contacts.records.normalize"),
    "sales": ("crm_sales.domain", "crm_sales.money", "crm_sales.values"),
    "service-desk": ("crm_servicedesk.domain", "crm_servicedesk.business_hours", "crm_servicedesk.servqual"),
    "messaging": ("crm_messaging.domain",),
    "crmkit": (
        "crmkit.aggregate",
        "crmkit.events",
        "crmkit.errors",
        "crmkit.store",
        "crmkit.repository",
        "crmkit.memstore",
    ),
}

PROBE = textwrap.dedent("""
    import importlib, importlib.abc, sys

    forbidden, modules = sys.argv[1].split(","), sys.argv[2].split(",")

    def refused(name):
        return any(name == f or name.startswith(f + ".") for f in forbidden)

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if refused(name):
                raise ImportError(f"a pure module imported {name}")
            return None

    sys.meta_path.insert(0, Refuse())
    for module in modules:
        importlib.import_module(module)
    loaded = sorted(name for name in sys.modules if refused(name))
    if loaded:
        raise SystemExit(f"loaded anyway: {loaded}")
    print("pure:", ", ".join(modules))
""")


@pytest.mark.parametrize("service", sorted(PURE_MODULES))
def test_importing_the_domain_loads_no_infrastructure(service: str) -> None:
    modules = PURE_MODULES[service]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(FORBIDDEN), ",".join(modules)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{service}'s domain is not pure:\n{done.stderr}{done.stdout}"
    assert done.stdout.strip() == f"pure: {', '.join(modules)}"


def test_the_probe_catches_an_impure_import() -> None:
    """The check can fail: a module that does I/O (the MongoDB event store) is refused."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(FORBIDDEN), "crmkit.eventstore"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "a pure module imported pymongo" in done.stderr
