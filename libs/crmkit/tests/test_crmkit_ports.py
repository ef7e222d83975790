"""Ports for test servers: never one another process of the same run may also pick."""

from __future__ import annotations

import os

from crmkit import stack
from crmkit.testing import share_of


def test_each_test_worker_gets_its_own_slice_of_the_listen_ports() -> None:
    slices = [share_of(range(20000, 32000), index, 3) for index in range(3)]
    assert [(s.start, s.stop) for s in slices] == [(20000, 24000), (24000, 28000), (28000, 32000)]
    assert not set(slices[0]) & set(slices[1]) and not set(slices[1]) & set(slices[2])


def test_this_process_hands_out_ports_only_from_its_own_slice() -> None:
    worker, listen = os.environ.get("PYTEST_XDIST_WORKER"), stack.LISTEN_PORTS
    if worker:  # under `make test` (pytest -n 2): this worker's slice, set by crmkit.testing
        count = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
        assert listen == share_of(range(20000, 32000), int(worker.removeprefix("gw")), count)
    else:
        assert listen == range(20000, 32000)
    ports = [stack.free_port() for _ in range(20)]
    assert all(port in listen and port + 1 in listen for port in ports)
