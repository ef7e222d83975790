"""Segments: saved rules that select contacts, and the Segment aggregate. Pure Python, no I/O.

A segment's rules are JSON, validated when the segment is defined or changed:

    {"all": [{"field": "lifecycle_stage", "op": "in", "value": ["lead", "customer"]},
             {"any": [{"field": "tags", "op": "contains", "value": "vip"},
                      {"field": "derived.clv", "op": "gte", "value": 1000}]},
             {"field": "created_at", "op": "after", "value": "-30d"}]}

Membership is never stored: the rules are compiled into a MongoDB filter over the
`contacts` read model each time members are read, so it follows every change to a
contact. Conditions on a company are first resolved against the `companies` read model
into a `company_id $in [...]` clause (the resolver is passed in, keeping this module pure).

Semantics (the same on MongoDB and on the local stand-in, see tests/compat/test_segment_queries.py):
- a condition on a value that is absent (missing or null) does not match; only
  `exists: false` selects absent values. `company.*` conditions match only contacts
  that belong to a company.
- values compare by type: 30 never equals "30" or true; gt/gte/lt/lte compare numbers
  only (or times, on created_at/updated_at); starts_with applies to text only.
- names (first_name, last_name, company.name) compare in their folded form, so Arabic
  and Persian letter variants and case do not matter (crm_contacts.records.normalize.fold).
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from crm_contacts.records import normalize
from crm_contacts.records.domain import LIFECYCLE_STAGES, changes_schema
from crmkit.aggregate import Aggregate
from crmkit.domainevents import DomainEvent, json_schema, spec
from crmkit.errors import ValidationFailed
from crmkit.events import epoch_ms, parse_time

MAX_DEPTH = 4  # the top-level group is depth 1
MAX_CONDITIONS = 50
MAX_VALUES = 100  # items in an `in` / `not_in` list
MAX_TEXT = 200
MAX_NUMBER = 2**53  # beyond this, numbers do not round-trip exactly through JSON and BSON doubles

GROUPS = ("all", "any")
OPS = ("eq", "ne", "in", "not_in", "contains", "exists", "gt", "gte", "lt", "lte", "before", "after", "starts_with")

TEXT_OPS = ("eq", "ne", "in", "not_in", "exists", "starts_with")
KIND_OPS: dict[str, tuple[str, ...]] = {
    "text": TEXT_OPS,
    "stage": ("eq", "ne", "in", "not_in"),
    "tags": ("contains", "in", "not_in", "exists"),
    "date": ("gt", "gte", "lt", "lte", "before", "after"),
    "value": ("eq", "ne", "in", "not_in", "exists", "gt", "gte", "lt", "lte", "starts_with"),
    "derived": ("eq", "ne", "in", "not_in", "exists", "gt", "gte", "lt", "lte", "starts_with", "contains"),
}

# a key under attributes./derived. becomes part of a document path: no dots, no operators
ATTRIBUTE_KEY = re.compile(r"^[^.$\x00][^.\x00]{0,63}$")
DERIVED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
RELATIVE = re.compile(r"^([+-])(\d{1,6})([mhdw])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_RELATIVE = timedelta(days=36_525)  # beyond, "now + duration" could leave the representable years


@dataclass(frozen=True)
class Field:
    """Where a rule field lives and how its values are compared."""

    name: str  # as written in the rule
    kind: str  # a key of KIND_OPS
    target: str  # "contact" or "company" (which read model holds it)
    path: str  # document path in that read model
    normalize: Callable[[str], str] | None = None  # applied to text values (and to stored names when folded)
    folded_path: str | None = None  # where the folded form is stored (names)


def _lower(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().lower()


def _phone_prefix(text: str) -> str:
    return re.sub(r"[\s().-]", "", normalize.fold(text))


CONTACT_FIELDS: dict[str, Field] = {
    "first_name": Field("first_name", "text", "contact", "first_name", normalize.fold, "first_name_folded"),
    "last_name": Field("last_name", "text", "contact", "last_name", normalize.fold, "last_name_folded"),
    "email": Field("email", "text", "contact", "email", _lower),
    "phone": Field("phone", "text", "contact", "phone", _phone_prefix),
    "owner": Field("owner", "text", "contact", "owner"),
    "company_id": Field("company_id", "text", "contact", "company_id"),
    "lifecycle_stage": Field("lifecycle_stage", "stage", "contact", "lifecycle_stage"),
    "tags": Field("tags", "tags", "contact", "tags"),
    "created_at": Field("created_at", "date", "contact", "created_ms"),
    "updated_at": Field("updated_at", "date", "contact", "updated_ms"),
}
COMPANY_FIELDS: dict[str, Field] = {
    "company.name": Field("company.name", "text", "company", "name", normalize.fold, "name_folded"),
    "company.domain": Field("company.domain", "text", "company", "domain", _lower),
    "company.industry": Field("company.industry", "text", "company", "industry"),
    "company.size": Field("company.size", "text", "company", "size"),
    "company.tags": Field("company.tags", "tags", "company", "tags"),
}
FIELD_NAMES = (*CONTACT_FIELDS, "attributes.<key>", "derived.<name>", *COMPANY_FIELDS, "company.attributes.<key>")


def field_for(name: str) -> Field:
    """The Field a rule names; raises ValueError with a message for the client."""
    if name in CONTACT_FIELDS:
        return CONTACT_FIELDS[name]
    if name in COMPANY_FIELDS:
        return COMPANY_FIELDS[name]
    for prefix, target, kind, pattern in (
        ("attributes.", "contact", "value", ATTRIBUTE_KEY),
        ("company.attributes.", "company", "value", ATTRIBUTE_KEY),
        ("derived.", "contact", "derived", DERIVED_NAME),
    ):
        if name.startswith(prefix):
            key = name[len(prefix) :]
            if not pattern.match(key):
                what = (
                    "a derived value's name is letters, digits and _"
                    if kind == "derived"
                    else "an attribute key of 1-64 characters without '.' and not starting with '$'"
                )
                raise ValueError(f"{name!r}: after {prefix!r} comes {what}")
            path = f"attributes.{key}" if prefix == "company.attributes." else name
            return Field(name, kind, target, path)
    raise ValueError(f"unknown field {name!r}; fields are {', '.join(FIELD_NAMES)}")


# --- the parsed form ------------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    """A time in a rule: absolute (epoch ms) or relative to when the rule is evaluated."""

    absolute_ms: int | None = None
    relative: timedelta | None = None

    def resolve(self, now: datetime) -> int:
        if self.absolute_ms is not None:
            return self.absolute_ms
        assert self.relative is not None
        return epoch_ms(now + self.relative)


@dataclass(frozen=True)
class Condition:
    field: Field
    op: str
    value: Any  # normalised: text folded/lowered, lists de-duplicated, times as Moment


@dataclass(frozen=True)
class Group:
    kind: str  # "all" | "any"
    items: tuple[Group | Condition, ...]


def check(rules: Any, path: str = "rules") -> Group:
    """The parsed rules, or ValidationFailed listing every bad part by path ("rules.all.2.op")."""
    parser = _Parser()
    group = parser.root(rules, path)
    if parser.errors or group is None:
        raise ValidationFailed(f"{len(parser.errors)} problem(s) in the segment rules", parser.errors)
    return group


def rule_errors(rules: Any, path: str = "rules") -> dict[str, list[str]]:
    """Every problem in `rules`, by path; empty when they are valid."""
    parser = _Parser()
    parser.root(rules, path)
    return parser.errors


class _Parser:
    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}
        self.conditions = 0

    def error(self, path: str, message: str) -> None:
        self.errors.setdefault(path, []).append(message)

    def root(self, rules: Any, path: str) -> Group | None:
        if not isinstance(rules, dict) or not any(key in rules for key in GROUPS):
            self.error(path, 'must be a group: {"all": [...]} or {"any": [...]}')
            return None
        group = self.group(rules, path, depth=1)
        if self.conditions > MAX_CONDITIONS:
            self.error(path, f"at most {MAX_CONDITIONS} conditions (found {self.conditions})")
        return group

    def group(self, node: dict[str, Any], path: str, depth: int) -> Group | None:
        kinds = [key for key in GROUPS if key in node]
        extra = sorted(str(key) for key in node if key not in GROUPS)
        if len(kinds) != 1:
            self.error(path, 'a group has exactly one of "all" or "any"')
            return None
        if extra:
            self.error(path, f"unknown key(s) in a group: {', '.join(extra)}")
        kind = kinds[0]
        if depth > MAX_DEPTH:
            self.error(path, f"groups nest at most {MAX_DEPTH} deep")
            return None
        items = node[kind]
        here = f"{path}.{kind}"
        if not isinstance(items, list) or not items:
            self.error(here, "must be a non-empty list of conditions and groups")
            return None
        parsed: list[Group | Condition] = []
        for index, item in enumerate(items):
            child = self.item(item, f"{here}.{index}", depth)
            if child is not None:
                parsed.append(child)
        return Group(kind, tuple(parsed))

    def item(self, node: Any, path: str, depth: int) -> Group | Condition | None:
        if isinstance(node, dict) and any(key in node for key in GROUPS) and "field" not in node:
            return self.group(node, path, depth + 1)
        if isinstance(node, dict):
            self.conditions += 1
            return self.condition(node, path)
        self.error(path, 'must be a condition {"field", "op", "value"} or a group {"all"|"any": [...]}')
        return None

    def condition(self, node: dict[str, Any], path: str) -> Condition | None:
        ok = True
        for key in sorted(str(k) for k in node if k not in ("field", "op", "value")):
            self.error(f"{path}.{key}", "unknown key (a condition has field, op and value)")
            ok = False
        field: Field | None = None
        name, op = node.get("field"), node.get("op")
        if not isinstance(name, str):
            self.error(f"{path}.field", "required: the name of a field" if name is None else "must be text")
        else:
            try:
                field = field_for(name)
            except ValueError as exc:
                self.error(f"{path}.field", str(exc))
        if not isinstance(op, str) or op not in OPS:
            self.error(f"{path}.op", f"must be one of {', '.join(OPS)}")
            op = None
        elif field is not None and op not in KIND_OPS[field.kind]:
            allowed = ", ".join(KIND_OPS[field.kind])
            self.error(f"{path}.op", f"{op!r} does not apply to {field.name}; use one of {allowed}")
            op = None
        if "value" not in node:
            self.error(f"{path}.value", "required")
            return None
        if field is None or op is None:
            return None
        try:
            value = _value(field, op, node["value"])
        except ValueError as exc:
            self.error(f"{path}.value", str(exc))
            return None
        return Condition(field, op, value) if ok else None


def _value(field: Field, op: str, raw: Any) -> Any:
    """The condition's value, checked against the field and operator, and normalised."""
    if op == "exists":
        if not isinstance(raw, bool):
            raise ValueError("must be true or false")
        return raw
    if op in ("before", "after") or field.kind == "date":
        return _moment(raw)
    if op in ("gt", "gte", "lt", "lte"):
        return _number(raw)
    if op in ("in", "not_in"):
        if not isinstance(raw, list) or not raw or len(raw) > MAX_VALUES:
            raise ValueError(f"must be a list of 1 to {MAX_VALUES} values")
        values = [_scalar(field, op, item) for item in raw]
        kinds = {_type_of(v) for v in values}
        if "bool" in kinds or len(kinds) > 1:
            raise ValueError("the values must be all text or all numbers (for true/false use eq)")
        return list(dict.fromkeys(values))
    if op in ("contains", "starts_with"):
        return _text(field, raw, op)
    return _scalar(field, op, raw)  # eq, ne


