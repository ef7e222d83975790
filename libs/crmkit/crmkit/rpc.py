"""gRPC on both ends: a server with health, reflection, metrics, error mapping and
authentication, and a client side that always sets a deadline, retries only what is safe
to retry, and calls as its service with a short-lived service token.

Every method but health and reflection needs `authorization: Bearer <JWT>` (the REST
tokens and roles, for this service's audience) and declares what it needs with
`@rpc.access("read" | "write")`; a method that declares nothing is refused, never open.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from crmkit import auth, keys, metrics, settings
from crmkit.config import slug
from crmkit.errors import Conflict, DomainError, NotFound, PreconditionFailed, Unavailable, ValidationFailed
from crmkit.events import parse_time
from crmkit.logs import correlation_id

log = logging.getLogger(__name__)

DEFAULT_DEADLINE = 2.0  # seconds; callers may pass less, never "no deadline"
# A client spreads its calls over every address its target resolves to (on Kubernetes
# `dns:///crm-<svc>-grpc:<port>`, a headless Service: one address per ready pod), instead of
# gRPC's default pick_first, which sends them all down one connection to one pod.
CHANNEL_OPTIONS = (("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),)
# A server closes each connection after this long (GOAWAY once its calls are done, which may
# take up to the grace), so clients reconnect and re-resolve: pods added since are found.
MAX_CONNECTION_AGE = 300.0  # seconds
MAX_CONNECTION_AGE_GRACE = 300.0  # the longest stream a client asks for (segment members: 300 s)
OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)  # answer without a token

STATUS_FOR = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    ValidationFailed: grpc.StatusCode.INVALID_ARGUMENT,
    Conflict: grpc.StatusCode.ABORTED,
    PreconditionFailed: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def _status_for(exc: DomainError) -> grpc.StatusCode:
    for kind, code in STATUS_FOR.items():
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INVALID_ARGUMENT


def _abort(context: grpc.ServicerContext, exc: DomainError) -> None:
    """End the call with the error's status; a bad argument also carries a google.rpc.BadRequest
    (in grpc-status-details-bin) with a violation per message of every failing field, as REST's
    422 lists them, so a caller can tell the fields apart without parsing the message."""
    code = _status_for(exc)
    if code != grpc.StatusCode.INVALID_ARGUMENT or not exc.errors:
        context.abort(code, exc.detail)
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
            for field, messages in exc.errors.items()
            for message in messages
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    context.abort_with_status(
        rpc_status.to_status(status_pb2.Status(code=code.value[0], message=exc.detail, details=[detail]))
    )


def _internal(exc: Exception, method: str, context: grpc.ServicerContext) -> str:
    """An unexpected failure: logged here, and the caller told only that it happened."""
    # ServicerContext.code() is grpcio's (since 1.38) but not in types-grpcio's stub
    if context.code() is not None:  # type: ignore[attr-defined]  # the servicer already aborted with a status of its own
        raise exc
    log.error("gRPC call failed", exc_info=exc, extra={"method": method})
    context.abort(grpc.StatusCode.INTERNAL, "internal error; it has been logged with the correlation id")
    raise AssertionError("unreachable")  # abort raises


class _Observed(grpc.ServerInterceptor):
    """Maps domain errors to status codes, records latency, and carries the correlation id."""

    def __init__(self, service: str) -> None:
        self.service = service

    def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1]
        cid = str(dict(details.invocation_metadata or ()).get("x-correlation-id", ""))  # an ASCII key: a str
        if handler.unary_unary:
            return handler._replace(unary_unary=self._unary(handler.unary_unary, method, cid))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._stream(handler.unary_stream, method, cid))
        return handler

    def _unary(self, behaviour: Callable[..., Any], method: str, cid: str) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            with self._call(method, cid, context):
                return behaviour(request, context)

        return run

    def _stream(self, behaviour: Callable[..., Any], method: str, cid: str) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Iterable[Any]:
            with self._call(method, cid, context):
                yield from behaviour(request, context)

        return run

    @contextlib.contextmanager
    def _call(self, method: str, cid: str, context: grpc.ServicerContext) -> Iterator[None]:
        """Around one call: the correlation id set, errors mapped to status codes, latency recorded."""
        token, started, code = correlation_id.set(cid or None), time.perf_counter(), "OK"
        try:
            yield
        except DomainError as exc:
            code = _status_for(exc).name
            _abort(context, exc)
        except Exception as exc:
            code = _internal(exc, method, context)
        finally:
            # a refusal (or a servicer's own abort) is counted under its code (code(): as in _internal)
            aborted = context.code()  # type: ignore[attr-defined]
            self._observe(method, aborted.name if aborted is not None else code, started)
            correlation_id.reset(token)

    def _observe(self, method: str, code: str, started: float) -> None:
        metrics.GRPC_LATENCY.labels(self.service, method, code).observe(time.perf_counter() - started)


F = TypeVar("F", bound=Callable[..., Any])


def access(needed: str) -> Callable[[F], F]:
    """Declare what a servicer method needs: "read", "write" or "export" on its service (as REST's `endpoint`)."""

    def declare(method: F) -> F:
        method.rpc_access = needed  # type: ignore[attr-defined]
        return method

    return declare


class _Authenticated(grpc.ServerInterceptor):
    """Checks the bearer token and the method's declared access before the servicer runs,
    and caps the server streams running at once (each holds a worker thread)."""

    def __init__(self, service: str, max_streams: int) -> None:
        self.audience = slug(service)
        self.streams = threading.BoundedSemaphore(max_streams)

    def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        service_name, _, method = details.method.lstrip("/").rpartition("/")
        if handler is None or service_name in OPEN_SERVICES:
            return handler
        behaviour = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
        verdict = self._verdict(getattr(behaviour, "rpc_access", None), method, details.invocation_metadata)
        if not isinstance(verdict, auth.Principal):
            return _refuse(handler, *verdict)
        if handler.unary_stream:
            return handler._replace(unary_stream=self._bounded(handler.unary_stream))
        return handler._replace(unary_unary=_as(verdict, handler.unary_unary)) if handler.unary_unary else handler

    def _verdict(self, needed: str | None, method: str, metadata: Any) -> auth.Principal | tuple[grpc.StatusCode, str]:
        """The caller, or why it is refused."""
        if needed is None:
            return grpc.StatusCode.PERMISSION_DENIED, f"{method} declares no access rule, so nobody may call it"
        header = dict(metadata or ()).get("authorization")
        try:
            principal = auth.from_header(keys.ring(), header, audience=self.audience)
        except auth.InvalidToken as exc:
            return grpc.StatusCode.UNAUTHENTICATED, f"a valid bearer token for {self.audience} is required: {exc}"
        if not principal.may(self.audience, needed):
            return grpc.StatusCode.PERMISSION_DENIED, f"{method} needs {auth.needed_roles(self.audience, needed)}"
        if principal.team_scope(self.audience, needed) is not None:  # no gRPC method confines to a team
            roles = auth.needed_roles(self.audience, needed)
            return grpc.StatusCode.PERMISSION_DENIED, f"{method} is not confined to a team: it needs {roles}"
        return principal

    def _bounded(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        """A stream takes a slot or is refused; the slot is freed when the call ends for any
        reason, a client that stopped reading included (its deadline ends the call)."""

        def run(request: Any, context: grpc.ServicerContext) -> Iterable[Any]:
            if not self.streams.acquire(blocking=False):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many streams at once; retry shortly")
            release = _once(self.streams.release)
            context.add_callback(release)
            try:
                yield from behaviour(request, context)
            finally:
                release()

        return run


_caller: contextvars.ContextVar[auth.Principal | None] = contextvars.ContextVar("grpc_caller", default=None)


def actor() -> str:
    """Who is calling, as events record it: `service:<name>` or `user:<subject>`."""
    principal = _caller.get()
    if principal is None:
        return "anonymous"
    subject = principal.subject
    return subject if subject.startswith(auth.SERVICE_KID_PREFIX) else f"user:{subject}"


def _as(principal: auth.Principal, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    """A unary `behaviour` run with `principal` as the caller `actor()` names."""

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        token = _caller.set(principal)
        try:
            return behaviour(request, context)
        finally:
            _caller.reset(token)

    return unary


def _refuse(handler: Any, code: grpc.StatusCode, detail: str) -> Any:
    """The handler, its behaviour replaced by a refusal (the servicer never runs)."""

    def deny(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, detail)

    kind = next(k for k in ("unary_unary", "unary_stream", "stream_unary", "stream_stream") if getattr(handler, k))
    return handler._replace(**{kind: deny})


def _once(action: Callable[[], Any]) -> Callable[[], None]:
    lock, done = threading.Lock(), [False]

    def run() -> None:
        with lock:
            if not done[0]:
                done[0] = True
                action()

    return run


def bind_address(port: int) -> str:
    """Where the server listens: CRM_GRPC_BIND (127.0.0.1 locally; the Kubernetes manifests set 0.0.0.0)."""
    return f"{settings.chassis().grpc_bind}:{port}"


def build_server(
    service: str,
    port: int,
    register: Callable[[grpc.Server], Iterable[str]],
    max_workers: int = 16,
    max_streams: int | None = None,
    max_connection_age: float = MAX_CONNECTION_AGE,
) -> tuple[grpc.Server, health.HealthServicer]:
    """A server with the service's servicers, grpc.health.v1 and reflection, listening on `port`.

    `register` adds the servicers and returns their full names (for health and reflection).
    At most `max_streams` server streams run at once (default: half the workers, so
    lookups always find a thread); one more is RESOURCE_EXHAUSTED. Connections are closed
    after `max_connection_age` seconds so that clients spread over new replicas too.
    """
    streams = max_streams or settings.chassis().grpc_max_streams or max(1, max_workers // 2)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"grpc-{service}"),
        interceptors=[_Observed(service), _Authenticated(service, streams)],
        options=[
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a listener shared with a stray server
            ("grpc.max_connection_age_ms", int(max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(MAX_CONNECTION_AGE_GRACE * 1000)),
        ],
    )
    names = list(register(server))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    bound = server.add_insecure_port(bind_address(port))
    if bound == 0:
        raise OSError(f"could not bind gRPC port {port}")
    return server, health_servicer


def require(condition: bool, field: str, message: str) -> None:
    """Reject a bad argument the way every servicer should: INVALID_ARGUMENT naming the field."""
    if not condition:
        raise ValidationFailed(message, {field: [message]})


def require_all(*checks: tuple[bool, str, str]) -> None:
    """`require` for several (condition, field, message) checks at once: a caller learns of every
    bad field in one answer (the BadRequest detail lists them), not one per retry."""
    errors: dict[str, list[str]] = {}
    for condition, field, message in checks:
        if not condition:
            errors.setdefault(field, []).append(message)
    if errors:
        raise ValidationFailed("; ".join(m for messages in errors.values() for m in messages), errors)


def timestamp(moment: datetime | str | None) -> timestamp_pb2.Timestamp | None:
    """A time as a google.protobuf.Timestamp field beside its RFC 3339 string; None (the field
    left unset) when there is no time or the stored text is not one."""
    if isinstance(moment, str):
        try:
            moment = parse_time(moment) if moment else None
        except ValueError:
            return None
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return stamp


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call; `mint` makes a fresh token once `renew_after` has passed."""

    def __init__(self, mint: Callable[[], str], renew_after: float) -> None:
        self.mint, self.renew_after = mint, renew_after
        self._token, self._renew_at = "", 0.0
        self._lock = threading.Lock()

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def _with_token(self, details: Any) -> _CallDetails:
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {self._current()}")]
        return _CallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready, details.compression
        )

    def _current(self) -> str:
        with self._lock:
            if time.monotonic() >= self._renew_at:
                self._token = self.mint()
                self._renew_at = time.monotonic() + self.renew_after
            return self._token


def channel(
    target: str, *, audience: str, caller: str | None = None, max_receive_bytes: int | None = None
) -> grpc.Channel:
    """A channel to `audience`'s server at `target` whose calls carry a service token of `caller`
    (default: this process's service), holding only the roles that service is granted; the
    token lives minutes and is re-minted halfway through its life. `max_receive_bytes` raises
    gRPC's 4 MiB cap on one answer, for the few calls whose answers may be larger."""

    def mint() -> str:
        name = caller or keys.identity()
        if name is None:
            raise RuntimeError("this process has no service identity (CRM_SERVICE_NAME) to call as")
        return auth.service_token(name, keys.own_key(name), slug(audience))

    extra = (("grpc.max_receive_message_length", max_receive_bytes),) if max_receive_bytes else ()
    return grpc.intercept_channel(_balanced(target, extra), _Bearer(mint, auth.SERVICE_TOKEN_TTL / 2))


def token_channel(target: str, token: str) -> grpc.Channel:
    """A channel whose calls carry `token` (a person's, from `crm token`): for tools and tests."""
    return grpc.intercept_channel(_balanced(target), _Bearer(lambda: token, float("inf")))


def _balanced(target: str, extra: tuple[tuple[str, Any], ...] = ()) -> grpc.Channel:
    """A channel that balances calls round robin over the target's addresses (CHANNEL_OPTIONS)."""
    return grpc.insecure_channel(target, options=(*CHANNEL_OPTIONS, *extra))


R = TypeVar("R")


def call(
    method: Callable[..., R],
    request: Any,
    *,
    timeout: float = DEFAULT_DEADLINE,
    attempts: int = 3,
    backoff: float = 0.05,
) -> R:
    """Call a lookup with a deadline, retrying only UNAVAILABLE (the request never ran)."""
    metadata = (("x-correlation-id", correlation_id.get() or ""),)
    for attempt in range(attempts):
        try:
            return method(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts - 1:
                raise
            time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")
