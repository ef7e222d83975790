"""Schemathesis hooks for the fuzz run (loaded through SCHEMATHESIS_HOOKS by test_fuzz_apis.py).

Random ids almost always name nothing, so without help every request that names a contact,
deal or ticket stops at "unknown contact" or 404 and the code behind it is never reached.
Likewise a random string is rarely a currency, a decimal amount or a phone number the API
accepts. These hooks let Hypothesis choose, for each such value it generates (a path or
query parameter, or a body field at any depth, by its name), between the generated value
and a few that are known to be good: the ids of records the test created first
(CRM_FUZZ_KNOWN_IDS, JSON `{name: [ids]}`) and the valid values below. The choice is
Hypothesis's, so the fixed seed still decides the whole run, and shrinking still works.
Values that are not strings (the wrong-type cases) are left alone.

Some rules of the API depend on its state, so no OpenAPI document can state them, and a
request the document calls valid may still be refused for them: a body field naming a
record that does not exist is a 422 (the contract), a stale If-Match a 412, and an
Idempotency-Key reused with another request a 422. `before_call` makes the positive
requests (those the document calls valid) respect that state: reference fields name
records made first, If-Match is `*`, and an Idempotency-Key is unique to its request
(a repeat of the same request keeps its key, so replays are still replays). Negative
requests are sent as generated. docs/testing.md lists these with their reasons.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import openpyxl
import schemathesis
from hypothesis import strategies as st

from crm_sales.money import MINOR_UNITS

# times with no UTC equivalent: they were 500s once; the document's pattern for times now excludes them
# (schemathesis revalidates a request a hook changed, so these keep a negative request negative)
EDGE_TIMES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
DECIMALS = ["1250.00", "0.01", "3"]
VALID: dict[str, list[str]] = {
    "currency": ["USD", "EUR", "JPY"],
    "amount": DECIMALS,
    "unit_price": DECIMALS,
    "quantity": DECIMALS,
    "tax_rate": ["9", "0"],
    "discount_percent": ["10"],
    "probability": ["50"],
    "due_at": ["2099-01-01T10:00:00+03:30"],
    "valid_until": ["2099-01-01"],
    "stage": ["proposal", "negotiation"],
    "phone": ["+14155550123", "+989121234567"],
    "locale": ["fa-IR", "en"],
    "time_zone": ["Asia/Tehran"],
}
TIMES = ("at", "as_of", "from", "to", "scheduled_at", "due_at", "due_before")
KNOWN: dict[str, list[str]] = {**VALID, **json.loads(os.environ.get("CRM_FUZZ_KNOWN_IDS", "{}"))}


def _with_known_values(value: Any, name: str = "") -> st.SearchStrategy[Any]:
    """`value` as generated, or (for a string named in KNOWN) one of the known values; nested values likewise."""
    if isinstance(value, dict):
        return st.fixed_dictionaries({key: _with_known_values(item, key) for key, item in value.items()})
    if isinstance(value, list):
        return st.tuples(*(_with_known_values(item) for item in value)).map(list)
    if isinstance(value, str) and KNOWN.get(name):
        return st.sampled_from([value, *KNOWN[name]])
    return st.just(value)


# The contacts import's files. Generated from the document alone they are random bytes, which the
# importer refuses whole (not text, not a workbook), so its row parsing was never reached; and a binary
# body has no schema-invalid form, so schemathesis filtered most negative cases away (a failed health
# check). These make well-formed files of fuzzed rows: the importer reports a bad row as a rejection.
IMPORT_COLUMNS = [
    "first_name",
    "last_name",
    "email",
    "phone",
    "company_id",
    "lifecycle_stage",
    "tags",
    "owner",
    "attributes.plan",
]
_CELL_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
_CELLS = st.one_of(_CELL_TEXT, st.sampled_from(["Ana", "ana@example.com", "+14155550123", "lead", "vip;gold", ""]))
_WORKBOOK_CELLS = st.one_of(
    st.text(
        st.characters(min_codepoint=0x20, exclude_categories=("Cs",), exclude_characters="\ufffe\uffff"), max_size=40
    ),
    st.sampled_from(["Ana", "ana@example.com", "+989121234567", "customer"]),
)


@st.composite
def _import_table(draw: st.DrawFn, cells: st.SearchStrategy[str]) -> list[list[str]]:
    """A header of known columns and up to five rows of fuzzed cells."""
    columns = draw(st.lists(st.sampled_from(IMPORT_COLUMNS), min_size=1, max_size=len(IMPORT_COLUMNS), unique=True))
    width = len(columns)
    return [columns, *draw(st.lists(st.lists(cells, min_size=width, max_size=width), max_size=5))]


def _csv(table: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(table)
    return out.getvalue().encode()


def _json_lines(table: list[list[str]]) -> bytes:
    rows = [dict(zip(table[0], row, strict=True)) for row in table[1:]] or [{}]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def _workbook(table: list[list[str]]) -> bytes:
    book = openpyxl.Workbook()
    for row in table:
        book.active.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


schemathesis.openapi.media_type("text/csv", _import_table(_CELLS).map(_csv))
schemathesis.openapi.media_type(
    "application/x-ndjson", _import_table(_CELLS).map(_json_lines), aliases=["application/jsonl"]
)
schemathesis.openapi.media_type(
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", _import_table(_WORKBOOK_CELLS).map(_workbook)
)


@schemathesis.hook
def flatmap_path_parameters(context: Any, path_parameters: Any) -> st.SearchStrategy[Any]:
    return _with_known_values(path_parameters)


# body fields that name another record: the contract answers a 422 when it does not exist
REFERENCES = (
    "contact_id",
    "duplicate_id",
    "company_id",
    "segment_id",
    "product_id",
    "deal_id",
    "template_id",
    "ticket_id",
    "campaign_id",
    "message_id",
    "pipeline_id",
    "quote_id",
    "activity_id",
    "policy_id",
    "stage",
)  # a deal's stage: one of its pipeline's (positive requests name the default pipeline)
# values whose validity no OpenAPI 3.0 document can state, so a positive request always takes a known one:
# a phone number's validity is its country's numbering plan (the document gives the characters it is
# written with); a segment's rules are a grammar of fields, operators and values, with a cap on the
# conditions across its nesting (the document gives its shape)
# an SLA calendar's time zone is one of the ~600 IANA names (the document gives their shape: as an enum
# they made the service desk's run four times longer)
ONLY_KNOWN = (*REFERENCES, "phone", "time_zone")
RULES = [
    {"all": [{"field": "lifecycle_stage", "op": "eq", "value": "lead"}]},
    {
        "any": [
            {"field": "tags", "op": "contains", "value": "vip"},
            {
                "all": [
                    {"field": "created_at", "op": "after", "value": "-30d"},
                    {"field": "attributes.plan", "op": "in", "value": ["gold", "silver"]},
                ]
            },
        ]
    },
]


def _pick(value: str, choices: list[str], keep: bool) -> str:
    """One of `choices` (or, with `keep`, perhaps `value` itself), chosen by the hash of the
    generated value: the seed still decides the whole run."""
    options = [value, *choices] if keep else choices
    return options[int(hashlib.sha256(value.encode()).hexdigest(), 16) % len(options)]


def _respecting_state(value: Any, name: str = "") -> Any:
    """`value` with every string reference (at any depth) naming a record that exists, and the
    fields of VALID sometimes given a value known to pass the rules behind its pattern."""
    if name == "rules" and isinstance(value, dict):
        return RULES[int(hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest(), 16) % len(RULES)]
    if isinstance(value, dict):
        return {key: _respecting_state(item, key) for key, item in value.items()}
    if isinstance(value, list):
        return [_respecting_state(item) for item in value]
    if isinstance(value, str) and KNOWN.get(name):
        return _pick(value, KNOWN[name], keep=name not in ONLY_KNOWN)
    return value


IDENTIFYING = ("first_name", "last_name", "email", "phone")


def _keeps_an_identity(case: Any) -> None:
    """A contact keeps a name, an email or a phone: a change that clears the ones it names keeps a first
    name (which of them the contact still has is state, so no document can say which may be cleared)."""
    body = case.body if case.method == "PATCH" and "{contact_id}" in case.path else None
    named = [body[name] for name in IDENTIFYING if name in body] if isinstance(body, dict) else []
    if named and not any(isinstance(value, str) and value.strip() for value in named):
        body["first_name"] = "Ana"


def _not_itself(case: Any) -> None:
    """A contact is not merged into (or unmerged from) itself: the duplicate is another known contact."""
    contact = (case.path_parameters or {}).get("contact_id")
    if isinstance(case.body, dict) and contact is not None and case.body.get("duplicate_id") == contact:
        others = [other for other in KNOWN.get("contact_id", []) if other != contact]
        if others:
            case.body["duplicate_id"] = others[0]


SERVQUAL_DIMENSIONS = ("tangibles", "reliability", "responsiveness", "assurance", "empathy")


def _servqual_weights(case: Any) -> None:
    """A SERVQUAL instrument's weights sum to 1 or 100, and weigh only the dimensions it asks (a sum, and a
    relation between two fields: the description says it): equal shares of 100 over the asked dimensions."""
    body = case.body
    if (
        case.path != "/v1/servqual/instrument"
        or not isinstance(body, dict)
        or not isinstance(body.get("weights"), dict)
    ):
        return
    items = body.get("items")
    asked = [name for name in SERVQUAL_DIMENSIONS if not isinstance(items, dict) or items.get(name)]
    body["weights"] = {name: 100 / len(asked) for name in asked}


def _with_edge_times(value: Any, name: str = "") -> Any:
    """`value` with time fields sometimes at an edge with no UTC equivalent (they were 500s once)."""
    if isinstance(value, dict):
        return {key: _with_edge_times(item, key) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_edge_times(item) for item in value]
    return _pick(value, EDGE_TIMES, keep=True) if isinstance(value, str) and name in TIMES else value


def _a_short_period(query: dict[str, Any]) -> None:
    """A report's `to` a day after its `from`: `to` after `from`, and a period within the cap."""
    try:
        start = datetime.fromisoformat(str(query["from"]))
        end = start + timedelta(days=1)
    except (ValueError, OverflowError):
        return
    query["to"] = end.date().isoformat() if len(str(query["from"])) == 10 else end.isoformat()


