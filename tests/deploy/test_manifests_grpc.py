"""gRPC callers reach every replica: headless Services and dns:/// targets (docs/operations.md, "Scaling").

A ClusterIP Service balances per connection, and a gRPC channel keeps one connection, so
every call of a client pod went to one server pod. With a headless Service the name
resolves to every ready pod, and crmkit.rpc's channels (round_robin) call them in turn;
libs/crmkit/tests/test_grpc_balancing.py shows that with real servers.
"""

from __future__ import annotations

import re

import pytest

GRPC_PORTS = {
    "contacts": ("CONTACTS", 50051),
    "sales": ("SALES", 50052),
    "service-desk": ("SERVICEDESK", 50053),
    "messaging": ("MESSAGING", 50054),
}
OVERLAYS = ["dev", "prod"]


def common_config(objects: list[dict]) -> dict[str, str]:
    (config,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("crm-common")]
    return config["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_services_are_headless(rendered, overlay):
    grpc_services = [
        o
        for o in rendered[overlay]
        if o["kind"] == "Service" and o["metadata"]["labels"].get("app.kubernetes.io/component") == "grpc"
    ]
    assert len(grpc_services) == len(GRPC_PORTS)
    for service in grpc_services:
        assert service["spec"].get("clusterIP") == "None", f"{service['metadata']['name']} is not headless"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_callers_resolve_every_grpc_pod_through_dns(rendered, overlay):
    objects = rendered[overlay]
    config = common_config(objects)
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    for name, (key, port) in GRPC_PORTS.items():
        target = config[f"CRM_{key}_GRPC_TARGET"]
        match = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", target)
        assert match, f"CRM_{key}_GRPC_TARGET={target!r} is not a dns:/// target"
        host, target_port = match.group(1), int(match.group(2))
        assert target_port == port
        service = services[host]
        assert service["spec"].get("clusterIP") == "None"
        assert port in {p["port"] for p in service["spec"]["ports"]}
        pods = deployments[f"crm-{name}-grpc"]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pods.items(), f"{host} does not select crm-{name}-grpc's pods"
