"""Domain-level failures: what went wrong, in the domain's words.

Domain code raises these without knowing about HTTP or gRPC; each edge maps the class to
its own status once (`crmkit.web.problems.STATUSES` for REST problem details,
`crmkit.rpc.STATUS_FOR` for gRPC), so the classes carry no transport's codes.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base: a request that cannot be carried out as asked."""

    def __init__(self, detail: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}


class NotFound(DomainError):
    """The record named does not exist (or is not one the caller may know of)."""


class ValidationFailed(DomainError):
    """One or more fields are wrong; `errors` lists every one of them."""


class Conflict(DomainError):
    """A duplicate, a concurrent change, or a transition the current state forbids."""


class PreconditionFailed(DomainError):
    """The caller decided against a version of the record that is no longer the current one."""


class Unavailable(DomainError):
    """A dependency this request needs (another service, the database) is not answering."""