def _is_positive(case: Any) -> bool:
    meta = getattr(case, "meta", None)
    generation = getattr(meta, "generation", None)
    return generation is None or generation.mode.is_positive


_SKUS = itertools.count(1)


def _sales_state(body: Any) -> None:
    """A quote's valid_until not in the past (the clock); a pipeline's stage keys, given or made
    from the names, unique and not `won` or `lost` (a relation between the stages); a new product's
    SKU unused (SKUs are unique); money amounts whole (an amount has at most its currency's decimals,
    and the currency may be the record's: a PATCH's, a quote line's deal's); a quote line's product
    the one made for quotes, which no request deactivates or re-prices (a line's product must be
    active and priced in the deal's currency); a pipeline's reason codes unique in each list (a
    relation between the items), and free text allowed as a reason (a PATCH making the default
    pipeline list-only would make a deal's close with other words a 422: which words a close may
    give is that state)."""
    if not isinstance(body, dict):
        return
    for name in ("win_reasons", "loss_reasons"):
        if isinstance(body.get(name), list) and all(isinstance(reason, dict) for reason in body[name]):
            for index, reason in enumerate(body[name]):
                reason["code"] = f"reason_{index}"
    if "free_text_reasons" in body:
        body["free_text_reasons"] = True
    if isinstance(body.get("sku"), str):
        body["sku"] = f"{body['sku'][:50]}-{next(_SKUS)}"
    lines = body.get("lines") if isinstance(body.get("lines"), list) else []
    for item in [body, *(line for line in lines if isinstance(line, dict))]:
        for name in ("amount", "unit_price"):
            if isinstance(item.get(name), str):
                item[name] = item[name].split(".")[0]
        if item is not body and isinstance(item.get("product_id"), str) and KNOWN.get("quoted_product_id"):
            item["product_id"] = KNOWN["quoted_product_id"][0]
    if isinstance(body.get("valid_until"), str) and body["valid_until"] < datetime.now().date().isoformat():
        body["valid_until"] = "2099-01-01"
    stages = body.get("stages")
    if isinstance(stages, list) and all(isinstance(stage, dict) for stage in stages):
        for index, stage in enumerate(stages):
            stage["key"] = f"stage_{index}"


