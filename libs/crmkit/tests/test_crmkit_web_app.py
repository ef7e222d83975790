"""The Flask app factory and `endpoint`, through a tiny service of their own, against the real servers."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask import Blueprint, Flask, Response
from flask.testing import FlaskClient
from marshmallow import Schema, fields, validate
from pymongo.database import Database

from crmkit import auth, stack
from crmkit.aggregate import Aggregate
from crmkit.config import Ports, Settings
from crmkit.errors import Conflict
from crmkit.events import RecordedEvent, new_id
from crmkit.logs import JsonFormatter
from crmkit.repository import Repository
from crmkit.runtime import Runtime
from crmkit.testing import Servers
from crmkit.web import PageQuery, create_app, endpoint, if_match, listing, metadata, page, resource

SECRET = "web-test-secret-of-at-least-32-bytes!"
log = logging.getLogger("crmkit.tests.widgets")
# the first create named "stall" waits for RESUME, then fails: a request whose process dies
STALLED, RESUME = threading.Event(), threading.Event()


class Widget(Aggregate):
    aggregate_type = "Widget"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name = ""
        self.size = 1

    def apply(self, event_type: str, data: dict[str, Any]) -> None:
        self.name = data.get("name", self.name)
        self.size = data.get("size", self.size)

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "name": self.name, "size": self.size}


class Address(Schema):
    city = fields.String(required=True, validate=validate.Length(min=1))


class WidgetInput(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 40))
    size = fields.Integer(validate=validate.Range(1, 10))
    tags = fields.List(fields.String())
    address = fields.Nested(Address)


class WidgetPatch(Schema):
    name = fields.String(validate=validate.Length(1, 40))


class WidgetView(Schema):
    id = fields.String()
    version = fields.Integer()
    name = fields.String()
    size = fields.Integer()


class WidgetQuery(PageQuery):
    name = fields.String()
    since = fields.AwareDateTime(data_key="from")


def widgets_blueprint(runtime: Runtime) -> Blueprint:
    bp = Blueprint("widgets", __name__)
    repo: Repository[Widget] = Repository(runtime.store, Widget, lambda _events: None)
    listed = runtime.db["widget_list"]

    @bp.post("/v1/widgets")
    @endpoint("write", body=WidgetInput, response=WidgetView, status=201, idempotent=True)
    def create_widget(body: dict[str, Any]) -> Response:
        """Create a widget."""
        if body["name"] == "taken":
            raise Conflict("that name is taken")
        if body["name"] == "stall" and not STALLED.is_set():
            STALLED.set()
            RESUME.wait(10)
            raise Conflict("the process died")
        widget = Widget(new_id())
        widget.record("WidgetCreated", {"name": body["name"], "size": body.get("size", 1)})
        repo.save(widget, metadata())
        listed.insert_one({"_id": widget.id, "name": widget.name})
        log.info("widget created", extra={"stream_id": widget.id, "email": "secret@example.com", "count": 1})
        return resource(widget.view(), 201, location=f"/v1/widgets/{widget.id}")

    @bp.get("/v1/widgets")
    @endpoint("read", query=WidgetQuery, response=WidgetView, many=True)
    def list_widgets(query: dict[str, Any]) -> Response:
        """List widgets."""
        filters = {"name": query["name"]} if "name" in query else {}
        docs, next_cursor = page(listed, filters, query["limit"], query["cursor"])
        return listing([{"id": doc["_id"], "name": doc["name"]} for doc in docs], next_cursor)

    @bp.get("/v1/widgets/<widget_id>")
    @endpoint("read", response=WidgetView)
    def get_widget(widget_id: str) -> Response:
        """One widget."""
        return resource(repo.get(widget_id).view())

    @bp.patch("/v1/widgets/<widget_id>")
    @endpoint("write", body=WidgetPatch, response=WidgetView)
    def update_widget(widget_id: str, body: dict[str, Any]) -> Response:
        """Rename a widget."""
        changed = repo.change(widget_id, lambda w: w.record("WidgetRenamed", body), metadata(), if_match())
        return resource(changed.view())

    @bp.get("/v1/broken")
    @endpoint("read")
    def broken() -> Response:
        """Always fails."""
        raise RuntimeError("secret internals: password=hunter2")

    @bp.get("/v1/public")
    @endpoint(None)
    def public() -> dict[str, str]:
        """Needs no token."""
        return {"actor": metadata().actor}

    return bp


class TcpProxy:
    """Forwards a local port to `target`; `close()` closes the port and drops every connection."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed = True
        for sock in [self.listener, *self.open]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept()/recv()
            sock.close()


