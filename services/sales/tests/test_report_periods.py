"""Every report's period is capped (crmkit.web.periods), with a 422 naming the cap."""

from crmkit.testing import ServiceHarness
from crmkit.web.periods import MAX_PERIOD_DAYS


def test_a_forecast_over_a_century_is_a_422_naming_the_cap(sales: ServiceHarness) -> None:
    too_long = sales.client.get(
        "/v1/forecast", query_string={"from": "1900-01-01", "to": "2026-01-01"}, headers=sales.headers()
    )
    assert too_long.status_code == 422
    assert str(MAX_PERIOD_DAYS) in too_long.get_json()["errors"]["to"][0]
    within = sales.client.get(
        "/v1/forecast", query_string={"from": "2026-01-01", "to": "2026-12-31"}, headers=sales.headers()
    )
    assert within.status_code == 200
