"""The `endpoint` decorator: one place for auth, input validation and idempotency.

A view declares what it needs (role, body and query schemas, whether a repeat with the
same Idempotency-Key must replay) and receives already-validated input. The same
declaration feeds the OpenAPI document, so the docs cannot drift from the checks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from flask import Response, current_app, g, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from crmkit import auth, clock, keys
from crmkit.errors import Conflict, ValidationFailed
from crmkit.events import Metadata, epoch_ms, new_id
from crmkit.logs import correlation_id
from crmkit.settings import chassis
from crmkit.web.pagination import CURSOR_MAX, CURSOR_PATTERN, DEFAULT_LIMIT, MAX_LIMIT, VERSION_CURSOR_PATTERN
from crmkit.web.problems import HttpError, flatten


class PageQuery(Schema):
    """`?limit=&cursor=` on every list; extend it with a list's own filters."""

    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(1, MAX_LIMIT))
    cursor = fields.String(
        load_default=None,
        validate=[
            validate.Length(max=CURSOR_MAX),
            validate.Regexp(CURSOR_PATTERN, error="not a cursor this API returned"),
        ],
        metadata={"description": "`next_cursor` of the previous page (opaque)"},
    )


class HistoryQuery(PageQuery):
    """`?limit=&cursor=` on a record's history, which pages by version (`pagination.by_version`)."""

    cursor = fields.String(
        load_default=None,
        validate=validate.Regexp(VERSION_CURSOR_PATTERN, error="not a cursor this API returned"),
        metadata={"description": "`next_cursor` of the previous page: the last version shown"},
    )


class AsOfQuery(Schema):
    """`?as_of=` on a record's GET: the record as it was at that moment, folded from its events."""

    class Meta:
        unknown = RAISE

    as_of = fields.AwareDateTime(metadata={"description": "RFC 3339 time: the record as it was then"})


@dataclass(frozen=True)
class EndpointSpec:
    """What a view declared; read by the OpenAPI builder."""

    access: str | None
    body: type[Schema] | None
    query: type[Schema] | None
    response: type[Schema] | None
    status: int
    idempotent: bool
    summary: str
    many: bool
    max_body: int | None = None  # bytes this route accepts (the app-wide cap is 1 MiB)
    openapi: dict[str, Any] | None = None  # extra operation fields (e.g. a non-JSON requestBody)
    body_optional: bool = False  # the body may be left out (an action such as POST /won)


class Unauthorized(HttpError):
    status = 401


class Forbidden(HttpError):
    status = 403


class TooManyRequests(HttpError):
    status = 429


