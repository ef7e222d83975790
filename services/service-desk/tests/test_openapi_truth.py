"""What the service desk's OpenAPI document promises, checked against what serves it (issue 18).

The fuzz run (tests/fuzz, every schemathesis check) finds a mismatch by chance; these pin
the ones found: the survey answer's status, the request line the HTTP server accepts, and
the holidays_from constraints.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from crm_servicedesk import holiday_sources
from crm_servicedesk.schemas import ZONES
from crmkit import gunicorn_conf
from crmkit.events import rfc3339, utcnow
from crmkit.testing import ServiceHarness

WIDEST = "\U0001f600"  # a character that percent-encodes to the most bytes (12)


def document(desk: ServiceHarness) -> dict[str, Any]:
    response = desk.client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_the_survey_answer_is_documented_as_the_201_it_is(desk: ServiceHarness) -> None:
    responses = document(desk)["paths"]["/v1/surveys/{token}"]["post"]["responses"]
    assert "200" not in responses
    assert set(responses["201"]["content"]) == {"text/html", "application/json"}


def _longest(schema: dict[str, Any]) -> str:
    """The longest value a string parameter's schema allows, in the characters that encode longest."""
    if "enum" in schema:
        return max((str(value) for value in schema["enum"]), key=len)
    bounded = re.search(r"^\^\[A-Za-z0-9:._-\]\{1,(\d+)\}\$$", schema.get("pattern", ""))
    if bounded:  # an id: ASCII, its length in the pattern
        return "A" * int(bounded.group(1))
    if schema.get("type") == "string":
        return WIDEST * schema["maxLength"]
    return "1" * 20  # an integer or a boolean


def test_a_list_query_at_every_documented_maximum_fits_the_server_s_request_line(desk: ServiceHarness) -> None:
    parameters = document(desk)["paths"]["/v1/tickets"]["get"]["parameters"]
    query = [p for p in parameters if p["in"] == "query"]
    assert {"tag", "assignee", "group", "customer_tier", "cursor"} <= {p["name"] for p in query}
    line = "GET /v1/tickets?" + "&".join(f"{p['name']}={quote(_longest(p['schema']), safe='')}" for p in query)
    assert len(f"{line} HTTP/1.1") > 4094  # what gunicorn's default would refuse with a 414
    assert len(f"{line} HTTP/1.1") <= gunicorn_conf.limit_request_line


def test_holidays_from_states_its_countries_and_years(desk: ServiceHarness) -> None:
    schemas = document(desk)["components"]["schemas"]
    holidays_from = next(schema for name, schema in schemas.items() if name.startswith("HolidaysFrom"))
    country, years = holidays_from["properties"]["country"], holidays_from["properties"]["years"]
    assert country["enum"] == sorted(holiday_sources.countries()) and "IR" in country["enum"]
    assert (years["items"]["minimum"], years["items"]["maximum"]) == (
        holiday_sources.MIN_YEAR,
        holiday_sources.MAX_YEAR,
    )
    assert (years["minItems"], years["maxItems"]) == (1, holiday_sources.MAX_YEARS)


def test_a_revision_documents_that_it_must_change_something(desk: ServiceHarness) -> None:
    schemas = document(desk)["components"]["schemas"]
    revision = next(schema for name, schema in schemas.items() if name.startswith("PolicyRevision"))
    assert {"name", "targets", "business_hours", "holidays", "holidays_from"} <= {
        name for option in revision["anyOf"] for name in option["required"]
    }
    created = desk.client.post(
        "/v1/sla-policies",
        json={"name": "P", "targets": {"normal": {"resolution": 60}}},
        headers=desk.headers("servicedesk:write"),
    )
    path = f"/v1/sla-policies/{created.get_json()['id']}"
    write = desk.headers("servicedesk:write")
    refused = desk.client.patch(path, json={"effective_at": rfc3339(utcnow())}, headers=write)
    assert refused.status_code == 422 and set(refused.get_json()["errors"]) == {"_body"}


def test_text_the_document_calls_blank_is_refused_and_text_it_allows_is_taken(desk: ServiceHarness) -> None:
    """Python and ECMAScript disagree on blanks (U+0085, U+FEFF): the pattern names them, the server trims them."""
    parameters = document(desk)["paths"]["/v1/tickets"]["get"]["parameters"]
    pattern = re.compile(next(p for p in parameters if p["name"] == "assignee")["schema"]["pattern"])
    assert "\\s" not in pattern.pattern  # \s means other characters to other engines
    cases = {
        "\r\r\n\x85\x0c \n": 422,
        "\ufeff": 422,
        "\u3000\xa0": 422,
        "\x85a\x85": 200,
        "سارا\ufeff": 200,
        " x ": 200,
    }
    for value, status in cases.items():
        answer = desk.client.get(
            "/v1/tickets", query_string={"assignee": value}, headers=desk.headers("servicedesk:read")
        )
        assert answer.status_code == status == (200 if pattern.search(value) else 422), (value, answer.get_json())


def test_business_hours_give_the_shape_of_every_time_zone_they_take(desk: ServiceHarness) -> None:
    schemas = document(desk)["components"]["schemas"]
    zone = next(schema for name, schema in schemas.items() if name.startswith("BusinessHoursInput"))["properties"][
        "time_zone"
    ]
    assert all(re.search(zone["pattern"], name) and len(name) <= zone["maxLength"] for name in ZONES)


def test_a_reassignment_documents_that_it_names_someone(desk: ServiceHarness) -> None:
    schemas = document(desk)["components"]["schemas"]
    escalation = next(schema for name, schema in schemas.items() if name.startswith("EscalationInput"))
    assert {"assignee", "group"} <= {name for option in escalation["anyOf"] for name in option.get("required", [])}
    refused = desk.client.post(
        "/v1/sla-policies",
        json={"name": "P", "targets": {"normal": {"resolution": 60}}, "escalation": {"action": "reassign"}},
        headers=desk.headers("servicedesk:write"),
    )
    assert refused.status_code == 422 and set(refused.get_json()["errors"]) == {"escalation.assignee"}
