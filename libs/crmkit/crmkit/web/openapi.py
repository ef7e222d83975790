"""The OpenAPI 3 document, built from the same `endpoint` declarations that do the checks.

Every operation gets an `operationId` (its view's name), a tag (the resource: the first
path segment after /v1/), and the problem responses the chassis can give it, derived from
what it declared: 401/403/429 with a role, 400/413/422 with a body, 422 with a query,
404 with a path id, 409/412 and a malformed If-Match's 422 on a versioned write.
"""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema, fields

from crmkit.web.endpoint import IDEMPOTENCY_KEY_SCHEMA, IF_MATCH_PATTERN, HistoryQuery
from crmkit.web.pagination import CURSOR_MAX, CURSOR_PATTERN, VERSION_CURSOR_PATTERN
from crmkit.web.problems import PROBLEM_JSON, TITLES

PATH_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


class ProblemSchema(Schema):
    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


# a time on the calendar's first day east of UTC, or on its last day west of it, may have no UTC
# equivalent (0001-01-01T00:00:00+14:00): the chassis refuses those (`endpoint._times_beyond_utc`)
YEARS_WITH_UTC = r"^(?!0001-01-01T[^+]*\+(?!00:00)|9999-12-31T[^-]*-(?!00:00))"


def _time_range(_converter: Any, field: fields.Field[Any], **_: Any) -> dict[str, Any]:
    """A time field's edges, as a pattern beside its `date-time` format (see YEARS_WITH_UTC)."""
    if isinstance(field, fields.DateTime) and not isinstance(field, fields.NaiveDateTime | fields.Date):
        return {"pattern": YEARS_WITH_UTC}
    return {}


class _Plugin(MarshmallowPlugin):
    """apispec's marshmallow plugin, plus what a field-by-field conversion cannot say: a schema
    class may carry `OPENAPI`, JSON Schema keywords merged into its component (e.g. `anyOf`
    for "give an assignee, a group, or both"), so that the rule is documented where it is."""

    def init_spec(self, spec: APISpec) -> None:
        super().init_spec(spec)
        assert self.converter is not None
        self.converter.add_attribute_function(_time_range)

    # MarshmallowPlugin names BasePlugin's `definition` `_`: no signature matches both of them
    def schema_helper(  # type: ignore[override]
        self,
        name: str,
        definition: dict[Any, Any],
        schema: Any = None,
        **kwargs: Any,
    ) -> dict[Any, Any] | None:
        # unannotated in apispec (untyped_calls_exclude in pyproject.toml does not reach a super() call)
        json_schema: dict[Any, Any] | None = super().schema_helper(  # type: ignore[no-untyped-call]
            name, definition, schema=schema, **kwargs
        )
        extra = getattr(schema if isinstance(schema, type) else type(schema), "OPENAPI", None)
        return {**json_schema, **extra} if json_schema is not None and extra else json_schema


