"""Every report's period is capped (crmkit.web.periods), with a 422 naming the cap."""

from crmkit.testing import ServiceHarness
from crmkit.web.periods import MAX_PERIOD_DAYS


def test_an_sla_report_from_the_year_one_is_a_422_naming_the_cap(desk: ServiceHarness) -> None:
    for report in ("sla", "satisfaction"):
        too_long = desk.client.get(
            f"/v1/reports/{report}", query_string={"from": "0001-01-01T00:00:00Z"}, headers=desk.headers()
        )
        assert too_long.status_code == 422, report
        assert str(MAX_PERIOD_DAYS) in too_long.get_json()["errors"]["from"][0]
        within = desk.client.get(
            f"/v1/reports/{report}",
            query_string={"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"},
            headers=desk.headers(),
        )
        assert within.status_code == 200, report