def settings_for(servers: Servers, database: str, topic: str, mongo_url: str | None = None) -> Settings:
    return Settings(
        service="widgets",
        slug="widgets",
        kafka_bootstrap=servers.kafka_bootstrap,
        group_prefix="crm",
        mongo_url=mongo_url or servers.mongo_url,
        database=database,
        topic=topic,
        ports=Ports(0, 0, 0),
        log_level="WARNING",
        environment="test",
    )


def build(runtime: Runtime) -> Flask:
    return create_app(runtime, [widgets_blueprint(runtime)], title="Widgets", description="A test service.")


@pytest.fixture
def runtime(servers: Servers, db: Database, topic: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("CRM_JWT_SECRET", SECRET)
    subject = Runtime(settings_for(servers, db.name, topic))
    subject.store.ensure_indexes()
    subject.db["idempotency_keys"].create_index("fingerprint")  # the collection exists before the first key
    yield subject
    subject.close()


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    return build(runtime).test_client()


def bearer(*roles: str, subject: str = "alice", secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.issue(secret, subject, list(roles))}"}


WRITER = bearer("widgets:write")
READER = bearer("widgets:read")


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status and body["type"].endswith(str(status))
    assert isinstance(body["title"], str) and isinstance(body["detail"], str)
    return body


def nothing_stored(runtime: Runtime) -> bool:
    return (
        runtime.store.count() == 0
        and runtime.db["widget_list"].count_documents({}) == 0
        and runtime.db["idempotency_keys"].count_documents({}) == 0
    )


class TestAuth:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer not-a-jwt"},
            {"Authorization": "Basic YWxpY2U6cHc="},
            bearer("widgets:write", secret="some-other-secret-of-32-bytes-or-more"),
            {"Authorization": f"Bearer {auth.issue(SECRET, 'alice', ['admin'], ttl_seconds=-5)}"},
        ],
        ids=["missing", "garbage", "basic", "bad-signature", "expired"],
    )
    def test_no_or_bad_token_is_401_and_changes_nothing(
        self, client: FlaskClient, runtime: Runtime, headers: dict
    ) -> None:
        assert_problem(client.get("/v1/widgets", headers=headers), 401)
        assert_problem(client.post("/v1/widgets", json={"name": "a"}, headers=headers), 401)
        assert nothing_stored(runtime)

    @pytest.mark.parametrize("roles", [("widgets:read",), ("contacts:write",), ()])
    def test_a_token_without_the_write_role_is_403(
        self, client: FlaskClient, runtime: Runtime, roles: tuple[str, ...]
    ) -> None:
        body = assert_problem(client.post("/v1/widgets", json={"name": "a"}, headers=bearer(*roles)), 403)
        assert "widgets:write" in body["detail"]
        assert nothing_stored(runtime)

    def test_reads_need_read_or_write_and_admin_passes_all(self, client: FlaskClient) -> None:
        for headers in (READER, WRITER, bearer("admin")):
            assert client.get("/v1/widgets", headers=headers).status_code == 200
        assert_problem(client.get("/v1/widgets", headers=bearer("sales:read")), 403)
        assert client.post("/v1/widgets", json={"name": "a"}, headers=bearer("admin")).status_code == 201

    def test_public_endpoints_need_no_token(self, client: FlaskClient) -> None:
        assert client.get("/v1/public").get_json() == {"actor": "anonymous"}

    def test_the_actor_recorded_is_the_token_subject(self, client: FlaskClient, runtime: Runtime) -> None:
        created = client.post("/v1/widgets", json={"name": "a"}, headers=bearer("admin", subject="bob"))
        [event] = runtime.store.load(created.get_json()["id"])
        assert event.actor == "user:bob"