def build(app: Flask, title: str, description: str, version: str = "1.0.0") -> dict[str, Any]:
    spec = APISpec(
        title=title,
        version=version,
        openapi_version="3.0.3",
        plugins=[_Plugin()],
        info={"description": description},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Problem", schema=ProblemSchema)
    seen: set[str] = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        declared = getattr(app.view_functions[rule.endpoint], "endpoint_spec", None)
        if declared is None:
            continue
        path = PATH_PARAM.sub(r"{\1}", rule.rule)
        operations = {}
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation = _operation(declared, PATH_PARAM.findall(rule.rule), method)
            operation_id = rule.endpoint.rsplit(".", 1)[-1]
            operation["operationId"] = operation_id if operation_id not in seen else f"{operation_id}_{method.lower()}"
            seen.add(operation["operationId"])
            operation["tags"] = [_tag(path)]
            operations[method.lower()] = operation
        spec.path(path=path, operations=operations)
    document: dict[str, Any] = _null_means_null(spec.to_dict())
    return document


def _null_means_null(node: Any) -> Any:
    """apispec writes a nullable nested schema as `anyOf: [{$ref}, {type: object, nullable: true}]`,
    whose second branch takes any object at all; the branch is meant to take only null."""
    if isinstance(node, dict):
        if node == {"type": "object", "nullable": True}:
            return {**node, "enum": [None]}
        return {key: _null_means_null(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_null_means_null(value) for value in node]
    return node


def _tag(path: str) -> str:
    """The resource an operation belongs to: `/v1/contacts/{id}/history` is about contacts."""
    parts = [part for part in path.split("/") if part]
    return parts[1] if len(parts) > 1 and parts[0] == "v1" else parts[0] if parts else "service"


def _operation(declared: Any, path_params: list[str], method: str) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"in": "path", "name": name, "required": True, "schema": {"type": "string"}} for name in path_params
    ]
    if declared.query is not None:
        parameters.append({"in": "query", "schema": declared.query})
    if declared.idempotent:
        parameters.append(
            {
                "in": "header",
                "name": "Idempotency-Key",
                "required": False,
                "schema": IDEMPOTENCY_KEY_SCHEMA,
                "description": "A repeat with the same key returns the first response and creates nothing.",
            }
        )
    # a write to a record names it in the path; public routes (signed links, receipts) carry no versions
    versioned = method in ("PATCH", "PUT", "POST") and bool(path_params) and declared.access is not None
    if versioned:
        parameters.append(
            {
                "in": "header",
                "name": "If-Match",
                "required": False,
                "schema": {"type": "string", "pattern": IF_MATCH_PATTERN},
                "description": "The ETag (version) last seen, or *; 412 when the record has moved on.",
            }
        )
    operation: dict[str, Any] = {"summary": declared.summary, "parameters": parameters}
    if declared.body is not None:
        operation["requestBody"] = {
            "required": not declared.body_optional,
            "content": {"application/json": {"schema": declared.body}},
        }
    success: dict[str, Any] = {"description": TITLES.get(declared.status, "OK")}
    if declared.response is not None:
        schema: Any = declared.response
        # a history's next cursor is the last version shown (HistoryQuery); a list's, a base64url key
        by_version = isinstance(declared.query, type) and issubclass(declared.query, HistoryQuery)
        cursor = (
            {"pattern": VERSION_CURSOR_PATTERN, "maxLength": 12}
            if by_version
            else {"pattern": CURSOR_PATTERN, "maxLength": CURSOR_MAX}
        )
        if declared.many:
            schema = {
                "type": "object",
                "required": ["items", "next_cursor"],
                "additionalProperties": False,
                "properties": {
                    "items": {"type": "array", "items": declared.response},
                    "next_cursor": {"type": "string", "nullable": True, **cursor},
                },
            }
        success = {"description": "OK", "content": {"application/json": {"schema": schema}}}
    responses: dict[str, Any] = {str(declared.status): success}
    for status in _problems(declared, bool(path_params), versioned):
        responses[str(status)] = {"description": TITLES[status], "content": {PROBLEM_JSON: {"schema": "Problem"}}}
    if path_params or declared.query is not None:
        responses["414"] = {
            "description": "URI too long: the HTTP server's cap on the request line (8190 bytes)",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    if declared.access is not None:
        operation["security"] = [{"bearer": []}]
    operation["responses"] = responses
    for name, value in (declared.openapi or {}).items():
        if name == "parameters":  # a parameter named again (a path parameter's enum) replaces the chassis' own
            named = {(parameter["in"], parameter["name"]) for parameter in value}
            operation["parameters"] = [
                *(
                    parameter
                    for parameter in operation["parameters"]
                    if (parameter["in"], parameter.get("name")) not in named
                ),
                *value,
            ]
        elif name == "responses":
            operation["responses"] = {**operation["responses"], **value}
        else:
            operation[name] = value
    return operation


def _problems(declared: Any, has_path_id: bool, versioned: bool) -> list[int]:
    """The problem statuses the chassis itself can answer for this declaration."""
    problems: set[int] = set()
    if declared.body is not None:
        problems |= {400, 413, 422}  # malformed JSON; over the size cap; a field fails validation
    if declared.query is not None:
        problems.add(422)
    if declared.access is not None:
        problems |= {401, 403, 429}
    if has_path_id:
        problems.add(404)
    if declared.idempotent:
        problems |= {409, 422}  # the key's first request still running; the key reused for another request
    if versioned:
        problems |= {409, 412, 422}  # illegal transition; If-Match stale; If-Match malformed
    return sorted(problems)