def _scalar(field: Field, op: str, raw: Any) -> Any:
    if field.kind in ("value", "derived"):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int | float):
            return _number(raw)
        return _text(field, raw, op)
    value = _text(field, raw, op)
    if field.kind == "stage" and value not in LIFECYCLE_STAGES:
        raise ValueError(f"{value!r} is not a lifecycle stage ({', '.join(LIFECYCLE_STAGES)})")
    if field.name == "phone" and op != "starts_with":
        try:
            return normalize.phone(raw)
        except ValueError as exc:
            raise ValueError(f"{raw!r}: {exc}") from None
    return value


def _text(field: Field, raw: Any, op: str) -> str:
    if not isinstance(raw, str):
        expected = (
            "text"
            if field.kind not in ("value", "derived") or op in ("contains", "starts_with")
            else "text, a number or true/false"
        )
        raise ValueError(f"must be {expected}")
    if len(raw) > MAX_TEXT:
        raise ValueError(f"at most {MAX_TEXT} characters")
    value = field.normalize(raw) if field.normalize else raw
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _number(raw: Any) -> int | float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError("must be a number")
    if not math.isfinite(raw) or abs(raw) > MAX_NUMBER:
        raise ValueError(f"must be a finite number within ±{MAX_NUMBER}")
    return raw