def test_a_noisy_principal_is_rate_limited_with_429(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_RATE_LIMIT_PER_MINUTE", "3")
    limited = build(runtime).test_client()
    statuses = [limited.get("/v1/widgets", headers=READER).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = limited.get("/v1/widgets", headers=READER)
    assert_problem(response, 429)
    assert response.headers["Retry-After"] == "1"
    assert limited.get("/v1/widgets", headers=bearer("widgets:read", subject="someone-else")).status_code == 200
    assert limited.get("/healthz").status_code == 200  # platform routes are not limited


class TestInput:
    @pytest.mark.parametrize(
        "raw",
        [
            b"{",
            b"{'name': 'a'}",
            b"",
            b"   ",
            b"\xff\xfe{}",
            b'{"name": "a",}',
            b'{"name": "a", "size": NaN}',
            b'{"name": "a", "size": Infinity}',
            b'{"name": "a", "tags": [-Infinity]}',
            b'{"name": "a\\ud800"}',
            b'{"name": "a", "tags": ["\\udfff"]}',  # lone surrogates
            b"[" * 50_000 + b"]" * 50_000,
        ],
    )  # deeper than the parser's recursion
    def test_malformed_json_is_400(self, client: FlaskClient, runtime: Runtime, raw: bytes) -> None:
        response = client.post("/v1/widgets", data=raw, content_type="application/json", headers=WRITER)
        assert_problem(response, 400)
        assert nothing_stored(runtime)

    @pytest.mark.parametrize("body", [[], "name", 5, None])
    def test_a_body_that_is_not_an_object_is_422(self, client: FlaskClient, body: Any) -> None:
        response = client.post("/v1/widgets", data=json.dumps(body), content_type="application/json", headers=WRITER)
        assert "_body" in assert_problem(response, 422)["errors"]

    def test_every_bad_field_is_listed_and_unknown_fields_are_rejected(
        self, client: FlaskClient, runtime: Runtime
    ) -> None:
        response = client.post(
            "/v1/widgets",
            headers={**WRITER, "Idempotency-Key": "k1"},
            json={
                "name": "",
                "size": 99,
                "tags": ["ok", 3],
                "address": {"city": ""},
                "colour": "red",
            },
        )
        body = assert_problem(response, 422)
        assert set(body["errors"]) == {"name", "size", "tags.1", "address.city", "colour"}
        assert all(isinstance(m, list) and m and all(isinstance(s, str) for s in m) for m in body["errors"].values())
        assert nothing_stored(runtime)

    def test_a_time_with_no_utc_equivalent_is_422_naming_the_field(self, client: FlaskClient) -> None:
        for moment in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
            body = assert_problem(client.get("/v1/widgets", query_string={"from": moment}, headers=READER), 422)
            assert set(body["errors"]) == {"from"}, body
        earliest = client.get("/v1/widgets", query_string={"from": "0001-01-01T00:00:00Z"}, headers=READER)
        assert earliest.status_code == 200

    def test_missing_required_field_is_422(self, client: FlaskClient) -> None:
        assert set(assert_problem(client.post("/v1/widgets", json={}, headers=WRITER), 422)["errors"]) == {"name"}

    def test_query_strings_are_validated_too(self, client: FlaskClient) -> None:
        body = assert_problem(client.get("/v1/widgets?limit=0&bogus=1", headers=READER), 422)
        assert set(body["errors"]) == {"limit", "bogus"}
        assert set(assert_problem(client.get("/v1/widgets?limit=501", headers=READER), 422)["errors"]) == {"limit"}
        assert "cursor" in assert_problem(client.get("/v1/widgets?cursor=!!", headers=READER), 422)["errors"]

    def test_a_domain_error_in_the_view_is_its_problem_and_stores_nothing(
        self, client: FlaskClient, runtime: Runtime
    ) -> None:
        assert_problem(
            client.post("/v1/widgets", json={"name": "taken"}, headers={**WRITER, "Idempotency-Key": "t"}), 409
        )
        assert nothing_stored(runtime)

    def test_an_oversized_body_is_413(self, client: FlaskClient, runtime: Runtime) -> None:
        response = client.post(
            "/v1/widgets",
            data=b'{"name": "' + b"x" * (1024 * 1024) + b'"}',
            content_type="application/json",
            headers=WRITER,
        )
        assert_problem(response, 413)
        assert nothing_stored(runtime)

    def test_unicode_survives(self, client: FlaskClient) -> None:
        created = client.post("/v1/widgets", json={"name": "چرخ‌دنده"}, headers=WRITER)
        assert "چرخ‌دنده".encode() in created.get_data()  # not \u-escaped
        assert client.get(created.headers["Location"], headers=READER).get_json()["name"] == "چرخ‌دنده"


class TestIdempotency:
    def test_a_repeat_returns_the_first_response_and_creates_nothing(
        self, client: FlaskClient, runtime: Runtime
    ) -> None:
        headers = {**WRITER, "Idempotency-Key": "create-1"}
        first = client.post("/v1/widgets", json={"name": "a", "size": 2}, headers=headers)
        again = client.post("/v1/widgets", json={"name": "a", "size": 2}, headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.get_json() == first.get_json()
        assert again.headers["ETag"] == first.headers["ETag"] and again.headers["Location"] == first.headers["Location"]
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.mimetype == "application/json"
        assert runtime.store.count() == 1 and runtime.db["widget_list"].count_documents({}) == 1

    def test_same_key_with_a_different_body_is_422(self, client: FlaskClient, runtime: Runtime) -> None:
        headers = {**WRITER, "Idempotency-Key": "create-2"}
        assert client.post("/v1/widgets", json={"name": "a"}, headers=headers).status_code == 201
        body = assert_problem(client.post("/v1/widgets", json={"name": "b"}, headers=headers), 422)
        assert "Idempotency-Key" in body["errors"]
        assert runtime.store.count() == 1

    def test_a_key_longer_than_the_document_allows_is_refused_and_creates_nothing(
        self, client: FlaskClient, runtime: Runtime
    ) -> None:
        longest = {**WRITER, "Idempotency-Key": "k" * 255}
        assert client.post("/v1/widgets", json={"name": "a"}, headers=longest).status_code == 201
        body = assert_problem(
            client.post("/v1/widgets", json={"name": "b"}, headers={**WRITER, "Idempotency-Key": "k" * 256}), 422
        )
        assert body["errors"] == {"Idempotency-Key": ["at most 255 characters"]}
        assert runtime.store.count() == 1

    def test_keys_are_per_principal_and_without_a_key_each_post_creates(
        self, client: FlaskClient, runtime: Runtime
    ) -> None:
        client.post("/v1/widgets", json={"name": "a"}, headers={**bearer("admin", subject="x"), "Idempotency-Key": "k"})
        client.post("/v1/widgets", json={"name": "a"}, headers={**bearer("admin", subject="y"), "Idempotency-Key": "k"})
        client.post("/v1/widgets", json={"name": "a"}, headers=WRITER)
        client.post("/v1/widgets", json={"name": "a"}, headers=WRITER)
        assert runtime.store.count() == 4

    def test_a_failed_attempt_frees_the_key(self, client: FlaskClient, runtime: Runtime) -> None:
        headers = {**WRITER, "Idempotency-Key": "retry-me"}
        assert client.post("/v1/widgets", json={"name": "taken"}, headers=headers).status_code == 409
        assert client.post("/v1/widgets", json={"name": "taken"}, headers=headers).status_code == 409
        assert runtime.db["idempotency_keys"].count_documents({}) == 0

    def test_a_key_left_running_by_a_dead_request_is_taken_over_after_the_lease(
        self, client: FlaskClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        STALLED.clear(), RESUME.clear()
        headers = {**WRITER, "Idempotency-Key": "dies"}
        dying = threading.Thread(
            target=client.application.test_client().post,
            args=("/v1/widgets",),
            kwargs={"json": {"name": "stall"}, "headers": headers},
        )
        dying.start()
        try:
            assert STALLED.wait(10)
            assert_problem(client.post("/v1/widgets", json={"name": "stall"}, headers=headers), 409)  # in its lease
            monkeypatch.setenv("CRM_CLOCK_OFFSET_SECONDS", "60")  # the default lease has run out
            taken = client.post("/v1/widgets", json={"name": "stall"}, headers=headers)
            assert taken.status_code == 201 and "Idempotent-Replayed" not in taken.headers
        finally:
            RESUME.set()  # the old request fails now: it must not free or overwrite its successor's key
            dying.join(10)
        again = client.post("/v1/widgets", json={"name": "stall"}, headers=headers)
        assert again.headers.get("Idempotent-Replayed") == "true" and again.get_json() == taken.get_json()
        assert runtime.store.count() == 1

    def test_a_key_expires_after_24_hours(
        self, client: FlaskClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        headers = {**WRITER, "Idempotency-Key": "daily"}
        first = client.post("/v1/widgets", json={"name": "a"}, headers=headers)
        monkeypatch.setenv("CRM_CLOCK_OFFSET_SECONDS", str(24 * 3600 - 1))
        assert client.post("/v1/widgets", json={"name": "a"}, headers=headers).get_json() == first.get_json()
        monkeypatch.setenv("CRM_CLOCK_OFFSET_SECONDS", str(24 * 3600))  # the TTL monitor need not have run
        later = client.post("/v1/widgets", json={"name": "a"}, headers=headers)
        assert later.status_code == 201 and "Idempotent-Replayed" not in later.headers
        assert later.headers["Location"] != first.headers["Location"] and runtime.store.count() == 2

    def test_the_lifetime_of_a_key_is_configurable(self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CRM_IDEMPOTENCY_TTL_SECONDS", "600")
        client, headers = build(runtime).test_client(), {**WRITER, "Idempotency-Key": "short"}
        client.post("/v1/widgets", json={"name": "a"}, headers=headers)
        monkeypatch.setenv("CRM_CLOCK_OFFSET_SECONDS", "600")
        assert "Idempotent-Replayed" not in client.post("/v1/widgets", json={"name": "a"}, headers=headers).headers
        assert runtime.store.count() == 2

    def test_the_query_string_is_part_of_the_request(self, client: FlaskClient, runtime: Runtime) -> None:
        headers = {**WRITER, "Idempotency-Key": "query"}
        assert client.post("/v1/widgets?variant=a&n=1", json={"name": "a"}, headers=headers).status_code == 201
        same = client.post("/v1/widgets?n=1&variant=a", json={"name": "a"}, headers=headers)  # order aside
        assert same.headers.get("Idempotent-Replayed") == "true"
        body = assert_problem(client.post("/v1/widgets?variant=b&n=1", json={"name": "a"}, headers=headers), 422)
        assert "Idempotency-Key" in body["errors"]
        assert runtime.store.count() == 1


class TestVersions:
    def test_etag_and_if_match(self, client: FlaskClient, runtime: Runtime) -> None:
        created = client.post("/v1/widgets", json={"name": "a"}, headers=WRITER)
        assert created.headers["ETag"] == '"1"'
        url = created.headers["Location"]
        assert client.get(url, headers=READER).headers["ETag"] == '"1"'
        renamed = client.patch(url, json={"name": "b"}, headers={**WRITER, "If-Match": '"1"'})
        assert renamed.status_code == 200 and renamed.headers["ETag"] == '"2"'
        stale = client.patch(url, json={"name": "c"}, headers={**WRITER, "If-Match": '"1"'})
        assert_problem(stale, 412)
        assert_problem(client.patch(url, json={"name": "c"}, headers={**WRITER, "If-Match": "yesterday"}), 422)
        assert client.get(url, headers=READER).get_json() == {
            "id": url.rsplit("/", 1)[1],
            "version": 2,
            "name": "b",
            "size": 1,
        }
        assert client.patch(url, json={"name": "d"}, headers={**WRITER, "If-Match": "*"}).headers["ETag"] == '"3"'
        assert client.patch(url, json={"name": "e"}, headers=WRITER).headers["ETag"] == '"4"'
        assert len(runtime.store.load(url.rsplit("/", 1)[1])) == 4


class TestListing:
    def test_pages_through_everything_once(self, client: FlaskClient) -> None:
        ids = {client.post("/v1/widgets", json={"name": f"w{n}"}, headers=WRITER).get_json()["id"] for n in range(5)}
        seen, cursor, pages = [], None, 0
        while True:
            url = "/v1/widgets?limit=2" + (f"&cursor={cursor}" if cursor else "")
            body = client.get(url, headers=READER).get_json()
            seen += [item["id"] for item in body["items"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert pages == 3 and sorted(seen) == seen and set(seen) == ids and len(seen) == 5

    def test_default_limit_and_empty_list(self, client: FlaskClient) -> None:
        assert client.get("/v1/widgets", headers=READER).get_json() == {"items": [], "next_cursor": None}


class TestPlatformRoutes:
    def test_unknown_route_is_a_404_problem(self, client: FlaskClient) -> None:
        assert_problem(client.get("/v1/nothing-here"), 404)

    def test_unknown_id_is_a_404_problem(self, client: FlaskClient) -> None:
        assert_problem(client.get("/v1/widgets/0190a3c2-0000-7000-8000-000000000000", headers=READER), 404)

    def test_wrong_method_is_a_405_problem_with_allow(self, client: FlaskClient) -> None:
        response = client.delete("/v1/widgets", headers=WRITER)
        assert_problem(response, 405)
        assert set(re.split(r",\s*", response.headers.get("Allow", ""))) >= {"GET", "POST"}

    def test_an_unexpected_error_is_a_500_problem_without_internals(self, client: FlaskClient) -> None:
        response = client.get("/v1/broken", headers=READER)
        body = assert_problem(response, 500)
        assert "hunter2" not in response.get_data(as_text=True) and "RuntimeError" not in body["detail"]

    def test_healthz_needs_nothing(self, client: FlaskClient) -> None:
        response = client.get("/healthz")
        assert response.status_code == 200 and response.get_json() == {"status": "ok"}

    def test_readyz_with_the_servers(self, client: FlaskClient) -> None:
        response = client.get("/readyz")
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json() == {"status": "ready"}

    def test_readyz_is_503_with_a_reason_when_mongo_is_away(
        self, servers: Servers, db: Database, topic: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CRM_JWT_SECRET", SECRET)
        proxy = TcpProxy(int(servers.mongo_url.rsplit(":", 1)[1]))  # the app starts with Mongo there...
        away = Runtime(settings_for(servers, db.name, topic, mongo_url=f"mongodb://127.0.0.1:{proxy.port}"))
        try:
            probe = build(away).test_client()
            assert probe.get("/readyz").status_code == 200
            proxy.close()  # ...then the Mongo URL points at a closed port
            body = assert_problem(probe.get("/readyz"), 503)
            assert probe.get("/healthz").status_code == 200  # liveness needs no dependency
        finally:
            proxy.close()
            away.close()
        assert "MongoDB" in body["detail"]
        assert "Kafka" not in body["detail"]  # Kafka is fine: only the real reason is given

    def test_readyz_is_503_when_the_topic_is_missing(
        self, servers: Servers, db: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CRM_JWT_SECRET", SECRET)
        missing = "t.kit.never-created-" + new_id()
        lost = Runtime(settings_for(servers, db.name, missing))
        try:
            body = assert_problem(build(lost).test_client().get("/readyz"), 503)
            assert_problem(build(lost).test_client().get("/readyz"), 503)  # asking did not create it
        finally:
            lost.close()
        assert "Kafka" in body["detail"] and missing in body["detail"] and "MongoDB" not in body["detail"]

    def test_readyz_is_503_with_a_reason_when_kafka_is_away(
        self, servers: Servers, db: Database, topic: str, monkeypatch: pytest.MonkeyPatch, wait: Callable
    ) -> None:
        monkeypatch.setenv("CRM_JWT_SECRET", SECRET)
        away = Runtime(replace(settings_for(servers, db.name, topic), kafka_bootstrap=f"127.0.0.1:{stack.free_port()}"))
        try:
            body = assert_problem(build(away).test_client().get("/readyz"), 503)
        finally:
            away.close()
        assert "Kafka" in body["detail"] and "MongoDB" not in body["detail"]
        # the probe's own thread gives up too, rather than holding up the process's exit for half a minute
        wait(
            lambda: not [t for t in threading.enumerate() if t.name.startswith("readiness") and t.is_alive()],
            timeout=15,
            what="the readiness probe thread to finish",
        )

    def test_metrics_expose_request_latency(self, client: FlaskClient) -> None:
        client.get("/v1/widgets", headers=READER)
        client.get("/v1/widgets/x", headers=READER)
        response = client.get("/metrics")
        assert response.status_code == 200 and response.mimetype == "text/plain"
        text = response.get_data(as_text=True)
        assert "# TYPE crm_http_request_duration_seconds histogram" in text
        for route, status in (("/v1/widgets", "200"), ("/v1/widgets/<widget_id>", "404")):
            pattern = (
                r'crm_http_request_duration_seconds_count\{[^}]*method="GET"[^}]*route="'
                + re.escape(route)
                + r'"[^}]*service="widgets"[^}]*status="'
                + status
                + r'"[^}]*\} [1-9]'
            )
            assert re.search(pattern, text), (route, status)

    def test_made_up_request_methods_share_one_metrics_label(self, client: FlaskClient) -> None:
        for made_up in ("BREW", "PROPFIND", "X-EVIL-1"):
            assert client.open("/v1/widgets", method=made_up, headers=READER).status_code == 405
        text = client.get("/metrics").get_data(as_text=True)
        methods = set(re.findall(r'crm_http_request_duration_seconds_count\{[^}]*method="([^"]+)"', text))
        assert "other" in methods and not methods & {"BREW", "PROPFIND", "X-EVIL-1"}

    def test_correlation_id_is_echoed_or_made(self, client: FlaskClient) -> None:
        assert client.get("/healthz", headers={"X-Correlation-ID": "abc-123"}).headers["X-Correlation-ID"] == "abc-123"
        made = client.get("/healthz").headers["X-Correlation-ID"]
        assert re.fullmatch(r"[0-9a-f-]{36}", made)

    def test_the_correlation_id_is_recorded_on_events(self, client: FlaskClient, runtime: Runtime) -> None:
        created = client.post("/v1/widgets", json={"name": "a"}, headers={**WRITER, "X-Correlation-ID": "req-77"})
        [event] = runtime.store.load(created.get_json()["id"])
        assert event.correlation_id == "req-77"

    def test_docs_page_renders_the_openapi_document(self, client: FlaskClient) -> None:
        page_ = client.get("/docs")
        assert page_.status_code == 200 and page_.mimetype == "text/html"
        html = page_.get_data(as_text=True)
        assert "/openapi.json" in html and "<title>Widgets</title>" in html
        for asset in re.findall(r'(?:src|href)="(/docs/static/[^"]+)"', html):
            assert client.get(asset).status_code == 200, asset


class TestOpenApi:
    @pytest.fixture
    def document(self, client: FlaskClient) -> dict[str, Any]:
        response = client.get("/openapi.json")
        assert response.status_code == 200
        return response.get_json()

    def test_is_openapi_3_with_the_declared_paths(self, document: dict[str, Any]) -> None:
        assert document["openapi"].startswith("3.")
        assert document["info"]["title"] == "Widgets" and document["info"]["version"]
        assert set(document["paths"]) == {"/v1/widgets", "/v1/widgets/{widget_id}", "/v1/broken", "/v1/public"}
        assert set(document["paths"]["/v1/widgets"]) == {"get", "post"}
        assert set(document["paths"]["/v1/widgets/{widget_id}"]) == {"get", "patch"}

    def test_operations_are_well_formed(self, document: dict[str, Any]) -> None:
        methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
        for path, item in document["paths"].items():
            templated = set(re.findall(r"{([^}]+)}", path))
            for method, operation in item.items():
                assert method in methods
                assert operation["summary"] and operation["responses"]
                assert all(re.fullmatch(r"[1-5]\d\d|default", code) for code in operation["responses"])
                assert all("description" in response for response in operation["responses"].values())
                params = operation.get("parameters", [])
                assert all(
                    {"name", "in"} <= set(p) and p["in"] in {"path", "query", "header", "cookie"} for p in params
                )
                assert {p["name"] for p in params if p["in"] == "path"} == templated
                assert all(p.get("required") for p in params if p["in"] == "path")
                keys = [(p["name"], p["in"]) for p in params]
                assert len(keys) == len(set(keys)), (path, method, keys)

    def test_every_reference_resolves(self, document: dict[str, Any]) -> None:
        refs: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("$ref"), str):
                    refs.append(node["$ref"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(document)
        assert refs
        for ref in refs:
            assert ref.startswith("#/"), ref
            target: Any = document
            for part in ref[2:].split("/"):
                target = target[part]
            assert isinstance(target, dict)

    def test_documents_what_the_endpoint_declared(self, document: dict[str, Any]) -> None:
        post = document["paths"]["/v1/widgets"]["post"]
        assert set(post["responses"]) >= {"201", "400", "401", "403", "409", "422", "429"}
        assert post["security"] == [{"bearer": []}]
        assert "Idempotency-Key" in {p["name"] for p in post["parameters"]}
        body_ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        body_schema = document["components"]["schemas"][body_ref.rsplit("/", 1)[1]]
        assert set(body_schema["properties"]) == {"name", "size", "tags", "address"}
        assert body_schema["required"] == ["name"]
        listing_ = document["paths"]["/v1/widgets"]["get"]
        query_names = {p["name"] for p in listing_["parameters"] if p["in"] == "query"}
        assert query_names == {"limit", "cursor", "name", "from"}
        items = listing_["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["items"]
        assert items["type"] == "array"
        patch = document["paths"]["/v1/widgets/{widget_id}"]["patch"]
        assert {"404", "412"} <= set(patch["responses"]) and "If-Match" in {p["name"] for p in patch["parameters"]}
        assert "security" not in document["paths"]["/v1/public"]["get"]
        problem = document["components"]["schemas"]["Problem"]
        assert set(problem["properties"]) == {"type", "title", "status", "detail", "errors"}
        assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


class TestRequestLogs:
    def test_lines_inside_a_request_carry_its_correlation_id_and_no_personal_data(
        self, client: FlaskClient, capture_json_logs: Callable[[], list[dict[str, Any]]]
    ) -> None:
        client.post("/v1/widgets", json={"name": "a"}, headers={**WRITER, "X-Correlation-ID": "corr-log-1"})
        [line] = [entry for entry in capture_json_logs() if entry["message"] == "widget created"]
        assert line["correlation_id"] == "corr-log-1"
        assert line["count"] == 1 and "stream_id" in line
        assert "email" not in line and "secret@example.com" not in json.dumps(line)

    def test_a_500_is_logged_with_the_correlation_id(
        self, client: FlaskClient, capture_json_logs: Callable[[], list[dict[str, Any]]]
    ) -> None:
        client.get("/v1/broken", headers={**READER, "X-Correlation-ID": "corr-500"})
        # the app's own entries: a Kafka client left behind by an earlier test may log errors of its own
        errors = [e for e in capture_json_logs() if e["level"] == "error" and e["logger"].startswith("crmkit.web")]
        assert errors and all(entry["correlation_id"] == "corr-500" for entry in errors)


@pytest.fixture
def capture_json_logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("widgets", "api"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def test_recorded_events_are_cloudevents(client: FlaskClient, runtime: Runtime) -> None:
    created = client.post("/v1/widgets", json={"name": "a"}, headers=WRITER).get_json()
    [event] = runtime.store.load(created["id"])
    assert RecordedEvent.from_bytes(event.to_bytes()).to_cloudevent()["type"] == "crm.widgets.WidgetCreated.v1"


def test_a_request_schema_is_built_once_and_a_refusal_lists_every_bad_field_mistyped_or_missing(
    client: FlaskClient, runtime: Runtime
) -> None:
    from crmkit.web.endpoint import _schema

    assert _schema(PageQuery) is _schema(PageQuery)  # one instance per class
    refused = assert_problem(client.post("/v1/widgets", json={"size": "x"}, headers=WRITER), 422)
    assert set(refused["errors"]) == {"name", "size"}
    created = client.post("/v1/widgets", json={"name": "b", "size": 3}, headers=WRITER)
    assert created.status_code == 201 and created.get_json()["size"] == 3
    assert runtime.store.count() == 1
