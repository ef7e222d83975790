"""The Flask app factory every service's `api` process uses.

It adds what every service needs and nothing service-specific: problem+json errors,
correlation ids, request metrics, health and readiness, Prometheus exposition, and the
OpenAPI document with a /docs page. Services contribute blueprints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import swagger_ui_bundle
from flask import Blueprint, Flask, Response, g, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException

from crmkit import metrics
from crmkit.config import ProjectionPolicy
from crmkit.errors import DomainError
from crmkit.events import new_id
from crmkit.logs import correlation_id
from crmkit.projector import projection_states
from crmkit.runtime import Runtime
from crmkit.settings import chassis
from crmkit.web import openapi
from crmkit.web.endpoint import IdempotencyKeys, RateLimiter
from crmkit.web.problems import problem, status_of

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024

DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{url: "/openapi.json", dom_id: "#ui"}});</script>
</body></html>"""


def create_app(runtime: Runtime, blueprints: Iterable[Blueprint], *, title: str, description: str) -> Flask:
    settings = runtime.settings
    app = Flask(f"crm-{settings.service}")
    app.config.update(
        CRM_SETTINGS=settings,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["crm_runtime"] = runtime
    app.extensions["crm_idempotency"] = idempotency = IdempotencyKeys.from_environment(runtime.db["idempotency_keys"])
    idempotency.ensure_indexes()
    app.extensions["crm_rate_limiter"] = RateLimiter(chassis().rate_limit_per_minute)

    _observe_requests(app, settings.service)
    _map_errors(app)
    _platform_routes(app, runtime, title, description)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    return app


# Any token can be sent as a method; each distinct one would be a new time series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _observe_requests(app: Flask, service: str) -> None:
    @app.before_request
    def start() -> None:
        g.started = time.perf_counter()
        g.correlation_id = request.headers.get("X-Correlation-ID", "")[:100] or new_id()
        g.correlation_token = correlation_id.set(g.correlation_id)

    @app.after_request
    def finish(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        method = request.method if request.method in KNOWN_METHODS else "other"  # a bounded label set
        metrics.HTTP_LATENCY.labels(service, method, route, str(response.status_code)).observe(elapsed)
        response.headers["X-Correlation-ID"] = g.get("correlation_id", "")
        if response.status_code >= 500:
            log.error(
                "request failed", extra={"method": request.method, "route": route, "status": response.status_code}
            )
        return response

    @app.teardown_request
    def forget(_exc: BaseException | None) -> None:
        token = g.pop("correlation_token", None)
        if token is not None:
            correlation_id.reset(token)


def _map_errors(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def domain_error(exc: DomainError) -> Response:
        status = status_of(exc)
        headers = {"Retry-After": "1"} if status == 429 else None
        return problem(status, exc.detail, exc.errors, headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        kept = {name: value for name, value in exc.get_headers() if name.lower() != "content-type"}  # e.g. 405 Allow
        return problem(exc.code or 500, exc.description or exc.name, headers=kept)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc, extra={"route": request.path})
        return problem(500, "an unexpected error occurred; it has been logged with the correlation id")


def _platform_routes(app: Flask, runtime: Runtime, title: str, description: str) -> None:
    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    stall_seconds = ProjectionPolicy.from_env().stall_seconds

    @app.get("/readyz")
    def readyz() -> Response | tuple[Response, int]:
        """503 when this process cannot serve (MongoDB, Kafka); 200 `degraded` when the
        worker's projections are stalled: reads may be stale, but writes and reads still
        work, so the pod stays in service (docs/operations.md, Readiness)."""
        problems = [p for p in (runtime.mongo_problem(), runtime.kafka_problem()) if p]
        if problems:
            return problem(503, "; ".join(problems))
        projections = projection_states(runtime.db, stall_seconds)  # none until the worker first reports
        stalled = [state["name"] for state in projections if state["state"] == "degraded"]
        if stalled:
            return jsonify(
                status="degraded",
                detail=f"projections not advancing while behind: {', '.join(stalled)}",
                projections=projections,
            )
        return jsonify(status="ready", **({"projections": projections} if projections else {}))

    @app.get("/metrics")
    def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    document: dict[str, Any] = {}

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        if not document:
            document.update(openapi.build(app, title, description))
        return jsonify(document)

    @app.get("/docs")
    def docs() -> Response:
        return Response(DOCS_PAGE.format(title=title), mimetype="text/html")

    @app.get("/docs/static/<path:filename>")
    def docs_static(filename: str) -> Response:
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)
