"""Every report's period is capped (crmkit.web.periods), with a 422 naming the cap."""

from crmkit.testing import ServiceHarness
from crmkit.web.periods import MAX_PERIOD_DAYS


def test_an_insight_report_over_a_century_is_a_422_naming_the_cap(contacts: ServiceHarness) -> None:
    too_long = contacts.client.get(
        "/v1/insights/churn",
        query_string={"from": "1900-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        headers=contacts.headers(),
    )
    assert too_long.status_code == 422
    assert str(MAX_PERIOD_DAYS) in too_long.get_json()["errors"]["from"][0]
    within = contacts.client.get(
        "/v1/insights/churn",
        query_string={"from": "2025-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        headers=contacts.headers(),
    )
    assert within.status_code == 200
