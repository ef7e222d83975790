"""RFC 9457 problem details: every error a client sees has this one shape.

The REST edge decides each failure's status here, in one table from domain error class to
status (`STATUSES`); the problem's `type` and `title` follow from the status. Domain errors
(crmkit.errors) carry no HTTP; failures only the edge can have (`HttpError`: no credentials,
a malformed body, a rate limit) name their status themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from flask import Response, json

from crmkit.errors import Conflict, DomainError, NotFound, PreconditionFailed, Unavailable, ValidationFailed

PROBLEM_JSON = "application/problem+json"

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    412: "Precondition failed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation failed",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


STATUSES: dict[type[DomainError], int] = {
    NotFound: 404,
    ValidationFailed: 422,
    Conflict: 409,
    PreconditionFailed: 412,
    Unavailable: 503,
}


class HttpError(DomainError):
    """A failure of the HTTP exchange itself, which only the web edge raises: it names its status."""

    status: ClassVar[int] = 400


def status_of(error: DomainError) -> int:
    """The HTTP status of a failure: an `HttpError`'s own, else that of the nearest class in
    `STATUSES` (a subclass such as `LinkNotValid(NotFound)` answers as its base); 400 otherwise."""
    if isinstance(error, HttpError):
        return error.status
    return next((STATUSES[kind] for kind in type(error).__mro__ if kind in STATUSES), 400)


def problem(
    status: int,
    detail: str,
    errors: Mapping[str, list[str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": f"https://crm.example/problems/{status}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = dict(errors)
    response = Response(json.dumps(body, ensure_ascii=False), status=status, mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn marshmallow's nested error dict into {"a.b": ["message", ...]}."""
    if isinstance(messages, Mapping):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            name = str(key) if key != "_schema" else "_body"
            flat.update(flatten(value, f"{prefix}.{name}" if prefix else name))
        return flat
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return {prefix or "_body": list(messages)}
    if isinstance(messages, list):
        flat = {}
        for index, value in enumerate(messages):
            flat.update(flatten(value, f"{prefix}.{index}"))
        return flat
    return {prefix or "_body": [str(messages)]}