def _moment(raw: Any) -> Moment:
    message = 'must be an RFC 3339 time ("2025-01-31T00:00:00Z") or a relative duration ("-30d", "+12h"; m h d w)'
    if not isinstance(raw, str):
        raise ValueError(message)
    relative = RELATIVE.match(raw.strip())
    if relative:
        sign, amount, unit = relative.groups()
        delta = timedelta(**{UNITS[unit]: int(amount)})
        if delta > MAX_RELATIVE:
            raise ValueError("a relative duration is at most 100 years")
        return Moment(relative=-delta if sign == "-" else delta)
    try:
        return Moment(absolute_ms=epoch_ms(parse_time(raw.strip())))
    except (ValueError, OverflowError):
        raise ValueError(message) from None


def _type_of(value: Any) -> str:
    """The BSON type alias a value is compared under ($type), so 30, "30" and true stay apart."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "string"


# --- compiling to a MongoDB filter -----------------------------------------------------

CompanyResolver = Callable[[dict[str, Any]], Sequence[str]]


def compile_filter(rules: Group, now: datetime, companies: CompanyResolver) -> dict[str, Any]:
    """The MongoDB filter over the `contacts` read model selecting the segment's active members.

    `companies(filter)` answers the ids of the companies matching a filter over the
    `companies` read model (one query per group that has company conditions).
    Only operators pinned in tests/compat/test_segment_queries.py are used.
    """
    return {"$and": [{"status": "active"}, _group(rules, now, companies)]}


def _group(group: Group, now: datetime, companies: CompanyResolver) -> dict[str, Any]:
    clauses: list[dict[str, Any]] = []
    on_company: list[dict[str, Any]] = []
    for item in group.items:
        if isinstance(item, Group):
            clauses.append(_group(item, now, companies))
        elif item.field.target == "company":
            on_company.append(_condition(item, now))
        else:
            clauses.append(_condition(item, now))
    if on_company:
        # a contact has at most one company, so "its company matches c1 and c2" (or "c1 or
        # c2") is "its company is one of those matching c1 and c2" (or c1 or c2): one query
        ids = list(companies(_combine(group.kind, on_company)))
        clauses.append({"company_id": {"$in": ids}})
    return _combine(group.kind, clauses)


def _combine(kind: str, clauses: list[dict[str, Any]]) -> dict[str, Any]:
    if len(clauses) == 1:
        return clauses[0]
    return {"$and" if kind == "all" else "$or": clauses}


def _present(path: str) -> dict[str, Any]:
    # `$nin: [null]` excludes missing and null on both servers; `$exists`, `$ne: null` and
    # `{path: null}` do not agree between them (pinned in tests/compat/test_segment_queries.py)
    return {path: {"$nin": [None]}}


def _absent(path: str) -> dict[str, Any]:
    return {path: {"$in": [None]}}  # missing or null, also inside $and/$or (unlike {path: null} on the stand-in)


def _condition(condition: Condition, now: datetime) -> dict[str, Any]:
    field, op, value = condition.field, condition.op, condition.value
    path = field.folded_path if field.folded_path and op != "exists" else field.path
    if op == "exists":
        if field.kind == "tags":
            empty = {path: {"$size": 0}}
            return {"$nor": [empty]} if value else empty
        return _present(path) if value else _absent(path)
    if field.kind == "date":
        operator = {"after": "$gt", "before": "$lt"}.get(op, f"${op}")
        return {path: {operator: value.resolve(now)}}
    if field.kind == "tags":
        if op == "not_in":
            return {path: {"$nin": value}}
        return {path: {"$in": value if op == "in" else [value]}}
    if op == "contains":  # a derived list holding the value (or a single value equal to it)
        return {path: {"$in": [value]}}
    dynamic = field.kind in ("value", "derived")  # stored values of any JSON type: compare under $type
    if op == "starts_with":
        match = {"$regex": "^" + re.escape(value)}
        return {path: {**match, "$type": "string"} if dynamic else match}
    if op in ("gt", "gte", "lt", "lte"):
        return {path: {f"${op}": value, "$type": "number"}}
    if op in ("eq", "ne"):
        match = {path: {"$eq": value, "$type": _type_of(value)} if dynamic else value}
    else:  # in, not_in
        match = {path: {"$in": value, "$type": _type_of(value[0])} if dynamic else {"$in": value}}
    if op in ("ne", "not_in"):
        return {"$and": [_present(path), {"$nor": [match]}]}
    return match


# --- the aggregate --------------------------------------------------------------------

SEGMENT_FIELDS = ("name", "description", "rules")


def _segment_changes() -> dict[str, Any]:
    """SegmentUpdated's `changes`: any of the segment's fields (schemas as when defined)."""
    defined = json_schema(Segment.SegmentDefined)["properties"]
    return changes_schema({name: defined[name] for name in SEGMENT_FIELDS})


class Segment(Aggregate):
    """A named, saved set of rules; its members are whoever matches them when asked."""

    aggregate_type = "segment"

    class SegmentDefined(DomainEvent):
        """A saved segment (rules over contacts) was defined."""

        segment_id: str = spec(minLength=1)
        name: str
        description: str | None = None
        rules: dict[str, Any]

    class SegmentUpdated(DomainEvent):
        """A segment's name, description or rules changed."""

        segment_id: str = spec(minLength=1)
        changes: dict[str, Any] = spec(schema=_segment_changes)

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name: str | None = None
        self.description: str | None = None
        self.rules: dict[str, Any] = {}

    @classmethod
    def define(cls, segment_id: str, name: str, description: str | None, rules: dict[str, Any]) -> Segment:
        errors = rule_errors(rules)
        if not name:
            errors["name"] = ["required"]
        if errors:
            raise ValidationFailed("the segment is not valid", errors)
        segment = cls(segment_id)
        segment.record(cls.SegmentDefined(segment_id=segment_id, name=name, description=description, rules=rules))
        return segment

    def update(self, fields: dict[str, Any]) -> None:
        """Change name, description or rules; records only what actually changes."""
        changes = {
            name: fields[name] for name in SEGMENT_FIELDS if name in fields and fields[name] != getattr(self, name)
        }
        errors = rule_errors(changes["rules"]) if "rules" in changes else {}
        if "name" in changes and not changes["name"]:
            errors["name"] = ["cannot be empty"]
        if errors:
            raise ValidationFailed("the segment is not valid", errors)
        if changes:
            self.record(self.SegmentUpdated(segment_id=self.id, changes=changes))

    def parsed_rules(self) -> Group:
        return check(self.rules)

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes a segment."""

    @apply.register(SegmentDefined)
    def _on_defined(self, event: SegmentDefined) -> None:
        self.adopt(event)  # name, description, rules

    @apply.register(SegmentUpdated)
    def _on_updated(self, event: SegmentUpdated) -> None:
        for name, value in event.changes.items():
            setattr(self, name, value)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "name": self.name,
            "description": self.description,
            "rules": self.rules,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Segment:
        """The aggregate back from its `view` (how the projection continues a fold)."""
        segment = cls(view["id"])
        for name in (*cls.state_names(), "version", "created_at", "updated_at"):
            setattr(segment, name, view.get(name))
        return segment
