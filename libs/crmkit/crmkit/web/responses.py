"""JSON responses for aggregates: RFC 3339 times, ETag from the version, Location on create."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Response, jsonify

from crmkit.events import rfc3339


def jsonable(value: Any) -> Any:
    """Times as RFC 3339 strings, recursively; everything else as is."""
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def resource(view: dict[str, Any], status: int = 200, location: str | None = None) -> Response:
    """One aggregate, with `ETag: "<version>"` so the client can send it back as If-Match."""
    response = jsonify(jsonable(view))
    response.status_code = status
    response.headers["ETag"] = f'"{view["version"]}"'
    if location:
        response.headers["Location"] = location
    return response


def listing(items: list[dict[str, Any]], next_cursor: str | None) -> Response:
    return jsonify({"items": jsonable(items), "next_cursor": next_cursor})
