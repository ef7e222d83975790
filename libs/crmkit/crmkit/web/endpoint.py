"""The `endpoint` decorator: one place for auth, input validation and idempotency.

A view declares what it needs (role, body and query schemas, whether a repeat with the
same Idempotency-Key must replay) and receives already-validated input. The same
declaration feeds the OpenAPI document, so the docs cannot drift from the checks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, g, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from pymongo.errors import DuplicateKeyError

from crmkit import auth
from crmkit.errors import Conflict, DomainError, PreconditionFailed, ValidationFailed
from crmkit.events import Metadata
from crmkit.logs import correlation_id
from crmkit.web.pagination import DEFAULT_LIMIT, MAX_LIMIT
from crmkit.web.problems import flatten


class PageQuery(Schema):
    """`?limit=&cursor=` on every list; extend it with a list's own filters."""

    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(1, MAX_LIMIT))
    cursor = fields.String(load_default=None, validate=validate.Length(max=200))


@dataclass(frozen=True)
class EndpointSpec:
    """What a view declared; read by the OpenAPI builder."""

    access: str | None
    body: type[Schema] | None
    query: type[Schema] | None
    response: type[Schema] | None
    status: int
    idempotent: bool
    summary: str
    many: bool
    max_body: int | None = None  # bytes this route accepts (the app-wide cap is 1 MiB)
    openapi: dict[str, Any] | None = None  # extra operation fields (e.g. a non-JSON requestBody)


class Unauthorized(DomainError):
    status = 401
    title = "Unauthorized"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"


class TooManyRequests(DomainError):
    status = 429
    title = "Too many requests"


