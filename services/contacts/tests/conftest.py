"""Fixtures for the contacts service's tests."""

from collections.abc import Iterator

import pytest

from crm_contacts.app import SERVICE
from crmkit.testing import ServiceHarness, harness


@pytest.fixture
def contacts(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[ServiceHarness]:
    with harness(SERVICE, monkeypatch, service_env) as subject:
        yield subject
