"""Pieces of the REST edge that need no servers: problems, cursors, rate limits, If-Match."""

from __future__ import annotations

import importlib
import json
import re
from datetime import UTC, datetime

import pytest
from flask import Flask
from marshmallow import Schema, ValidationError, fields, validate

from crmkit.errors import ValidationFailed
from crmkit.web import if_match, jsonable, listing, resource
from crmkit.web.endpoint import IF_MATCH_PATTERN, RateLimiter
from crmkit.web.pagination import CURSOR_PATTERN, decode_cursor, encode_cursor
from crmkit.web.problems import PROBLEM_JSON, flatten, problem, status_of

endpoint_module = importlib.import_module("crmkit.web.endpoint")  # crmkit.web.endpoint is also a function


class Address(Schema):
    city = fields.String(required=True)
    postcode = fields.String(validate=validate.Length(max=5))


class Line(Schema):
    sku = fields.String(required=True)
    quantity = fields.Integer(validate=validate.Range(min=1))


class Order(Schema):
    name = fields.String(required=True)
    tags = fields.List(fields.String())
    address = fields.Nested(Address)
    lines = fields.List(fields.Nested(Line))


class TestFlatten:
    def test_flat_messages_stay(self) -> None:
        assert flatten({"name": ["Missing data for required field."]}) == {"name": ["Missing data for required field."]}

    def test_nested_dicts_and_list_indexes_become_dotted_paths(self) -> None:
        messages = {
            "address": {"city": ["Missing."], "postcode": ["Too long.", "Bad."]},
            "tags": {0: ["Not a valid string."], 2: ["Not a valid string."]},
            "lines": {1: {"quantity": ["Too small."]}},
            "_schema": ["Inconsistent."],
        }
        assert flatten(messages) == {
            "address.city": ["Missing."],
            "address.postcode": ["Too long.", "Bad."],
            "tags.0": ["Not a valid string."],
            "tags.2": ["Not a valid string."],
            "lines.1.quantity": ["Too small."],
            "_body": ["Inconsistent."],
        }

    def test_lists_of_error_dicts_are_indexed(self) -> None:
        assert flatten({"items": [{"a": ["x"]}, {"b": ["y"]}]}) == {"items.0.a": ["x"], "items.1.b": ["y"]}

    def test_bare_values(self) -> None:
        assert flatten(["whole body is wrong"]) == {"_body": ["whole body is wrong"]}
        assert flatten("oops") == {"_body": ["oops"]}

    def test_every_failing_field_of_a_real_marshmallow_error(self) -> None:
        with pytest.raises(ValidationError) as caught:
            Order().load(
                {
                    "tags": ["ok", 5],
                    "address": {"postcode": "1234567"},
                    "lines": [{"sku": "a", "quantity": 1}, {"quantity": 0}],
                    "unknown": True,
                }
            )
        assert set(flatten(caught.value.messages)) == {
            "name",
            "tags.1",
            "address.city",
            "address.postcode",
            "lines.1.sku",
            "lines.1.quantity",
            "unknown",
        }
        assert all(
            isinstance(m, list) and all(isinstance(s, str) for s in m) for m in flatten(caught.value.messages).values()
        )


class TestProblem:
    def test_problem_details_shape(self) -> None:
        with Flask(__name__).app_context():
            response = problem(422, "2 fields failed", {"a": ["bad"]}, {"Retry-After": "1"})
        assert response.status_code == 422
        assert response.mimetype == PROBLEM_JSON
        assert response.headers["Retry-After"] == "1"
        assert json.loads(response.get_data()) == {
            "type": "https://crm.example/problems/422",
            "title": "Validation failed",
            "status": 422,
            "detail": "2 fields failed",
            "errors": {"a": ["bad"]},
        }

    def test_no_errors_member_when_there_are_none(self) -> None:
        with Flask(__name__).app_context():
            body = json.loads(problem(404, "no such thing").get_data())
        assert "errors" not in body and body["title"] == "Not found"

    def test_unicode_detail_is_kept(self) -> None:
        with Flask(__name__).app_context():
            assert "مخاطب".encode() in problem(404, "مخاطب پیدا نشد").get_data()


