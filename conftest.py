"""Shared fixtures for every test in the repository (servers on free ports, isolation), and how
`make test` splits the suite between its worker processes (docs/testing.md, "Parallel runs")."""

from __future__ import annotations

import os

# gRPC's C core reads this once, when grpc is first imported (crmkit.testing imports it): its
# INFO lines ("Got goaway" whenever a test's server stops) would bury a failure's output
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadFileScheduling

pytest_plugins = ["crmkit.testing"]


class ByModuleAndStack(LoadFileScheduling):
    """Hand each worker whole modules, so a module's fixtures (a fuzzed stack, a Kafka client)
    start once; and all of tests/e2e as one unit, since its tests share one `crm up` stack that
    is stopped right after the last of them (tests/e2e/conftest.py) and so must run one after
    another on one worker."""

    def _split_scope(self, nodeid: str) -> str:
        return "tests/e2e" if nodeid.startswith("tests/e2e/") else super()._split_scope(nodeid)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> ByModuleAndStack:
    return ByModuleAndStack(config, log)
