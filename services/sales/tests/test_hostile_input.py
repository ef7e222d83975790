"""Inputs the fuzzer's hand probes (tests/fuzz) turned into 500s: each is now a 4xx naming the field."""

from __future__ import annotations

from crmkit.testing import ServiceHarness


def test_an_activity_due_at_a_time_with_no_utc_equivalent_is_422_and_stores_nothing(sales: ServiceHarness) -> None:
    before = sales.runtime.store.count()
    for moment in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):  # was a 500: OverflowError
        response = sales.client.post(
            "/v1/activities", headers=sales.headers(), json={"type": "call", "subject": "Call back", "due_at": moment}
        )
        assert response.status_code == 422 and set(response.get_json()["errors"]) == {"due_at"}, response.get_json()
    assert sales.runtime.store.count() == before