class TestCursor:
    @pytest.mark.parametrize("last_id", ["0190a3c2-0000-7000-8000-000000000001", "a", "ab", "abc", "user:42.x_y"])
    def test_round_trip_and_url_safe(self, last_id: str) -> None:
        cursor = encode_cursor(last_id)
        assert decode_cursor(cursor) == last_id
        assert all(c.isalnum() or c in "-_" for c in cursor)

    @pytest.mark.parametrize("cursor", ["a", "!!!!", "%%%", "////", "abc$", "a b c d", "x" * 201, "abcde"])
    def test_a_cursor_of_another_shape_is_a_validation_failure(self, cursor: str) -> None:
        with pytest.raises(ValidationFailed) as caught:
            decode_cursor(cursor)
        assert status_of(caught.value) == 422
        assert "cursor" in caught.value.errors

    @pytest.mark.parametrize("cursor", ["_w", "00", "AAAA", encode_cursor('{"$gt": ""}'), encode_cursor("ایمیل")])
    def test_any_cursor_of_the_documented_shape_is_a_text_position(self, cursor: str) -> None:
        """The OpenAPI document gives the cursor's pattern: whatever matches it pages from
        somewhere (after the key it decodes to), so a schema-valid request is never refused."""
        assert re.match(CURSOR_PATTERN, cursor)
        position = decode_cursor(cursor)
        assert isinstance(position, str) and "\0" not in position


class TestRateLimiter:
    def test_allows_the_budget_then_refuses(self, monkeypatch: pytest.MonkeyPatch) -> None:
        clock = [1000.0]
        monkeypatch.setattr(endpoint_module.time, "monotonic", lambda: clock[0])
        limiter = RateLimiter(per_minute=3)
        assert [limiter.allow("alice") for _ in range(4)] == [True, True, True, False]
        assert limiter.allow("bob")  # buckets are per principal

    def test_refills_with_time(self, monkeypatch: pytest.MonkeyPatch) -> None:
        clock = [1000.0]
        monkeypatch.setattr(endpoint_module.time, "monotonic", lambda: clock[0])
        limiter = RateLimiter(per_minute=60)  # one a second
        for _ in range(60):
            assert limiter.allow("alice")
        assert not limiter.allow("alice")
        clock[0] += 0.5
        assert not limiter.allow("alice")
        clock[0] += 0.6
        assert limiter.allow("alice")
        assert not limiter.allow("alice")
        clock[0] += 3600  # never more than the capacity
        assert sum(limiter.allow("alice") for _ in range(100)) == 60

    def test_zero_means_unlimited(self) -> None:
        limiter = RateLimiter(per_minute=0)
        assert all(limiter.allow("alice") for _ in range(1000))


class TestIfMatch:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [(None, None), ("*", None), ('"3"', 3), ("3", 3), ('W/"12"', 12), (' "7" ', 7), ('"0"', 0)],
    )
    def test_parses_the_version(self, header: str | None, expected: int | None) -> None:
        headers = {} if header is None else {"If-Match": header}
        with Flask(__name__).test_request_context(headers=headers):
            assert if_match() == expected
        assert header is None or re.match(IF_MATCH_PATTERN, header.strip())  # what the OpenAPI document says

    @pytest.mark.parametrize("header", ['"abc"', '"-1"', '"1.5"', "", '"3", "4"', '"٣"', "yesterday"])
    def test_anything_else_is_bad_input_naming_the_header(self, header: str) -> None:
        """Not a stale version (that is the 412 of the check) but no version at all: a 422, as
        the document's pattern for If-Match says."""
        assert not re.match(IF_MATCH_PATTERN, header)
        with (
            Flask(__name__).test_request_context(headers={"If-Match": header}),
            pytest.raises(ValidationFailed) as caught,
        ):
            if_match()
        assert status_of(caught.value) == 422 and "If-Match" in caught.value.errors


class TestResponses:
    def test_resource_has_etag_location_and_rfc3339_times(self) -> None:
        view = {
            "id": "x",
            "version": 4,
            "at": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
            "nested": [{"at": datetime(2024, 1, 2, tzinfo=UTC)}],
        }
        with Flask(__name__).app_context():
            response = resource(view, 201, location="/v1/things/x")
        assert response.status_code == 201
        assert response.headers["ETag"] == '"4"'
        assert response.headers["Location"] == "/v1/things/x"
        assert json.loads(response.get_data()) == {
            "id": "x",
            "version": 4,
            "at": "2024-01-02T03:04:05.000Z",
            "nested": [{"at": "2024-01-02T00:00:00.000Z"}],
        }

    def test_listing_shape(self) -> None:
        with Flask(__name__).app_context():
            body = json.loads(listing([{"id": "a"}], None).get_data())
        assert body == {"items": [{"id": "a"}], "next_cursor": None}

    def test_jsonable_leaves_other_values(self) -> None:
        assert jsonable({"a": (1, "b"), "c": None}) == {"a": [1, "b"], "c": None}
