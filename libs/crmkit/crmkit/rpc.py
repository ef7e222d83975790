"""gRPC on both ends: a server with health, reflection, metrics and error mapping, and
a client helper that always sets a deadline and retries only what is safe to retry.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from crmkit import metrics
from crmkit.errors import Conflict, DomainError, NotFound, PreconditionFailed, Unavailable, ValidationFailed
from crmkit.logs import correlation_id

log = logging.getLogger(__name__)

DEFAULT_DEADLINE = 2.0  # seconds; callers may pass less, never "no deadline"

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


def _internal(exc: Exception, method: str, context: grpc.ServicerContext) -> str:
    """An unexpected failure: logged here, and the caller told only that it happened."""
    if context.code() is not None:  # the servicer already aborted with a status of its own
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
        cid = dict(details.invocation_metadata or ()).get("x-correlation-id", "")
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
            context.abort(_status_for(exc), exc.detail)
        except Exception as exc:
            code = _internal(exc, method, context)
        finally:
            self._observe(method, code, started)
            correlation_id.reset(token)

    def _observe(self, method: str, code: str, started: float) -> None:
        metrics.GRPC_LATENCY.labels(self.service, method, code).observe(time.perf_counter() - started)


def build_server(
    service: str, port: int, register: Callable[[grpc.Server], Iterable[str]], max_workers: int = 16
) -> tuple[grpc.Server, health.HealthServicer]:
    """A server with the service's servicers, grpc.health.v1 and reflection, listening on `port`.

    `register` adds the servicers and returns their full names (for health and reflection).
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"grpc-{service}"),
        interceptors=[_Observed(service)],
        options=[("grpc.so_reuseport", 0)],  # a port in use is an error, not a listener shared with a stray server
    )
    names = list(register(server))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    bound = server.add_insecure_port(f"0.0.0.0:{port}")
    if bound == 0:
        raise OSError(f"could not bind gRPC port {port}")
    return server, health_servicer


def require(condition: bool, field: str, message: str) -> None:
    """Reject a bad argument the way every servicer should: INVALID_ARGUMENT naming the field."""
    if not condition:
        raise ValidationFailed(message, {field: [message]})


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