# names of map keys that messaging's document describes but OpenAPI 3.0 cannot constrain (it has no
# propertyNames): a template variable's name, a trigger filter's path, a template variant's locale
MAP_KEYS = {
    "variables": (re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$"), "v{}"),
    "filter": (re.compile(r"^[A-Za-z0-9_.]{1,100}$"), "f{}"),
    "variants": (re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"), "xx-v{}"),
}


def _messaging_state(body: Any) -> None:
    """Messaging's rules no OpenAPI 3.0 document can state: map keys as described (MAP_KEYS), a template's
    default locale among its variants, and a template's channel (the one made first is an email template)."""
    if not isinstance(body, dict):
        return
    for name, (pattern, fitting) in MAP_KEYS.items():
        if isinstance(body.get(name), dict):
            body[name] = {
                key if pattern.match(key) else fitting.format(index): item
                for index, (key, item) in enumerate(body[name].items())
            }
    if (
        isinstance(body.get("variants"), dict)
        and body["variants"]
        and body.get("default_locale") not in body["variants"]
    ):
        body["default_locale"] = next(iter(body["variants"]))
    elif "default_locale" in body and "variants" not in body:
        del body["default_locale"]  # a change of it alone needs a variant the template has: that is state
    if body.get("template_id") in KNOWN.get("template_id", []) and "channel" in body:
        body["channel"] = "email"


def _effective_soon(body: Any) -> None:
    """An SLA revision's effective_at within the 1,830 days either side of now the desk accepts (a range
    relative to the clock, which no OpenAPI document can state; its description says it)."""
    if not isinstance(body, dict) or not isinstance(body.get("effective_at"), str):
        return
    try:
        moment = datetime.fromisoformat(body["effective_at"].replace("Z", "+00:00"))
        far = abs(moment - datetime.now(moment.tzinfo)) > timedelta(days=1800)
    except (ValueError, OverflowError, TypeError):
        return
    if far:
        body["effective_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()


def _not_in_the_future(case: Any) -> None:
    """Times of what already happened are not in the future (the clock; their descriptions say it): a new
    contact's verified_at (when its details were last confirmed) and a consent's `at` (when it was given).
    A later one becomes a year ago."""
    name = {"/v1/contacts": "verified_at", "/v1/contacts/{contact_id}/consents/{channel}": "at"}.get(case.path)
    body = case.body
    if name is None or not isinstance(body, dict) or not isinstance(body.get(name), str):
        return
    try:
        moment = datetime.fromisoformat(body[name].replace("Z", "+00:00"))
        later = moment.tzinfo is not None and moment > datetime.now(UTC)
    except (ValueError, OverflowError, TypeError):
        return
    if later:
        body[name] = (datetime.now(UTC) - timedelta(days=365)).isoformat()


def _deals_keep_their_currency(case: Any) -> None:
    """A PATCH of a deal leaves a valid currency out (also in a request negative elsewhere, which the
    service may carry out): the known deal stays in USD, the known product's currency, which quote
    lines must be priced in. An invalid currency stays, keeping its request negative."""
    body = case.body
    if (
        case.method == "PATCH"
        and case.path == "/v1/deals/{deal_id}"
        and isinstance(body, dict)
        and isinstance(body.get("currency"), str)
        and body["currency"].upper() in MINOR_UNITS
    ):
        del body["currency"]


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Positive requests respect the state the document cannot describe (module docstring);
    negative ones get edge times, which no positive request may carry."""
    _deals_keep_their_currency(case)
    if not _is_positive(case):
        if isinstance(case.query, dict):
            case.query = _with_edge_times(case.query)
        if isinstance(case.body, dict):
            case.body = _with_edge_times(case.body)
        return
    if isinstance(case.query, dict):
        case.query = _respecting_state(case.query)
        if "from" in case.query:
            _a_short_period(case.query)
    if isinstance(case.body, dict | list):
        case.body = _respecting_state(case.body)
    _not_itself(case)
    _keeps_an_identity(case)
    _servqual_weights(case)
    if case.path == "/v1/imports" and case.method == "POST" and isinstance(case.body, bytes | str) and not case.body:
        case.body = b"first_name\nAna\n"  # the document's minLength: 1, which schemathesis ignores for binary
    _messaging_state(case.body)
    _sales_state(case.body)
    _effective_soon(case.body)
    _not_in_the_future(case)
    hours = case.body.get("business_hours") if isinstance(case.body, dict) else None
    if (
        isinstance(hours, dict)
        and isinstance(hours.get("start"), str)
        and isinstance(hours.get("end"), str)
        and hours["end"] <= hours["start"]
    ):
        hours["end"] = "24:00"  # the day's business hours end after they start
    headers = case.headers if case.headers is not None else {}
    if "If-Match" in headers:
        headers["If-Match"] = "*"
    if "Idempotency-Key" in headers:
        # the body's keys in the order sent: the API's fingerprint is of the bytes, so one content in
        # another order is another request
        request = json.dumps([case.method, case.formatted_path, case.query, case.body], default=str)
        headers["Idempotency-Key"] = hashlib.sha256(request.encode()).hexdigest()[:32]
