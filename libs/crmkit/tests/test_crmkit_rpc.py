"""The gRPC bootstrap: health, reflection, error mapping, correlation ids, authentication, bounded
streams, and the client helpers (deadlines, retries, service tokens)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from crmkit import auth, keys, rpc, stack
from crmkit.errors import Conflict, NotFound, PreconditionFailed, Unavailable, ValidationFailed
from crmkit.logs import correlation_id
from crmkit.testing import wait_until

SERVICE = "crmkit.test.v1.Probe"
SECRET = "rpc-test-secret-of-sufficient-length-for-hs256"
released = threading.Event()  # lets a "slow" call finish once its client has given up


@rpc.access("read")
def lookup(request: StringValue, context: grpc.ServicerContext) -> StringValue:
    errors = {
        "missing": NotFound("no probe with id missing"),
        "bad": ValidationFailed("id is malformed", {"id": ["malformed"]}),
        "fields": ValidationFailed(
            "2 fields are invalid", {"name": ["name is required"], "email": ["not an email address", "too long"]}
        ),
        "conflict": Conflict("busy"),
        "stale": PreconditionFailed("moved on"),
        "down": Unavailable("dependency away"),
    }
    if request.value in errors:
        raise errors[request.value]
    if request.value == "require":
        rpc.require(False, "id", "id is required")
    if request.value == "slow":
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        cancelled.wait(30)
        released.set()
        return StringValue(value="too late")
    if request.value == "whoami":
        return StringValue(value=correlation_id.get() or "")
    return StringValue(value=f"found:{request.value}")


@rpc.access("read")
def listing(request: StringValue, context: grpc.ServicerContext) -> Iterator[StringValue]:
    while request.value == "endless":
        yield StringValue(value="x" * 65536)
    for n in range(3):
        yield StringValue(value=str(n))
    if request.value == "missing":
        raise NotFound("the rest is gone")


@rpc.access("write")
def change(request: StringValue, context: grpc.ServicerContext) -> StringValue:
    return StringValue(value=f"changed:{request.value}")


def undeclared(request: StringValue, context: grpc.ServicerContext) -> StringValue:
    return StringValue(value="nobody should see this")


def _unary(behaviour: Callable[..., Any]) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=StringValue.FromString, response_serializer=StringValue.SerializeToString
    )


def register(server: grpc.Server) -> list[str]:
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Lookup": _unary(lookup),
            "Change": _unary(change),
            "Undeclared": _unary(undeclared),
            "List": grpc.unary_stream_rpc_method_handler(
                listing, request_deserializer=StringValue.FromString, response_serializer=StringValue.SerializeToString
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    return [SERVICE]


@pytest.fixture(scope="module", autouse=True)
def secret() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRM_JWT_SECRET", SECRET)
        patch.delenv("CRM_JWT_KEYS", raising=False)
        patch.delenv("CRM_SERVICE_PUBLIC_KEYS", raising=False)
        patch.delenv("CRM_SERVICE_KEY", raising=False)
        yield


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, Any]]:
    port = stack.free_port()
    grpc_server, health = rpc.build_server("widgets", port, register, max_workers=4)
    grpc_server.start()
    yield port, health
    grpc_server.stop(grace=None)


def token_for(*roles: str, audience: str = "widgets") -> str:
    return auth.issue(SECRET, "tester", list(roles), audience=audience)


@pytest.fixture(scope="module")
def channel(server: tuple[int, Any]) -> Iterator[grpc.Channel]:
    with rpc.token_channel(f"127.0.0.1:{server[0]}", token_for("widgets:read")) as chan:
        grpc.channel_ready_future(chan).result(timeout=10)
        yield chan


@pytest.fixture(scope="module")
def anonymous(server: tuple[int, Any]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server[0]}") as chan:
        yield chan


def lookup_stub(channel: grpc.Channel) -> Callable[..., StringValue]:
    return channel.unary_unary(
        f"/{SERVICE}/Lookup",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=StringValue.FromString,
    )


def list_stub(channel: grpc.Channel) -> Callable[..., Iterator[StringValue]]:
    return channel.unary_stream(
        f"/{SERVICE}/List",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=StringValue.FromString,
    )


def test_a_call_succeeds(channel: grpc.Channel) -> None:
    assert rpc.call(lookup_stub(channel), StringValue(value="x")).value == "found:x"


@pytest.mark.parametrize("name", ["", SERVICE])
def test_health_is_serving(channel: grpc.Channel, name: str) -> None:
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_health_of_an_unknown_service_is_not_found(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="nope.Nope"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    [response] = list(
        stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    )
    names = {service.name for service in response.list_services_response.service}
    assert names == {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


def test_reflection_describes_the_health_service(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health")
    [response] = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    assert response.file_descriptor_response.file_descriptor_proto


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("missing", grpc.StatusCode.NOT_FOUND),
        ("bad", grpc.StatusCode.INVALID_ARGUMENT),
        ("require", grpc.StatusCode.INVALID_ARGUMENT),
        ("conflict", grpc.StatusCode.ABORTED),
        ("stale", grpc.StatusCode.FAILED_PRECONDITION),
        ("down", grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_domain_errors_map_to_status_codes(channel: grpc.Channel, value: str, code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        lookup_stub(channel)(StringValue(value=value), timeout=5)
    assert caught.value.code() == code
    assert caught.value.details()  # the domain error's detail, not a stack trace
    assert "Traceback" not in caught.value.details()


def test_not_found_detail_is_the_domain_message(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        rpc.call(lookup_stub(channel), StringValue(value="missing"))
    assert caught.value.details() == "no probe with id missing"


def _bad_request(error: grpc.RpcError) -> dict[str, list[str]]:
    """The google.rpc.BadRequest field violations an error carries, as field -> descriptions."""
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in grpc-status-details-bin"
    assert status.code == error.code().value[0] and status.message == error.details()
    violations: dict[str, list[str]] = {}
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        for violation in bad_request.field_violations:
            violations.setdefault(violation.field, []).append(violation.description)
    return violations


@pytest.mark.parametrize(
    ("value", "violations"),
    [
        ("bad", {"id": ["malformed"]}),
        ("require", {"id": ["id is required"]}),
        ("fields", {"name": ["name is required"], "email": ["not an email address", "too long"]}),
    ],
)
def test_bad_arguments_carry_every_field_as_a_bad_request(
    channel: grpc.Channel, value: str, violations: dict[str, list[str]]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        lookup_stub(channel)(StringValue(value=value), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _bad_request(caught.value) == violations


def test_other_errors_carry_no_details(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        lookup_stub(channel)(StringValue(value="missing"), timeout=5)
    assert rpc_status.from_call(caught.value) is None


def test_a_stream_that_fails_half_way_ends_with_the_mapped_code(channel: grpc.Channel) -> None:
    received = []
    with pytest.raises(grpc.RpcError) as caught:
        for item in list_stub(channel)(StringValue(value="missing"), timeout=5):
            received.append(item.value)
    assert received == ["0", "1", "2"]
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert [i.value for i in list_stub(channel)(StringValue(value="ok"), timeout=5)] == ["0", "1", "2"]


def test_the_correlation_id_travels_with_the_call(channel: grpc.Channel) -> None:
    token = correlation_id.set("corr-grpc-1")
    try:
        assert rpc.call(lookup_stub(channel), StringValue(value="whoami")).value == "corr-grpc-1"
    finally:
        correlation_id.reset(token)
    assert rpc.call(lookup_stub(channel), StringValue(value="whoami")).value == ""


def test_calls_are_measured_by_method_and_code(channel: grpc.Channel) -> None:
    def count(code: str) -> float:
        labels = {"service": "widgets", "method": "Lookup", "code": code}
        return REGISTRY.get_sample_value("crm_grpc_request_duration_seconds_count", labels) or 0

    ok, missing = count("OK"), count("NOT_FOUND")
    rpc.call(lookup_stub(channel), StringValue(value="x"))
    with pytest.raises(grpc.RpcError):
        rpc.call(lookup_stub(channel), StringValue(value="missing"))
    assert (count("OK") - ok, count("NOT_FOUND") - missing) == (1, 1)


def test_graceful_shutdown_reports_not_serving() -> None:
    port = stack.free_port()
    grpc_server, health = rpc.build_server("widgets", port, register, max_workers=2)
    grpc_server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
            check = health_pb2_grpc.HealthStub(chan).Check
            assert check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
            health.enter_graceful_shutdown()
            status = check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        grpc_server.stop(grace=None)


def test_a_port_in_use_is_an_error_not_a_shared_listener(server: tuple[int, Any]) -> None:
    with pytest.raises((OSError, RuntimeError)):
        other, _ = rpc.build_server("widgets", server[0], register, max_workers=1)
        other.stop(grace=None)


# ---- the client helper ---------------------------------------------------------------


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


class Spy:
    """A stub method that fails with the given codes, then answers."""

    def __init__(self, *failures: grpc.StatusCode) -> None:
        self.failures = list(failures)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, request: Any, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        if self.failures:
            raise FakeRpcError(self.failures.pop(0))
        return "answer"


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(rpc.time, "sleep", slept.append)
    return slept


def test_call_always_sets_a_deadline(no_backoff: list[float]) -> None:
    spy = Spy()
    assert rpc.call(spy, "req") == "answer"
    rpc.call(spy, "req", timeout=0.25)
    assert [c["timeout"] for c in spy.calls] == [rpc.DEFAULT_DEADLINE, 0.25]
    assert all(c["timeout"] is not None and c["timeout"] > 0 for c in spy.calls)


def test_call_retries_unavailable_with_backoff(no_backoff: list[float]) -> None:
    spy = Spy(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)
    assert rpc.call(spy, "req", attempts=3, backoff=0.1) == "answer"
    assert len(spy.calls) == 3
    assert no_backoff == [0.1, 0.2]


def test_call_gives_up_after_its_attempts(no_backoff: list[float]) -> None:
    spy = Spy(*[grpc.StatusCode.UNAVAILABLE] * 5)
    with pytest.raises(grpc.RpcError) as caught:
        rpc.call(spy, "req", attempts=3)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and len(spy.calls) == 3


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.ABORTED,
    ],
)
def test_call_does_not_retry_what_may_have_run_or_will_fail_again(
    no_backoff: list[float], code: grpc.StatusCode
) -> None:
    spy = Spy(code)
    with pytest.raises(grpc.RpcError) as caught:
        rpc.call(spy, "req")
    assert caught.value.code() == code and len(spy.calls) == 1


def test_call_sends_the_correlation_id() -> None:
    spy = Spy()
    token = correlation_id.set("corr-7")
    try:
        rpc.call(spy, "req")
    finally:
        correlation_id.reset(token)
    assert ("x-correlation-id", "corr-7") in spy.calls[0]["metadata"]


def test_a_deadline_ends_a_slow_call_without_a_retry(channel: grpc.Channel) -> None:
    attempts: list[float] = []
    stub = lookup_stub(channel)

    def counted(request: Any, **kwargs: Any) -> Any:
        attempts.append(kwargs["timeout"])
        return stub(request, **kwargs)

    released.clear()
    with pytest.raises(grpc.RpcError) as caught:
        rpc.call(counted, StringValue(value="slow"), timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert attempts == [0.3]
    assert released.wait(10)  # the server saw the cancellation and let go of its thread


def test_a_server_that_is_down_is_unavailable_after_the_retries() -> None:
    attempts: list[int] = []
    with grpc.insecure_channel(f"127.0.0.1:{stack.free_port()}") as chan:
        stub = lookup_stub(chan)

        def counted(request: Any, **kwargs: Any) -> Any:
            attempts.append(1)
            return stub(request, **kwargs)

        with pytest.raises(grpc.RpcError) as caught:
            rpc.call(counted, StringValue(value="x"), timeout=2, attempts=3, backoff=0.01)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(attempts) == 3


# ---- authentication ------------------------------------------------------------------


def _code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_a_call_without_a_token_is_unauthenticated(anonymous: grpc.Channel) -> None:
    unary = lookup_stub(anonymous)
    assert _code_of(lambda: unary(StringValue(value="x"), timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    stream = list_stub(anonymous)(StringValue(value="ok"), timeout=5)
    assert _code_of(lambda: list(stream)) == grpc.StatusCode.UNAUTHENTICATED


def test_health_and_reflection_need_no_token(anonymous: grpc.Channel) -> None:
    response = health_pb2_grpc.HealthStub(anonymous).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(anonymous)
    [reply] = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    assert reply.list_services_response.service


@pytest.mark.parametrize(
    ("token", "method", "expected"),
    [
        ("garbage", "Lookup", grpc.StatusCode.UNAUTHENTICATED),
        (
            auth.issue("another-secret-of-sufficient-length-32b", "x", ["admin"]),
            "Lookup",
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        (token_for("admin", audience="sales"), "Lookup", grpc.StatusCode.UNAUTHENTICATED),  # for another service
        (token_for("sales:write"), "Lookup", grpc.StatusCode.PERMISSION_DENIED),
        (token_for("widgets:read"), "Lookup", grpc.StatusCode.OK),
        (token_for("widgets:read"), "Change", grpc.StatusCode.PERMISSION_DENIED),
        (token_for("widgets:write"), "Change", grpc.StatusCode.OK),
        (token_for("admin", audience="widgets"), "Change", grpc.StatusCode.OK),
        (token_for("admin"), "Undeclared", grpc.StatusCode.PERMISSION_DENIED),  # no rule: nobody
        # no gRPC method confines to a team, so a team-scoped role reaches none of them
        (
            auth.issue(SECRET, "tester", ["widgets:write:team"], audience="widgets", team="north"),
            "Lookup",
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (
            auth.issue(SECRET, "tester", ["widgets:read", "widgets:write:team"], audience="widgets", team="north"),
            "Lookup",
            grpc.StatusCode.OK,
        ),
    ],
)
def test_tokens_and_declared_access_decide(
    server: tuple[int, Any], token: str, method: str, expected: grpc.StatusCode
) -> None:
    with rpc.token_channel(f"127.0.0.1:{server[0]}", token) as chan:
        stub = chan.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=StringValue.SerializeToString,
            response_deserializer=StringValue.FromString,
        )
        assert _code_of(lambda: stub(StringValue(value="x"), timeout=5)) == expected


@pytest.fixture(scope="module")
def contacts_server() -> Iterator[int]:
    """The probe served as if by contacts, for calls with service tokens."""
    port = stack.free_port()
    grpc_server, _ = rpc.build_server("contacts", port, register, max_workers=4)
    grpc_server.start()
    yield port
    grpc_server.stop(grace=None)


@pytest.mark.parametrize(
    ("caller", "method", "expected"),
    [
        ("sales", "Lookup", grpc.StatusCode.OK),  # sales reads contacts
        ("sales", "Change", grpc.StatusCode.PERMISSION_DENIED),  # and never writes
        ("messaging", "Change", grpc.StatusCode.OK),  # unsubscribe records consent
    ],
)
def test_services_call_with_only_their_granted_roles(
    contacts_server: int, caller: str, method: str, expected: grpc.StatusCode
) -> None:
    with rpc.channel(f"127.0.0.1:{contacts_server}", audience="contacts", caller=caller) as chan:
        stub = chan.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=StringValue.SerializeToString,
            response_deserializer=StringValue.FromString,
        )
        assert _code_of(lambda: stub(StringValue(value="x"), timeout=5)) == expected


def test_a_service_token_is_for_one_audience_and_one_service(server: tuple[int, Any]) -> None:
    """sales' token for contacts is refused by widgets; a token claiming more than sales' grant is refused."""
    with rpc.channel(f"127.0.0.1:{server[0]}", audience="contacts", caller="sales") as chan:
        assert _code_of(lambda: lookup_stub(chan)(StringValue(value="x"), timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    greedy = auth.service_token("sales", auth.derive_service_key(SECRET, "sales"), "contacts")
    claims = jwt.decode(greedy, options={"verify_signature": False})
    forged = jwt.encode(
        {**claims, "roles": ["admin"]},
        auth.derive_service_key(SECRET, "sales"),
        algorithm="EdDSA",
        headers={"kid": "service:sales"},
    )
    with pytest.raises(auth.InvalidToken, match="beyond"):
        auth.verify(keys.ring(), forged, audience="contacts")
    impostor = auth.service_token("messaging", auth.derive_service_key(SECRET, "sales"), "contacts")
    with pytest.raises(auth.InvalidToken):
        auth.verify(keys.ring(), impostor, audience="contacts")  # sales' key cannot speak for messaging


def test_a_service_token_is_reminted_before_it_expires(contacts_server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    minted: list[str] = []
    real = auth.service_token
    monkeypatch.setattr(auth, "service_token", lambda *a, **k: minted.append("x") or real(*a, **k))
    now = [1000.0]
    monkeypatch.setattr(rpc.time, "monotonic", lambda: now[0])
    with rpc.channel(f"127.0.0.1:{contacts_server}", audience="contacts", caller="sales") as chan:
        for _ in range(3):
            lookup_stub(chan)(StringValue(value="x"), timeout=5)
        now[0] += auth.SERVICE_TOKEN_TTL / 2 + 1
        lookup_stub(chan)(StringValue(value="x"), timeout=5)
    assert len(minted) == 2  # one token for the first three calls, a fresh one before the first could expire


def test_grpc_listens_on_loopback_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_GRPC_BIND", raising=False)
    assert rpc.bind_address(50051) == "127.0.0.1:50051"
    monkeypatch.setenv("CRM_GRPC_BIND", "0.0.0.0")
    assert rpc.bind_address(50051) == "0.0.0.0:50051"


# ---- bounded streams -----------------------------------------------------------------


def test_streams_are_bounded_and_a_client_that_stops_reading_holds_nothing_past_its_deadline() -> None:
    port = stack.free_port()
    grpc_server, _ = rpc.build_server("widgets", port, register, max_workers=4, max_streams=1)
    grpc_server.start()
    try:
        with rpc.token_channel(f"127.0.0.1:{port}", token_for("widgets:read")) as chan:
            stalled = list_stub(chan)(StringValue(value="endless"), timeout=1.5)
            next(stalled)  # the stream runs; the client reads no more
            refused = list_stub(chan)(StringValue(value="ok"), timeout=5)
            assert _code_of(lambda: list(refused)) == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert rpc.call(lookup_stub(chan), StringValue(value="x")).value == "found:x"  # lookups still answer

            def a_stream_runs() -> bool:
                try:
                    return [m.value for m in list_stub(chan)(StringValue(value="ok"), timeout=5)] == ["0", "1", "2"]
                except grpc.RpcError:
                    return False

            wait_until(a_stream_runs, timeout=20, what="the stalled stream's slot to be freed by its deadline")
            assert _code_of(lambda: list(stalled)) == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        grpc_server.stop(grace=None)
