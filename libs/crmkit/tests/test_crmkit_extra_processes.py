"""A service's extra processes: `crm serve SERVICE NAME` runs one, `crm up` starts the enabled ones."""

import pytest

from crmkit import cli
from crmkit.config import Ports
from crmkit.service import ExtraProcess, ServiceSpec


def make_spec(ran: list[str], enabled: bool) -> ServiceSpec:
    return ServiceSpec(
        name="demo",
        title="demo",
        description="demo",
        ports=Ports(1, 2, 3),
        blueprints=lambda _runtime: [],
        servicers=lambda _server, _runtime: [],
        projections=lambda _runtime: [],
        prepare=lambda _runtime: None,
        extra_processes={"sink": ExtraProcess(run=ran.append, enabled=lambda: enabled)},
    )


def test_serve_runs_an_extra_process_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    monkeypatch.setattr(cli, "spec_for", lambda _name: make_spec(ran, enabled=False))
    assert cli.main(["serve", "demo", "sink"]) == 0
    assert ran == ["demo"]
    assert cli.main(["serve", "demo", "nonsense"]) == 2


def test_up_starts_only_the_enabled_extra_processes() -> None:
    assert make_spec([], enabled=True).processes(local=True) == ["api", "grpc", "worker", "sink"]
    assert make_spec([], enabled=False).processes(local=True) == ["api", "grpc", "worker"]
    assert make_spec([], enabled=False).processes() == ["api", "grpc", "worker", "sink"]
