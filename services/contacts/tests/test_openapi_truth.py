"""The contacts OpenAPI document tells the truth (issue 18): what it calls valid is accepted, what it
calls invalid refused. The fuzz run (tests/fuzz) checks that through the API; these pin the parts
behind it: each text field's documented pattern against the field itself, and the answers and
parameters the fuzzer found undocumented."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError

from crm_contacts.records import schemas
from crmkit.testing import ServiceHarness

FIELDS = {
    "text": schemas.Text(100),
    "required text": schemas.Text(100, allow_none=False),
    "email": schemas.Email(),
    "domain": schemas.Domain(allow_none=False),
    "locale": schemas.Locale(),
    "website": schemas.Website(),
}
# characters that stress each rule: spaces of every kind, controls, letters whose NFKC or lower case differ
ALPHABET = st.sampled_from(
    [
        *"aZ09.-_@:/+# ()",
        " ",
        "\t",
        "\n",
        "\x1c",
        "\x00",
        "\x7f",
        "\u00a0",
        "\u200c",
        "\uff20",
        "\u00a8",
        "\u212a",
        "\u0130",
        "\u06f0",
        "ی",
    ]
)
SHAPED = st.one_of(
    st.text(ALPHABET, max_size=30),
    st.text(max_size=30),
    st.from_regex(schemas.trimmed(schemas._EMAIL, True), fullmatch=True),
    st.from_regex(schemas.trimmed(schemas._URL, True), fullmatch=True),
    st.from_regex(schemas.trimmed(schemas._LOCALE, True), fullmatch=True),
)


def loads(field: Any, value: str) -> bool:
    schema = Schema.from_dict({"value": field})()
    try:
        schema.load({"value": value})
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("name", FIELDS)
@settings(max_examples=150, deadline=None)
@given(value=SHAPED)
@example(value=" a\x01 ")
@example(value="  ")
@example(value="exampl\u212a.com")  # the Kelvin sign lower-cases to k: judged as sent, it is no domain
@example(value="a\u00a8b@example.com")  # NFKC makes ¨ a space: the address was judged as sent
def test_a_text_field_accepts_exactly_what_its_documented_pattern_and_cap_allow(name: str, value: str) -> None:
    field = FIELDS[name]
    documented = re.search(field.metadata["pattern"], value) is not None and len(value) <= field.max_length
    assert loads(field, value) == documented


@settings(max_examples=150, deadline=None)
@given(
    value=st.one_of(
        st.text(st.sampled_from([*"+0123456789 ().-a", "۰", "\t", "\x00"]), max_size=20), st.text(max_size=20)
    )
)
def test_a_phone_off_its_documented_pattern_is_refused(value: str) -> None:
    field = schemas.Phone()
    if re.search(field.metadata["pattern"], value) is None or len(value) > field.max_length:
        assert not loads(field, value)


def test_time_zones_are_the_documented_enum_exactly() -> None:
    field = schemas.TimeZone()
    assert field.metadata["enum"][0] == "" and "Asia/Tehran" in field.metadata["enum"]
    assert loads(field, "Asia/Tehran") and loads(field, "")
    assert not loads(field, " Asia/Tehran") and not loads(field, "Mars/Olympus")


def document(contacts: ServiceHarness) -> dict[str, Any]:
    return contacts.client.get("/openapi.json").get_json()


def test_the_document_states_the_channel_the_history_cursor_and_what_imports_refuse(contacts: ServiceHarness) -> None:
    paths = document(contacts)["paths"]
    channel = [
        p for p in paths["/v1/contacts/{contact_id}/consents/{channel}"]["put"]["parameters"] if p["name"] == "channel"
    ]
    assert channel == [
        {
            "in": "path",
            "name": "channel",
            "required": True,
            "schema": {"type": "string", "enum": ["email", "sms", "fax", "phone"]},
        }
    ]
    for path in ("/v1/contacts/{contact_id}/history", "/v1/segments/{segment_id}/history"):
        cursor = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
        assert re.fullmatch(cursor["next_cursor"]["pattern"], "17")
    upload = paths["/v1/imports"]["post"]
    assert "400" in upload["responses"]
    assert all(media["schema"]["minLength"] == 1 for media in upload["requestBody"]["content"].values())
    three_sixty = paths["/v1/contacts/{contact_id}/360"]["get"]["responses"]["200"]
    assert "schema" in three_sixty["content"]["application/json"]


def test_consents_answer_as_documented(contacts: ServiceHarness) -> None:
    sara = contacts.client.post("/v1/contacts", json={"first_name": "Sara"}, headers=contacts.headers()).get_json()
    contacts.client.put(
        f"/v1/contacts/{sara['id']}/consents/email", json={"status": "granted"}, headers=contacts.headers()
    )
    answer = contacts.client.get(f"/v1/contacts/{sara['id']}/consents", headers=contacts.headers()).get_json()
    view = document(contacts)["components"]["schemas"]["ConsentsView"]["properties"]
    assert set(answer) == set(view) == {"contact_id", "consents"}
    assert answer["consents"]["email"]["status"] == "granted"
    unknown = contacts.client.put(
        f"/v1/contacts/{sara['id']}/consents/pigeon", json={"status": "granted"}, headers=contacts.headers()
    )
    assert unknown.status_code == 422 and set(unknown.get_json()["errors"]) == {"channel"}


def test_erasure_honours_if_match(contacts: ServiceHarness) -> None:
    sara = contacts.client.post("/v1/contacts", json={"first_name": "Sara"}, headers=contacts.headers()).get_json()
    url = f"/v1/contacts/{sara['id']}/erasure"
    for header, status in (("", 422), ("nope", 422), ('"7"', 412)):
        headers = contacts.headers("contacts:erase", **{"If-Match": header})
        response = contacts.client.post(url, json={}, headers=headers)
        assert response.status_code == status, (header, response.get_json())
    erased = contacts.client.post(url, json={}, headers=contacts.headers("contacts:erase", **{"If-Match": '"1"'}))
    assert erased.status_code == 200 and erased.get_json()["status"] == "erased"


def test_any_cursor_of_the_documented_shape_is_a_position_in_the_duplicates(contacts: ServiceHarness) -> None:
    for name in ("Ana", "Bo"):
        contacts.client.post(
            "/v1/contacts", json={"first_name": name, "email": "same@example.com"}, headers=contacts.headers()
        )
    contacts.project()
    first = contacts.client.get("/v1/duplicates", headers=contacts.headers()).get_json()
    assert len(first["items"]) == 1
    # "0000" is the key "\xd3M4" and "AA" a NUL (read as U+FFFD): after every reason; "Lw" is "/": before all
    for cursor, expected in (("0" * 200, []), ("AA", []), ("Lw", first["items"])):
        page = contacts.client.get("/v1/duplicates", query_string={"cursor": cursor}, headers=contacts.headers())
        assert page.status_code == 200 and page.get_json()["items"] == expected, cursor
    malformed = contacts.client.get("/v1/duplicates", query_string={"cursor": "!"}, headers=contacts.headers())
    assert malformed.status_code == 422


def test_the_rules_across_fields_are_documented_and_kept(contacts: ServiceHarness) -> None:
    components = document(contacts)["components"]["schemas"]
    one_of = components["ContactCreate"]["anyOf"]
    assert [branch["required"] for branch in one_of] == [["first_name"], ["last_name"], ["email"], ["phone"]]
    nobody = contacts.client.post("/v1/contacts", json={"first_name": " ", "email": ""}, headers=contacts.headers())
    assert nobody.status_code == 422
    assert components["CompanyInput"]["properties"]["name"].get("nullable") is not True
    acme = contacts.client.post("/v1/companies", json={"name": "Acme"}, headers=contacts.headers()).get_json()
    for name in (None, " "):
        cleared = contacts.client.patch(f"/v1/companies/{acme['id']}", json={"name": name}, headers=contacts.headers())
        assert cleared.status_code == 422 and set(cleared.get_json()["errors"]) == {"name"}
    assert components["ConsentView"]["properties"]["source"]["nullable"] is True
    sara = contacts.client.post("/v1/contacts", json={"first_name": "Sara"}, headers=contacts.headers()).get_json()
    for source in ("", " ", None):  # was null in the event, which the event catalogue refuses: a 500
        blank = contacts.client.put(
            f"/v1/contacts/{sara['id']}/consents/sms",
            json={"status": "granted", "source": source},
            headers=contacts.headers(),
        )
        assert blank.status_code == 422 and set(blank.get_json()["errors"]) == {"source"}
