"""Domain errors carry no HTTP: the REST edge maps each class to its status in one table."""

from __future__ import annotations

import pytest

from crmkit import errors
from crmkit.errors import Conflict, DomainError, NotFound, PreconditionFailed, Unavailable, ValidationFailed
from crmkit.web.endpoint import Forbidden, MalformedBody, TooManyRequests, Unauthorized
from crmkit.web.links import LinkExpired, LinkNotValid
from crmkit.web.problems import STATUSES, status_of


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (DomainError("refused"), 400),
        (NotFound("gone"), 404),
        (ValidationFailed("bad", {"a": ["x"]}), 422),
        (Conflict("taken"), 409),
        (PreconditionFailed("moved"), 412),
        (Unavailable("down"), 503),
        (LinkNotValid("forged"), 404),
        (LinkExpired("late"), 410),
        (Unauthorized("who"), 401),
        (Forbidden("no"), 403),
        (TooManyRequests("slow"), 429),
        (MalformedBody("json?"), 400),
    ],
)
def test_each_failure_answers_with_its_status(error: DomainError, status: int) -> None:
    assert status_of(error) == status


def test_a_subclass_answers_as_its_nearest_mapped_base() -> None:
    class AlreadyDone(Conflict):
        pass

    assert status_of(AlreadyDone("done")) == 409


def test_domain_error_classes_name_no_http_status() -> None:
    domain = [kind for kind in vars(errors).values() if isinstance(kind, type) and issubclass(kind, DomainError)]
    assert set(domain) - {DomainError} == set(STATUSES)  # every domain error is in the edge's table
    assert not [kind.__name__ for kind in domain if hasattr(kind, "status") or hasattr(kind, "title")]
