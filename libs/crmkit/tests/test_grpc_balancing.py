"""Calls spread over every replica a gRPC target names, and servers make clients reconnect.

On Kubernetes a client reaches `dns:///crm-<svc>-grpc:<port>`, a headless Service that
resolves to every ready pod; gRPC's default policy (pick_first) would send every call of
a client down one connection to one pod. Here two real servers on loopback stand for two
pods, behind one target that resolves to both.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from crmkit import auth, rpc, stack

SERVICE = "crmkit.test.v1.Replica"
SECRET = "balancing-test-secret-of-sufficient-length-hs256"
CALLS = 200  # bounded: the loops below stop at this count whatever happens


def replica(name: str):
    """register() for a server that answers Which with its own name and the caller's address."""

    @rpc.access("read")
    def which(request: StringValue, context: grpc.ServicerContext) -> StringValue:
        return StringValue(value=f"{name} {context.peer()}")

    def register(server: grpc.Server) -> list[str]:
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Which": grpc.unary_unary_rpc_method_handler(
                    which,
                    request_deserializer=StringValue.FromString,
                    response_serializer=StringValue.SerializeToString,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
        return [SERVICE]

    return register


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_JWT_SECRET", SECRET)
    for name in ("CRM_JWT_KEYS", "CRM_SERVICE_PUBLIC_KEYS", "CRM_SERVICE_KEY"):
        monkeypatch.delenv(name, raising=False)


@contextlib.contextmanager
def serve(name: str, **options: float) -> Iterator[int]:
    port = stack.free_port()
    server, _ = rpc.build_server("widgets", port, replica(name), max_workers=4, **options)
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None)


@pytest.fixture
def two_replicas() -> Iterator[tuple[int, int]]:
    with serve("first") as first, serve("second") as second:
        yield first, second


def which_stub(channel: grpc.Channel):
    return channel.unary_unary(
        f"/{SERVICE}/Which",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=StringValue.FromString,
    )


def token() -> str:
    return auth.issue(SECRET, "tester", ["widgets:read"], audience="widgets")


def test_a_client_spreads_its_calls_over_every_address_of_its_target(two_replicas):
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in two_replicas)
    seen: Counter[str] = Counter()
    with rpc.token_channel(target, token()) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        which = which_stub(channel)
        for _ in range(CALLS):
            seen[rpc.call(which, StringValue(), timeout=5).value.split()[0]] += 1
    assert set(seen) == {"first", "second"}, seen
    # round robin over two ready connections: neither replica gets everything
    assert min(seen.values()) >= CALLS // 4, seen


def test_a_single_address_target_still_works(two_replicas):
    """`crm up` and the tests name one 127.0.0.1:port: round robin over one address is that address."""
    with rpc.token_channel(f"127.0.0.1:{two_replicas[0]}", token()) as channel:
        assert rpc.call(which_stub(channel), StringValue(), timeout=5).value.startswith("first ")


def test_the_server_closes_old_connections_so_clients_resolve_again():
    """A connection past its age is closed (GOAWAY) once its calls finish; the client reconnects
    (and re-resolves its DNS name, finding pods added since) without a call failing."""
    peers: set[str] = set()
    with serve("only", max_connection_age=0.5) as port, rpc.token_channel(f"127.0.0.1:{port}", token()) as channel:
        which = which_stub(channel)
        for _ in range(CALLS):
            peers.add(rpc.call(which, StringValue(), timeout=5).value.split()[1])  # the client's ip:port
            if len(peers) > 1:
                break
            time.sleep(0.05)
    assert len(peers) > 1, "the client kept one connection past the server's max connection age"