def endpoint(
    access: str | None,
    *,
    body: type[Schema] | None = None,
    query: type[Schema] | None = None,
    response: type[Schema] | None = None,
    status: int = 200,
    idempotent: bool = False,
    many: bool = False,
    max_body: int | None = None,
    openapi: dict[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a REST operation. `access` is "read", "write", "erase", or None for a public one.

    `max_body` raises the request-size cap for this route only (uploads); `openapi` adds
    operation fields the declaration cannot express (parameters and responses are merged).
    """

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        spec = EndpointSpec(
            access, body, query, response, status, idempotent,
            summary=(view.__doc__ or view.__name__).strip().splitlines()[0], many=many,
            max_body=max_body, openapi=openapi,
        )

        @functools.wraps(view)
        def wrapper(**path_args: Any) -> Any:
            if max_body is not None:
                request.max_content_length = max_body  # before anything reads the body
            if access is not None:
                _authorize(access)
            if query is not None:
                path_args["query"] = _load(query(), request.args.to_dict(), "query")
            if body is not None:
                path_args["body"] = _load(body(), _json_body(), "body")
            if idempotent and request.headers.get("Idempotency-Key"):
                return _idempotent(lambda: view(**path_args))
            return view(**path_args)

        wrapper.endpoint_spec = spec  # type: ignore[attr-defined]
        return wrapper

    return decorate


def metadata() -> Metadata:
    """Who is asking and in which conversation: recorded on every event."""
    principal = getattr(g, "principal", None)
    return Metadata(
        actor=f"user:{principal.subject}" if principal else "anonymous",
        correlation_id=correlation_id.get() or g.get("correlation_id", ""),
    )


def if_match() -> int | None:
    """The version the client last saw, from `If-Match: "<version>"` (None when absent)."""
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    text = raw.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise PreconditionFailed(f"If-Match {raw!r} is not a version this API issued")
    return int(text)


def _authorize(access: str) -> None:
    settings = current_app.config["CRM_SETTINGS"]
    try:
        principal = auth.from_header(current_app.config["CRM_JWT_SECRET"], request.headers.get("Authorization"))
    except auth.InvalidToken as exc:
        raise Unauthorized(f"a valid bearer token is required: {exc}") from None
    service = settings.slug
    if not principal.may(service, access):
        raise Forbidden(f"this needs the role {auth.needed_roles(service, access)}")
    g.principal = principal
    _rate_limit(principal.subject)


def _rate_limit(subject: str) -> None:
    limiter = current_app.extensions["crm_rate_limiter"]
    if not limiter.allow(subject):
        raise TooManyRequests("request rate limit reached; retry shortly")


class RateLimiter:
    """A token bucket per principal, per process: protects a process from one noisy client."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()  # gunicorn's threads share one limiter

    def allow(self, subject: str) -> bool:
        if self.rate <= 0:
            return True
        with self._lock:
            return self._take(subject)

    def _take(self, subject: str) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get(subject, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[subject] = (tokens, now)
            return False
        self._buckets[subject] = (tokens - 1, now)
        return True


class MalformedBody(DomainError):
    status = 400
    title = "Bad request"


def _json_body() -> Any:
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise MalformedBody("the request needs a JSON body")
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    """NaN, Infinity and -Infinity are not JSON (RFC 8259), though Python's parser takes them:
    echoed into events, they would break every strict reader of the topic."""
    raise ValueError(f"{name} is not a JSON value")


def optional_body(schema: type[Schema]) -> dict[str, Any]:
    """A body that may be left out entirely (an action such as POST /won): validated when given."""
    return _load(schema(), _json_body() if request.get_data(cache=True).strip() else {}, "body")


def _load(schema: Schema, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationFailed(f"the {where} must be a JSON object", {"_body": ["must be a JSON object"]})
    try:
        return schema.load(data)  # unknown fields are rejected (marshmallow's default: RAISE)
    except ValidationError as exc:
        errors = flatten(exc.messages)
        raise ValidationFailed(f"{len(errors)} field(s) failed validation", errors) from None


def _idempotent(run: Callable[[], Any]) -> Response:
    """Run a create once per Idempotency-Key; a repeat gets the first response back."""
    keys = current_app.extensions["crm_idempotency"]
    key = idempotency_key()
    fingerprint = hashlib.sha256(request.get_data(cache=True)).hexdigest()
    try:
        keys.insert_one({"_id": key, "fingerprint": fingerprint, "state": "running", "at": time.time()})
    except DuplicateKeyError:
        return replay(keys.find_one({"_id": key}) or {}, fingerprint)
    try:
        response = current_app.make_response(run())
    except BaseException:
        keys.delete_one({"_id": key})  # nothing was created: let the client try again
        raise
    if response.status_code >= 400:
        keys.delete_one({"_id": key})
        return response
    keys.update_one(
        {"_id": key},
        {"$set": {
            "state": "done",
            "resource": response.headers.get("Location"),  # lets erasure find stored bodies
            "status": response.status_code,
            "body": response.get_data(as_text=True),
            "headers": {k: v for k, v in response.headers.items() if k in ("ETag", "Location", "Content-Type")},
        }},
    )
    return response


def idempotency_key() -> str | None:
    """The record key of this request's Idempotency-Key (per caller, method and path), or None
    without one. Public for routes that store their responses themselves (streamed uploads)."""
    raw = request.headers.get("Idempotency-Key")
    if not raw:
        return None
    return hashlib.sha256(f"{g.principal.subject}\0{request.method}\0{request.path}\0{raw}".encode()).hexdigest()


def replay(stored: dict[str, Any], fingerprint: str) -> Response:
    """The stored response of a repeated request: 422 if the key came with another body, 409 while
    the first is still running."""
    if stored.get("fingerprint") != fingerprint:
        raise ValidationFailed(
            "this Idempotency-Key was used with a different request",
            {"Idempotency-Key": ["already used with a different body"]},
        )
    if stored.get("state") != "done":
        raise Conflict("a request with this Idempotency-Key is still being processed")
    response = Response(stored["body"], status=stored["status"], headers=stored.get("headers", {}))
    response.headers["Idempotent-Replayed"] = "true"
    return response
