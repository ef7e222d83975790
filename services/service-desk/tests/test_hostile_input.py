"""Inputs the fuzzer's hand probes (tests/fuzz) turned into 500s: each is now a 4xx naming the field."""

from __future__ import annotations

from crmkit.testing import ServiceHarness


def test_a_report_from_a_time_with_no_utc_equivalent_is_422_naming_from(desk: ServiceHarness) -> None:
    for moment in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):  # was a 500: OverflowError
        response = desk.client.get("/v1/reports/sla", query_string={"from": moment}, headers=desk.headers())
        assert response.status_code == 422 and "from" in response.get_json()["errors"], response.get_json()