def endpoint(
    access: str | None,
    *,
    body: type[Schema] | None = None,
    query: type[Schema] | None = None,
    response: type[Schema] | None = None,
    status: int = 200,
    idempotent: bool = False,
    many: bool = False,
    max_body: int | None = None,
    openapi: dict[str, Any] | None = None,
    body_optional: bool = False,
    teams: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a REST operation. `access` is "read", "write", "erase", "export", or None for a public one.

    `teams` says the view serves team-scoped callers (`<service>:<access>:team`): it confines
    them to their team's records (crmkit.web.teams), or what it serves is no team's (reference
    data such as products). Every other route refuses a caller whose access is only team-scoped
    (403): a route added later is closed to them until it confines them, never open by default.

    `max_body` raises the request-size cap for this route only (uploads); `openapi` adds
    operation fields the declaration cannot express (parameters and responses are merged);
    `body_optional` lets a client leave the body out (validated when given, `{}` when not).
    """

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        spec = EndpointSpec(
            access,
            body,
            query,
            response,
            status,
            idempotent,
            summary=(view.__doc__ or view.__name__).strip().splitlines()[0],
            many=many,
            max_body=max_body,
            openapi=openapi,
            body_optional=body_optional,
        )

        @functools.wraps(view)
        def wrapper(**path_args: Any) -> Any:
            if max_body is not None:
                request.max_content_length = max_body  # before anything reads the body
            if access is not None:
                _authorize(access, teams)
            if query is not None:
                path_args["query"] = _load(_schema(query), _query_args(), "query")
            if body is not None:
                path_args["body"] = optional_body(body) if body_optional else _load(_schema(body), _json_body(), "body")
            if idempotent and request.headers.get("Idempotency-Key"):
                return _idempotent(lambda: view(**path_args))
            return view(**path_args)

        wrapper.endpoint_spec = spec  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _query_args() -> dict[str, str]:
    """The query's parameters; one given twice is refused, as the document's types say (a list
    is not a string), rather than one of its values being picked silently."""
    repeated = {name: ["given more than once"] for name, values in request.args.lists() if len(values) > 1}
    if repeated:
        raise ValidationFailed(f"{len(repeated)} field(s) failed validation", repeated)
    return request.args.to_dict()


def metadata() -> Metadata:
    """Who is asking and in which conversation: recorded on every event."""
    principal = getattr(g, "principal", None)
    return Metadata(
        actor=f"user:{principal.subject}" if principal else "anonymous",
        correlation_id=correlation_id.get() or g.get("correlation_id", ""),
    )


def team_scope() -> str | None:
    """The team this request's records are confined to (a team-scoped role), or None for all.

    Views filter lists by it and answer 404 for another team's record, so a scoped caller
    cannot learn that a record of another team exists (auth.Principal.team_scope).
    """
    scope: str | None = g.get("team_scope")
    return scope


IF_MATCH_PATTERN = r'^(\*|(W/)?"[0-9]{1,18}"|[0-9]{1,18})$'
# a client's key (a UUID is typical); bounded like any input, so a document can say what is refused
IDEMPOTENCY_KEY_MAX = 255
IDEMPOTENCY_KEY_SCHEMA = {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX}


def if_match() -> int | None:
    """The version the client last saw, from `If-Match: "<version>"` (None when absent or `*`).

    A value that is no version at all is a 422 naming the header (it is bad input, like a
    bad field); a version that is not the record's current one is the 412 of the check."""
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    text = raw.strip()
    if not re.match(IF_MATCH_PATTERN, text):
        raise ValidationFailed(
            "If-Match is not a version this API issued", {"If-Match": ['an ETag this API issued, such as "3", or *']}
        )
    return None if text == "*" else int(text.removeprefix("W/").strip('"'))


def _authorize(access: str, teams: bool = False) -> None:
    settings = current_app.config["CRM_SETTINGS"]
    try:
        principal = auth.from_header(keys.ring(), request.headers.get("Authorization"), audience=settings.slug)
    except auth.InvalidToken as exc:
        raise Unauthorized(f"a valid bearer token for {settings.slug} is required: {exc}") from None
    service = settings.slug
    if not principal.may(service, access):
        if principal.scoped_without_team(service):
            raise Forbidden(
                f"a team-scoped role ({service}:<access>:team) needs a team claim in the token, "
                f"and this one has none; or this needs the role {auth.needed_roles(service, access)}"
            )
        raise Forbidden(f"this needs the role {auth.needed_roles(service, access)}")
    g.principal = principal
    g.team_scope = principal.team_scope(service, access)
    if g.team_scope is not None and not teams:
        raise Forbidden(
            f"this operation is not confined to a team, so a team-scoped role does not reach it: "
            f"it needs the role {auth.needed_roles(service, access)}"
        )
    _rate_limit(principal.subject)


def _rate_limit(subject: str) -> None:
    limiter = current_app.extensions["crm_rate_limiter"]
    if not limiter.allow(subject):
        raise TooManyRequests("request rate limit reached; retry shortly")


class RateLimiter:
    """A token bucket per principal, per process: protects a process from one noisy client."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()  # gunicorn's threads share one limiter

    def allow(self, subject: str) -> bool:
        if self.rate <= 0:
            return True
        with self._lock:
            return self._take(subject)

    def _take(self, subject: str) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get(subject, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[subject] = (tokens, now)
            return False
        self._buckets[subject] = (tokens - 1, now)
        return True


class MalformedBody(HttpError):
    status = 400


def _json_body() -> Any:
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise MalformedBody("the request needs a JSON body")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise MalformedBody("the body is not valid JSON: it nests too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from None
    _refuse_lone_surrogates(body)
    return body


def _refuse_lone_surrogates(body: Any) -> None:
    """An escaped lone surrogate ("\\ud800") parses, but is not Unicode text (I-JSON, RFC 7493):
    nothing could store or send it later. Valid pairs (an emoji) were joined by the parser."""
    try:
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise MalformedBody(
            "the body is not valid JSON: a string holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text"
        ) from None


def _refuse_constant(name: str) -> Any:
    """NaN, Infinity and -Infinity are not JSON (RFC 8259), though Python's parser takes them:
    echoed into events, they would break every strict reader of the topic."""
    raise ValueError(f"{name} is not a JSON value")


def optional_body(schema: type[Schema]) -> dict[str, Any]:
    """A body that may be left out entirely (an action such as POST /won): validated when given."""
    return _load(_schema(schema), _json_body() if request.get_data(cache=True).strip() else {}, "body")


@functools.cache
def _schema(kind: type[Schema]) -> Schema:
    """One instance per schema class, shared by every request: loading does not change it, and
    building one (marshmallow copies every declared field) was a tenth of a create's CPU."""
    return kind()


def _load(schema: Schema, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationFailed(f"the {where} must be a JSON object", {"_body": ["must be a JSON object"]})
    mistyped = _json_type_errors(schema, data) if where == "body" else {}
    try:
        loaded: dict[str, Any] = schema.load(data)  # unknown fields are rejected (marshmallow's default: RAISE)
    except ValidationError as exc:
        errors = {**flatten(exc.messages), **mistyped}  # every bad field, a mistyped one said as such
        raise ValidationFailed(f"{len(errors)} field(s) failed validation", errors) from None
    if mistyped:  # marshmallow coerced them (`"7"` to 7); the document's JSON types do not
        raise ValidationFailed(f"{len(mistyped)} field(s) failed validation", mistyped)
    beyond = {_wire_name(schema, path): [BEYOND_UTC] for path in _times_beyond_utc(loaded)}
    if beyond:
        raise ValidationFailed(f"{len(beyond)} field(s) failed validation", beyond)
    return loaded


def _json_type_errors(schema: Schema, data: dict[str, Any], prefix: str = "") -> dict[str, list[str]]:
    """A JSON body is typed as the OpenAPI document says: a boolean is true or false and a number
    a JSON number, not `0`, `"7"` or `true` (marshmallow would coerce those; a query string's
    values are all text, so queries keep the coercion). Every mistyped field, at any depth."""
    errors: dict[str, list[str]] = {}
    for name, field in schema.fields.items():
        key = field.data_key or name
        if key in data and not field.dump_only:
            errors.update(_mistyped(field, data[key], f"{prefix}{key}"))
    return errors


def _mistyped(field: fields.Field[Any], value: Any, path: str) -> dict[str, list[str]]:
    if value is None:
        return {}
    if isinstance(field, fields.Boolean) and not isinstance(value, bool):
        return {path: ["must be true or false"]}
    if isinstance(field, fields.Number) and (isinstance(value, bool) or not isinstance(value, int | float)):
        return {path: ["must be a number"]}
    if isinstance(field, fields.Nested) and isinstance(field.schema, Schema) and isinstance(value, dict):
        return _json_type_errors(field.schema, value, f"{path}.")
    items: list[tuple[fields.Field[Any], Any, str]] = []
    if isinstance(field, fields.List) and isinstance(value, list):
        items = [(field.inner, item, f"{path}.{index}") for index, item in enumerate(value)]
    elif isinstance(field, fields.Dict) and field.value_field is not None and isinstance(value, dict):
        items = [(field.value_field, item, f"{path}.{key}") for key, item in value.items()]
    errors: dict[str, list[str]] = {}
    for inner, item, where in items:
        errors.update(_mistyped(inner, item, where))
    return errors


BEYOND_UTC = "no such time in UTC (out of range): on 0001-01-01 no offset east of UTC, on 9999-12-31 none west"


def _times_beyond_utc(value: Any, path: str = "") -> Iterator[str]:
    """Paths of the aware times on the calendar's first day east of UTC or its last day west of
    it (0001-01-01T00:00+14:00, 9999-12-31T23:59-14:00): some have no UTC equivalent, and the
    OpenAPI document's pattern for times (`openapi.YEARS_WITH_UTC`) excludes all of them."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _times_beyond_utc(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _times_beyond_utc(item, f"{path}.{index}")
    elif isinstance(value, datetime) and value.tzinfo is not None:
        offset = value.utcoffset() or timedelta(0)
        if (value.date() == date.min and offset > timedelta(0)) or (value.date() == date.max and offset < timedelta(0)):
            yield path


def _wire_name(schema: Schema, path: str) -> str:
    """`path` with its first step named as the client sent it (a field's data_key, e.g. `from`)."""
    first, dot, rest = path.partition(".")
    field = schema.fields.get(first)
    return (field.data_key or first) + dot + rest if field is not None else path


def _idempotent(run: Callable[[], Any]) -> Response:
    """Run a create once per Idempotency-Key; a repeat gets the first response back."""
    keys: IdempotencyKeys = current_app.extensions["crm_idempotency"]
    digest = fingerprint()
    outcome = keys.claim(idempotency_key() or "", digest)
    if not isinstance(outcome, Claim):
        return replay(outcome, digest)
    try:
        response = current_app.make_response(run())
    except BaseException:
        keys.release(outcome)  # nothing was created: let the client try again
        raise
    if response.status_code >= 400:
        keys.release(outcome)
    else:
        keys.finish(outcome, response)
    return response


def idempotency_key() -> str | None:
    """The record key of this request's Idempotency-Key (per caller, method and path), or None
    without one. Public for routes that store their responses themselves (streamed uploads)."""
    raw = request.headers.get("Idempotency-Key")
    if not raw:
        return None
    if len(raw) > IDEMPOTENCY_KEY_MAX:
        raise ValidationFailed(
            "the Idempotency-Key is too long", {"Idempotency-Key": [f"at most {IDEMPOTENCY_KEY_MAX} characters"]}
        )
    return hashlib.sha256(f"{g.principal.subject}\0{request.method}\0{request.path}\0{raw}".encode()).hexdigest()


def fingerprint(body_sha256: str | None = None) -> str:
    """What makes two requests with one Idempotency-Key the same request: method, path, query
    (its parameters in any order) and body. A streamed upload passes its body's SHA-256."""
    body = body_sha256 or hashlib.sha256(request.get_data(cache=True)).hexdigest()
    query = sorted(request.args.items(multi=True))
    return hashlib.sha256(json.dumps([request.method, request.path, query, body]).encode()).hexdigest()


def replay(stored: Mapping[str, Any], digest: str) -> Response:
    """The stored response of a repeated request: 422 if the key came with another request
    (method, path, query or body), 409 while the first is still running."""
    if stored.get("fingerprint") != digest:
        raise ValidationFailed(
            "this Idempotency-Key was used with a different request",
            {"Idempotency-Key": ["already used with a different request (method, path, query or body)"]},
        )
    if stored.get("state") != "done":
        raise Conflict("a request with this Idempotency-Key is still being processed")
    response = Response(stored["body"], status=stored["status"], headers=stored.get("headers", {}))
    response.headers["Idempotent-Replayed"] = "true"
    return response


@dataclass(frozen=True)
class Claim:
    """This request holds an Idempotency-Key: `token` proves it when finishing or releasing."""

    key: str
    token: str


class IdempotencyKeys:
    """The `idempotency_keys` records: who runs a key, and the response it got.

    A record lives `ttl` (CRM_IDEMPOTENCY_TTL_SECONDS, 24 h): a TTL index on `expires_at`
    deletes it, and a record read after that moment counts as absent anyway, because a
    TTL monitor may run late or (nx-27017) never. A record still `running` after `lease`
    (CRM_IDEMPOTENCY_LEASE_SECONDS, 60 s) belongs to a request whose process died: the next
    request with the key takes it over. Every takeover, finish and release is conditional
    on the holder's random `token`, so of two retries only one takes a record over, and a
    request that outlived its lease cannot overwrite or free its successor's record.
    Times come from `crmkit.clock`, which tests move instead of sleeping.
    """

    def __init__(
        self,
        collection: Collection[dict[str, Any]],
        ttl: timedelta,
        lease: timedelta,
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self.collection = collection
        self.ttl = ttl
        self.lease = lease
        self.now = now

    @classmethod
    def from_environment(cls, collection: Collection[dict[str, Any]]) -> IdempotencyKeys:
        knobs = chassis()
        return cls(
            collection,
            timedelta(seconds=knobs.idempotency_ttl_seconds),
            timedelta(seconds=knobs.idempotency_lease_seconds),
        )

    def ensure_indexes(self) -> None:
        self.collection.create_index("expires_at", expireAfterSeconds=0)  # each record's own expiry
        self.collection.create_index("resource")  # erasure drops the stored responses about a person

    def claim(self, key: str, digest: str) -> Claim | dict[str, Any]:
        """Hold `key` for this request, or get the live record of the request that holds it."""
        moment = self.now()
        claim = Claim(key, new_id())
        record = {
            "_id": key,
            "fingerprint": digest,
            "state": "running",
            "token": claim.token,
            "claimed_ms": epoch_ms(moment),
            "expires_at": moment + self.ttl,
        }
        while True:
            try:
                self.collection.insert_one(record)
                return claim
            except DuplicateKeyError:
                pass
            held = self.collection.find_one({"_id": key})
            if held is None:
                continue  # released since our insert: try again
            if self._live(held, moment):
                return held
            taken = self.collection.replace_one({"_id": key, "token": {"$in": [held.get("token")]}}, record)
            if taken.matched_count:
                return claim
            # another retry took it over first: read its record

    def live(self, key: str) -> dict[str, Any] | None:
        """The record holding `key`, or None when there is none, it expired, or its lease ran out."""
        held = self.collection.find_one({"_id": key})
        return held if held is not None and self._live(held, self.now()) else None

    def finish(self, claim: Claim, response: Response) -> None:
        """Keep the response for repeats (and its Location, so erasure can find it)."""
        self.collection.update_one(
            {"_id": claim.key, "token": claim.token},
            {
                "$set": {
                    "state": "done",
                    "resource": response.headers.get("Location"),
                    "status": response.status_code,
                    "body": response.get_data(as_text=True),
                    "headers": {k: v for k, v in response.headers.items() if k in ("ETag", "Location", "Content-Type")},
                }
            },
        )

    def release(self, claim: Claim) -> None:
        """Nothing was created: free the key for a retry (unless a successor holds it now)."""
        self.collection.delete_one({"_id": claim.key, "token": claim.token})

    def _live(self, held: Mapping[str, Any], moment: datetime) -> bool:
        now_ms = epoch_ms(moment)
        claimed_ms = held.get("claimed_ms", int(held.get("at", 0) * 1000))  # `at`: records written before leases
        expires_ms = epoch_ms(held["expires_at"]) if "expires_at" in held else claimed_ms + _ms(self.ttl)
        if expires_ms <= now_ms:
            return False
        return held.get("state") == "done" or now_ms < claimed_ms + _ms(self.lease)


def _ms(span: timedelta) -> int:
    return int(span.total_seconds() * 1000)
