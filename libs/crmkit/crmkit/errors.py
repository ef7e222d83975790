"""Domain-level failures, mapped once to HTTP problem details and gRPC status codes.

Domain code raises these without knowing about Flask or gRPC; the edges translate.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base: a request that cannot be carried out as asked."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}


class NotFound(DomainError):
    status = 404
    title = "Not found"


class ValidationFailed(DomainError):
    """One or more fields are wrong; `errors` lists every one of them."""

    status = 422
    title = "Validation failed"


class Conflict(DomainError):
    """A duplicate, a concurrent change, or a transition the current state forbids."""

    status = 409
    title = "Conflict"


class PreconditionFailed(DomainError):
    status = 412
    title = "Precondition failed"


class Unavailable(DomainError):
    """A dependency this request needs (another service, the database) is not answering."""

    status = 503
    title = "Service unavailable"
