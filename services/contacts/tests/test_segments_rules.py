"""The segment rule language: validation, compilation, and the Segment aggregate.

The property test at the end runs compiled filters against the MongoDB-protocol
stand-in and checks them against a small evaluator written here from the documented
semantics, over random contacts and random rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient
from pymongo.collection import Collection

from crm_contacts.records import normalize
from crm_contacts.records.domain import LIFECYCLE_STAGES, Company, Contact
from crm_contacts.records.projections import CompaniesView, ContactsView, contact_document
from crm_contacts.segments.domain import MAX_CONDITIONS, MAX_DEPTH, Segment, check, compile_filter, rule_errors
from crmkit.errors import ValidationFailed
from crmkit.events import epoch_ms, new_id
from crmkit.testing import Servers

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
EXAMPLE = {
    "all": [
        {"field": "lifecycle_stage", "op": "in", "value": ["lead", "customer"]},
        {
            "any": [
                {"field": "tags", "op": "contains", "value": "vip"},
                {"field": "derived.clv", "op": "gte", "value": 1000},
                {"field": "company.industry", "op": "eq", "value": "retail"},
            ]
        },
        {"field": "created_at", "op": "after", "value": "-30d"},
    ]
}


def no_companies(query: dict[str, Any]) -> list[str]:
    raise AssertionError(f"no company query expected, got {query}")


# --- validation -----------------------------------------------------------------------


def test_the_readme_example_is_valid() -> None:
    assert rule_errors(EXAMPLE) == {}
    assert check(EXAMPLE).kind == "all"


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (None, {"rules"}),
        ([], {"rules"}),
        ({"all": []}, {"rules.all"}),
        ({"all": [], "any": []}, {"rules"}),
        ({"none": [{"field": "tags", "op": "contains", "value": "x"}]}, {"rules"}),
        ({"all": [5, "x", None]}, {"rules.all.0", "rules.all.1", "rules.all.2"}),
        ({"all": [{"field": "nope", "op": "eq", "value": "x"}]}, {"rules.all.0.field"}),
        ({"all": [{"field": "tags", "op": "gt", "value": 3}]}, {"rules.all.0.op"}),
        ({"all": [{"field": "tags", "op": "like", "value": 3}]}, {"rules.all.0.op"}),
        ({"all": [{"field": "tags", "op": "contains"}]}, {"rules.all.0.value"}),
        ({"all": [{"op": "eq", "value": "x"}]}, {"rules.all.0.field"}),
        ({"all": [{"field": "email", "op": "eq", "value": "a@x.com", "extra": 1}]}, {"rules.all.0.extra"}),
        ({"all": [{"field": "lifecycle_stage", "op": "eq", "value": "boss"}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "created_at", "op": "before", "value": "yesterday"}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "created_at", "op": "before", "value": "-999999w"}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "created_at", "op": "before", "value": "30d"}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "created_at", "op": "after", "value": "2025-01-01T00:00:00"}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "attributes.age", "op": "gt", "value": "30"}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "attributes.age", "op": "gt", "value": True}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "attributes.age", "op": "gt", "value": math.inf}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "attributes.a", "op": "in", "value": [1, "a"]}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "attributes.a", "op": "in", "value": []}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "attributes.a", "op": "in", "value": list(range(101))}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "attributes.a.b", "op": "eq", "value": 1}]}, {"rules.all.0.field"}),
        ({"all": [{"field": "attributes.$where", "op": "eq", "value": 1}]}, {"rules.all.0.field"}),
        ({"all": [{"field": "derived.ti-er", "op": "eq", "value": "gold"}]}, {"rules.all.0.field"}),
        ({"all": [{"field": "company.revenue", "op": "eq", "value": 1}]}, {"rules.all.0.field"}),
        ({"all": [{"field": "phone", "op": "eq", "value": "12"}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "first_name", "op": "starts_with", "value": "  "}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "first_name", "op": "eq", "value": "x" * 201}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "tags", "op": "exists", "value": "yes"}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "attributes.vip", "op": "eq", "value": None}]}, {"rules.all.0.value"}),
        ({"all": [{"field": "attributes.vip", "op": "eq", "value": {"$gt": 1}}]}, {"rules.all.0.value"}),
    ],
)
def test_bad_rules_are_reported_by_path(rules: Any, expected: set[str]) -> None:
    assert set(rule_errors(rules)) == expected
    with pytest.raises(ValidationFailed) as caught:
        check(rules)
    assert set(caught.value.errors) == expected


def test_every_bad_condition_is_listed_at_once() -> None:
    rules = {
        "all": [
            {"field": "tags", "op": "contains", "value": "ok"},
            {"field": "nope", "op": "eq", "value": 1},
            {
                "any": [
                    {"field": "tags", "op": "gt", "value": 1},
                    {"field": "created_at", "op": "before", "value": "soon"},
                ]
            },
            {"field": "lifecycle_stage", "op": "eq", "value": "boss", "x": 1},
        ]
    }
    assert set(rule_errors(rules)) == {
        "rules.all.1.field",
        "rules.all.2.any.0.op",
        "rules.all.2.any.1.value",
        "rules.all.3.x",
        "rules.all.3.value",
    }


def test_groups_nest_at_most_four_deep() -> None:
    leaf = {"field": "tags", "op": "contains", "value": "x"}
    four = {"all": [{"any": [{"all": [{"any": [leaf]}]}]}]}
    five = {"all": [{"any": [{"all": [{"any": [{"all": [leaf]}]}]}]}]}
    assert rule_errors(four) == {}
    assert set(rule_errors(five)) == {"rules.all.0.any.0.all.0.any.0"}


def test_at_most_fifty_conditions() -> None:
    leaf = {"field": "tags", "op": "contains", "value": "x"}
    assert rule_errors({"any": [leaf] * MAX_CONDITIONS}) == {}
    assert rule_errors({"any": [leaf] * 30 + [{"all": [leaf] * 21}]}) == {
        "rules": [f"at most {MAX_CONDITIONS} conditions (found 51)"]
    }


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=5)
    | st.sampled_from(["all", "any", "field", "op", "value", "tags", "eq", "in", "created_at", "-3d", "derived.x"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["all", "any", "field", "op", "value", "x"]), inner, max_size=4)
    ),
    max_leaves=25,
)


@given(JSON)
def test_validation_never_crashes_and_agrees_with_check(rules: Any) -> None:
    errors = rule_errors(rules)
    assert all(key == "rules" or key.startswith("rules.") for key in errors)
    if errors:
        with pytest.raises(ValidationFailed):
            check(rules)
    else:
        check(rules)


# --- compilation ----------------------------------------------------------------------


def test_only_active_contacts_are_members() -> None:
    query = compile_filter(check({"all": [{"field": "tags", "op": "contains", "value": "vip"}]}), NOW, no_companies)
    assert query == {"$and": [{"status": "active"}, {"tags": {"$in": ["vip"]}}]}


def test_relative_times_resolve_when_evaluated() -> None:
    rules = check({"all": [{"field": "created_at", "op": "after", "value": "-30d"}]})
    earlier = compile_filter(rules, NOW, no_companies)
    later = compile_filter(rules, NOW + timedelta(days=1), no_companies)
    assert earlier["$and"][1] == {"created_ms": {"$gt": epoch_ms(NOW - timedelta(days=30))}}
    assert later["$and"][1] == {"created_ms": {"$gt": epoch_ms(NOW - timedelta(days=29))}}


def test_company_conditions_become_one_query_per_group() -> None:
    asked: list[dict[str, Any]] = []

    def companies(query: dict[str, Any]) -> list[str]:
        asked.append(query)
        return ["co1", "co2"]

    rules = check(
        {
            "any": [
                {"field": "company.industry", "op": "eq", "value": "retail"},
                {"field": "company.tags", "op": "contains", "value": "key-account"},
                {"field": "tags", "op": "contains", "value": "vip"},
            ]
        }
    )
    query = compile_filter(rules, NOW, companies)
    assert asked == [{"$or": [{"industry": "retail"}, {"tags": {"$in": ["key-account"]}}]}]
    assert query["$and"][1] == {"$or": [{"tags": {"$in": ["vip"]}}, {"company_id": {"$in": ["co1", "co2"]}}]}


def test_names_compare_folded() -> None:
    rules = check(
        {
            "all": [
                {"field": "first_name", "op": "starts_with", "value": "علي"},
                {"field": "company.name", "op": "eq", "value": "ACME"},
            ]
        }
    )
    query = compile_filter(rules, NOW, lambda q: [str(q)])
    assert query["$and"][1]["$and"] == [
        {"first_name_folded": {"$regex": "^علی"}},
        {"company_id": {"$in": [str({"name_folded": "acme"})]}},
    ]


def test_dynamic_values_compare_under_their_type() -> None:
    rules = check(
        {
            "all": [
                {"field": "attributes.vip", "op": "eq", "value": True},
                {"field": "derived.clv", "op": "lt", "value": 10.5},
                {"field": "attributes.city", "op": "ne", "value": "Tehran"},
            ]
        }
    )
    clauses = compile_filter(rules, NOW, no_companies)["$and"][1]["$and"]
    assert clauses == [
        {"attributes.vip": {"$eq": True, "$type": "bool"}},
        {"derived.clv": {"$lt": 10.5, "$type": "number"}},
        {
            "$and": [
                {"attributes.city": {"$nin": [None]}},
                {"$nor": [{"attributes.city": {"$eq": "Tehran", "$type": "string"}}]},
            ]
        },
    ]


def test_regex_specials_in_a_prefix_are_literal() -> None:
    rules = check({"all": [{"field": "owner", "op": "starts_with", "value": "a.b*(c"}]})
    assert compile_filter(rules, NOW, no_companies)["$and"][1] == {"owner": {"$regex": "^" + re.escape("a.b*(c")}}


# --- the aggregate --------------------------------------------------------------------


def test_define_and_update_record_only_changes() -> None:
    segment = Segment.define("s1", "VIPs", None, EXAMPLE)
    assert [e.type for e in segment.pending] == ["SegmentDefined"]
    assert segment.pending[0].data == {"segment_id": "s1", "name": "VIPs", "description": None, "rules": EXAMPLE}
    segment.pending.clear()
    segment.update({"name": "VIPs", "rules": EXAMPLE})
    assert segment.pending == []
    segment.update({"description": "top customers"})
    assert segment.pending[0].type == "SegmentUpdated"
    assert segment.pending[0].data == {"segment_id": "s1", "changes": {"description": "top customers"}}
    assert segment.view()["description"] == "top customers" and segment.version == 2


def test_bad_rules_never_become_events() -> None:
    with pytest.raises(ValidationFailed) as caught:
        Segment.define("s1", "", None, {"all": [{"field": "nope", "op": "eq", "value": 1}]})
    assert set(caught.value.errors) == {"name", "rules.all.0.field"}
    segment = Segment.define("s1", "VIPs", None, EXAMPLE)
    with pytest.raises(ValidationFailed):
        segment.update({"rules": {"all": []}})
    assert len(segment.pending) == 1


def test_restore_continues_the_fold() -> None:
    segment = Segment.define("s1", "VIPs", "d", EXAMPLE)
    restored = Segment.restore(segment.view())
    assert restored.view() == segment.view()


# --- compiled filters against the server agree with the documented semantics ------------

WORDS = ["ali", "Ali", "علی", "علي", "sara", "a.b", "a*", "Zed", "x y", "30"]
TAGS = ["vip", "lead", "b2b", "x"]
EMAILS = ["a@x.com", "b@y.org", "ab@x.com"]
PHONES = ["+989121234567", "+14155550100", "+989121239999"]
OWNERS = ["owner-1", "owner-2"]
COMPANY_IDS = ["co1", "co2", "co3"]
INDUSTRIES = ["retail", "tech", "Retail"]
DOMAINS = ["acme.com", "acme.org", "beta.io"]
SIZES = ["1-10", "11-50"]
ATTRIBUTE_KEYS = ["age", "city", "flag"]
DERIVED_KEYS = ["tier", "clv"]
NUMBERS = st.sampled_from([0, 1, 2, 30, 30.0, 30.5, -1, 1000])
SCALARS = st.one_of(NUMBERS, st.booleans(), st.sampled_from(["30", "Tehran", "teh", "gold", "a.b", "علی"]))
DAY = 24 * 3600 * 1000


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), values)


@st.composite
def contact_documents(draw: st.DrawFn, index: int) -> dict[str, Any]:
    contact = Contact(f"c{index:03d}")
    contact.first_name = draw(maybe(st.sampled_from(WORDS)))
    contact.last_name = draw(maybe(st.sampled_from(WORDS)))
    contact.email = draw(maybe(st.sampled_from(EMAILS)))
    contact.phone = draw(maybe(st.sampled_from(PHONES)))
    contact.owner = draw(maybe(st.sampled_from(OWNERS)))
    contact.company_id = draw(maybe(st.sampled_from([*COMPANY_IDS, "gone"])))
    contact.lifecycle_stage = draw(st.sampled_from(LIFECYCLE_STAGES))
    contact.tags = sorted(draw(st.sets(st.sampled_from(TAGS))))
    contact.attributes = draw(st.dictionaries(st.sampled_from(ATTRIBUTE_KEYS), SCALARS, max_size=3))
    contact.status = draw(st.sampled_from(["active", "active", "active", "merged"]))
    contact.version = 1
    created = NOW - timedelta(milliseconds=draw(st.integers(0, 60 * DAY)))
    contact.created_at = created
    contact.updated_at = created + timedelta(milliseconds=draw(st.integers(0, 10 * DAY)))
    document = {**contact_document(contact), "_id": contact.id}
    derived = draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(DERIVED_KEYS), maybe(SCALARS), max_size=2)))
    if derived is not None:
        document["derived"] = derived
    return document


@st.composite
def company_documents(draw: st.DrawFn, company_id: str) -> dict[str, Any]:
    company = Company.create(
        company_id,
        {
            "name": draw(st.sampled_from(["Acme", "acme ltd", "Beta", "بتا"])),
            "domain": draw(maybe(st.sampled_from(DOMAINS))),
            "industry": draw(maybe(st.sampled_from(INDUSTRIES))),
            "size": draw(maybe(st.sampled_from(SIZES))),
            "tags": sorted(draw(st.sets(st.sampled_from(TAGS)))),
            "attributes": draw(st.dictionaries(st.sampled_from(ATTRIBUTE_KEYS), SCALARS, max_size=2)),
        },
    )
    company.created_at = company.updated_at = NOW
    return {**CompaniesView.document(None, company), "_id": company_id}  # type: ignore[arg-type]  # no state used


TEXT_VALUES = {
    "first_name": WORDS,
    "last_name": WORDS,
    "email": [*EMAILS, "A@X.COM"],
    "phone": PHONES,
    "owner": OWNERS,
    "company_id": COMPANY_IDS,
    "company.name": ["Acme", "ACME LTD", "بتا", "beta"],
    "company.domain": DOMAINS,
    "company.industry": INDUSTRIES,
    "company.size": SIZES,
}
PREFIXES = {
    "first_name": ["a", "A", "عل", "x y", "a.", "a*"],
    "last_name": ["z", "عل", "3"],
    "email": ["a", "ab@", "B@"],
    "phone": ["+98", "+1 415", "+9891212"],
    "owner": ["owner-", "owner-1"],
    "company_id": ["co"],
    "company.name": ["acme", "Acm", "ب"],
    "company.domain": ["acme.", "acme.c"],
    "company.industry": ["ret", "Ret"],
    "company.size": ["1"],
}
TIMES = st.one_of(
    st.sampled_from(["-1d", "-7d", "-30d", "-12h", "+1d", "-90m", "-2w"]),
    st.integers(0, 70).map(lambda days: (NOW - timedelta(days=days)).isoformat().replace("+00:00", "Z")),
)


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "stage", "tags", "date", "dynamic"]))
    if kind == "text":
        field = draw(st.sampled_from(sorted(TEXT_VALUES)))
        op = draw(st.sampled_from(["eq", "ne", "in", "not_in", "exists", "starts_with"]))
        pool = TEXT_VALUES[field]
        value: Any = {
            "exists": st.booleans(),
            "starts_with": st.sampled_from(PREFIXES[field]),
            "in": st.lists(st.sampled_from(pool), min_size=1, max_size=3),
            "not_in": st.lists(st.sampled_from(pool), min_size=1, max_size=3),
        }.get(op, st.sampled_from(pool))
    elif kind == "stage":
        field, op = "lifecycle_stage", draw(st.sampled_from(["eq", "ne", "in", "not_in"]))
        stages = st.sampled_from(LIFECYCLE_STAGES)
        value = st.lists(stages, min_size=1, max_size=3) if op in ("in", "not_in") else stages
    elif kind == "tags":
        field = draw(st.sampled_from(["tags", "company.tags"]))
        op = draw(st.sampled_from(["contains", "in", "not_in", "exists"]))
        value = {"contains": st.sampled_from(TAGS), "exists": st.booleans()}.get(
            op, st.lists(st.sampled_from(TAGS), min_size=1, max_size=3)
        )
    elif kind == "date":
        field = draw(st.sampled_from(["created_at", "updated_at"]))
        op, value = draw(st.sampled_from(["gt", "gte", "lt", "lte", "before", "after"])), TIMES
    else:
        prefix = draw(st.sampled_from(["attributes.", "company.attributes.", "derived."]))
        field = prefix + draw(st.sampled_from(DERIVED_KEYS if prefix == "derived." else ATTRIBUTE_KEYS))
        ops = ["eq", "ne", "in", "not_in", "exists", "gt", "gte", "lt", "lte", "starts_with"]
        op = draw(st.sampled_from([*ops, "contains"] if prefix == "derived." else ops))
        texts = st.sampled_from(["30", "Tehran", "teh", "gold", "a.b", "علی"])
        value = {
            "eq": SCALARS,
            "ne": SCALARS,
            "exists": st.booleans(),
            "starts_with": st.sampled_from(["3", "Teh", "a."]),
            "contains": texts,
            "in": st.one_of(st.lists(NUMBERS, min_size=1, max_size=3), st.lists(texts, min_size=1, max_size=3)),
        }.get(op, NUMBERS)
        value = (
            value
            if op != "not_in"
            else st.one_of(st.lists(NUMBERS, min_size=1, max_size=3), st.lists(texts, min_size=1, max_size=3))
        )
    return {"field": field, "op": op, "value": draw(value)}


def groups(depth: int = 1) -> st.SearchStrategy[dict[str, Any]]:
    """A random valid group: at most 4 deep and 4 * 3 * 2 * 2 = 48 conditions."""
    item = conditions() if depth == MAX_DEPTH else st.one_of(conditions(), conditions(), groups(depth + 1))
    return st.builds(
        lambda kind, items: {kind: items},
        st.sampled_from(["all", "any"]),
        st.lists(item, min_size=1, max_size={1: 4, 2: 3}.get(depth, 2)),
    )


RULES = groups()


# the evaluator: the documented semantics, written independently of the compiler

MISSING = object()


def lookup(document: dict[str, Any] | None, path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def same(a: Any, b: Any) -> bool:
    return type_of(a) == type_of(b) and a == b


def clean(field: str, text: str, op: str) -> str:
    if field in ("first_name", "last_name", "company.name"):
        return normalize.fold(text)
    if field in ("email", "company.domain"):
        return text.strip().lower()
    if field == "phone":
        return re.sub(r"[\s().-]", "", text) if op == "starts_with" else normalize.phone(text)
    return text


def holds(condition: dict[str, Any], contact: dict[str, Any], companies: dict[str, dict[str, Any]]) -> bool:
    field, op, expected = condition["field"], condition["op"], condition["value"]
    document: dict[str, Any] | None = contact
    path = field
    if field.startswith("company."):
        document, path = companies.get(contact.get("company_id") or ""), field.removeprefix("company.")
        if document is None:
            return False
    value = lookup(document, path)
    if field in ("first_name", "last_name", "company.name") and isinstance(value, str):
        value = normalize.fold(value)
    present = value is not MISSING and value is not None
    if path == "tags":
        tags = value if isinstance(value, list) else []
        return {
            "exists": lambda: bool(tags) == expected,
            "contains": lambda: expected in tags,
            "in": lambda: any(t in tags for t in expected),
            "not_in": lambda: not any(t in tags for t in expected),
        }[op]()
    if field in ("created_at", "updated_at"):
        moment = expected
        match = re.fullmatch(r"([+-])(\d+)([mhdw])", moment)
        if match:
            unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match[3]]
            delta = timedelta(**{unit: int(match[2])})
            at = epoch_ms(NOW + (delta if match[1] == "+" else -delta))
        else:
            at = epoch_ms(datetime.fromisoformat(moment.replace("Z", "+00:00")))
        stored = epoch_ms(contact[field])
        return {
            "gt": stored > at,
            "after": stored > at,
            "gte": stored >= at,
            "lt": stored < at,
            "before": stored < at,
            "lte": stored <= at,
        }[op]
    if op == "exists":
        return present == expected
    if not present:
        return False
    if isinstance(expected, str):
        expected = clean(field, expected, op)
    elif isinstance(expected, list):
        expected = [clean(field, item, op) if isinstance(item, str) else item for item in expected]
    if op == "eq":
        return same(value, expected)
    if op == "ne":
        return not same(value, expected)
    if op == "in":
        return any(same(value, item) for item in expected)
    if op == "not_in":
        return not any(same(value, item) for item in expected)
    if op == "contains":  # a list holding the value, or a single value equal to it
        return expected in value if isinstance(value, list) else same(value, expected)
    if op == "starts_with":
        return isinstance(value, str) and value.startswith(expected)
    if type_of(value) != "number":
        return False
    return {"gt": value > expected, "gte": value >= expected, "lt": value < expected, "lte": value <= expected}[op]


def evaluate(rules: dict[str, Any], contact: dict[str, Any], companies: dict[str, dict[str, Any]]) -> bool:
    kind, items = next(iter(rules.items()))
    results = (
        evaluate(item, contact, companies) if "field" not in item else holds(item, contact, companies) for item in items
    )
    return all(results) if kind == "all" else any(results)


@pytest.fixture(scope="module")
def views(servers: Servers) -> Iterator[tuple[Collection, Collection]]:
    """`contacts` and `companies` collections indexed as the service indexes them."""
    client: MongoClient = MongoClient(servers.mongo_url, tz_aware=True, tzinfo=UTC)
    name = f"t_segrules_{new_id().replace('-', '')[-12:]}"
    db = client[name]
    ContactsView("contacts", db["contacts"], None, "t").ensure_indexes()  # type: ignore[arg-type]
    CompaniesView("companies", db["companies"], None, "t").ensure_indexes()  # type: ignore[arg-type]
    yield db["contacts"], db["companies"]
    client.drop_database(name)
    client.close()


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    companies = [draw(company_documents(company_id)) for company_id in COMPANY_IDS]
    contacts = [draw(contact_documents(index)) for index in range(draw(st.integers(1, 12)))]
    return contacts, companies


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(world=worlds(), rules=RULES)
def test_compiled_filters_agree_with_the_semantics(
    views: tuple[Collection, Collection],
    world: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    rules: dict[str, Any],
) -> None:
    contacts_view, companies_view = views
    contacts, companies = world
    assert rule_errors(rules) == {}
    contacts_view.delete_many({})
    companies_view.delete_many({})
    contacts_view.insert_many(contacts)
    companies_view.insert_many(companies)

    def company_ids(query: dict[str, Any]) -> list[str]:
        return [doc["_id"] for doc in companies_view.find(query, {"_id": 1})]

    query = compile_filter(check(rules), NOW, company_ids)
    found = sorted(doc["_id"] for doc in contacts_view.find(query))

    by_id = {company["_id"]: company for company in companies}
    expected = sorted(c["_id"] for c in contacts if c["status"] == "active" and evaluate(rules, c, by_id))
    assert found == expected, query
