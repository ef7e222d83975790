"""The OpenAPI 3 document, built from the same `endpoint` declarations that do the checks."""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema, fields

from crmkit.web.problems import TITLES

PATH_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


class ProblemSchema(Schema):
    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


def build(app: Flask, title: str, description: str, version: str = "1.0.0") -> dict[str, Any]:
    spec = APISpec(
        title=title,
        version=version,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": description},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Problem", schema=ProblemSchema)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        declared = getattr(app.view_functions[rule.endpoint], "endpoint_spec", None)
        if declared is None:
            continue
        path = PATH_PARAM.sub(r"{\1}", rule.rule)
        operations = {
            method.lower(): _operation(declared, PATH_PARAM.findall(rule.rule), method)
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
        }
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _operation(declared: Any, path_params: list[str], method: str) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"in": "path", "name": name, "required": True, "schema": {"type": "string"}} for name in path_params
    ]
    if declared.query is not None:
        parameters.append({"in": "query", "schema": declared.query})
    if declared.idempotent:
        parameters.append({
            "in": "header", "name": "Idempotency-Key", "required": False, "schema": {"type": "string"},
            "description": "A repeat with the same key returns the first response and creates nothing.",
        })
    if method in ("PATCH", "PUT", "POST") and not declared.idempotent and path_params:
        parameters.append({
            "in": "header", "name": "If-Match", "required": False, "schema": {"type": "string"},
            "description": "The ETag (version) last seen; 412 when the record has moved on.",
        })
    operation: dict[str, Any] = {"summary": declared.summary, "parameters": parameters}
    if declared.body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": declared.body}}}
    success: dict[str, Any] = {"description": TITLES.get(declared.status, "OK")}
    if declared.response is not None:
        schema: Any = declared.response
        if declared.many:
            schema = {"type": "object", "properties": {
                "items": {"type": "array", "items": declared.response},
                "next_cursor": {"type": "string", "nullable": True},
            }}
        success = {"description": "OK", "content": {"application/json": {"schema": schema}}}
    responses: dict[str, Any] = {str(declared.status): success}
    problems = [400, 422] if (declared.body or declared.query) else []
    if declared.access is not None:
        problems += [401, 403, 429]
        operation["security"] = [{"bearer": []}]
    if path_params:
        problems += [404]
    if method in ("POST", "PATCH", "PUT"):
        problems += [409, 412] if path_params else [409]
    for status in sorted(set(problems)):
        responses[str(status)] = {
            "description": TITLES[status],
            "content": {"application/problem+json": {"schema": "Problem"}},
        }
    operation["responses"] = responses
    for name, value in (declared.openapi or {}).items():
        if name == "parameters":
            operation["parameters"] = [*operation["parameters"], *value]
        elif name == "responses":
            operation["responses"] = {**operation["responses"], **value}
        else:
            operation[name] = value
    return operation
