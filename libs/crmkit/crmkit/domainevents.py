"""Typed events: each event a frozen dataclass, declared inside the aggregate that records it.

    class Ticket(Aggregate):
        aggregate_type = "ticket"

        class TicketAssigned(DomainEvent):
            \"\"\"The ticket's assignee and/or group changed (both new values, and the old).\"\"\"
            assignee: str | None
            at: str = spec(format="date-time")

A subclass of `DomainEvent` is made a frozen, keyword-only dataclass; its wire name is the
class name (or `name=`), its schema version 1 (or `version=`), and `Aggregate` sets its
`aggregate_type` and registers it under (name, version) when the class body ends. The aggregate
records instances (`self.record(self.TicketAssigned(...))`) and applies them through one
`functools.singledispatchmethod`; stored events are turned back into instances as they are
folded. The instance's `data()` is exactly the `data` stored and published, so the wire does
not change with the declaration (tests/golden holds every type to it).

The JSON Schema of `data` (`json_schema`) is derived from the type hints, `str`, `int`,
`float`, `bool`, `X | None`, `list[X]`, `dict[str, X]`, `Literal[...]` and nested dataclasses,
with what a hint cannot say given per field by `spec(...)`: JSON Schema keywords (`format`,
`minLength`, `description`, `enum`, ...) in the order they should appear, `personal=True` for a
field sealed with the person's key, `omit_none=True` for a field left out of `data` when it is
None (it was added later, or only one of two is ever sent), `wire=` when the wire name is not a
Python name (`from`), and `schema=` for a value kept as plain JSON whose shape is given whole.
A field is required unless it has a default. The docstring is the catalogue's description.
Nothing here does I/O or imports more than the standard library: domain modules build on it.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, Union, dataclass_transform, get_args, get_origin

NOTHING: Any = dataclasses.MISSING
SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def spec(
    *,
    default: Any = NOTHING,
    default_factory: Callable[[], Any] | Any = NOTHING,
    wire: str | None = None,
    personal: bool | tuple[str, ...] = False,
    omit_none: bool = False,
    schema: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
    **keywords: Any,
) -> Any:
    """A field of an event with what its type hint cannot say (see the module docstring). `schema` may be
    a function giving it, called when the schema is derived: a shape taken from another event's.
    `personal` may name keys inside the field's value instead (a `changes` object: `changes.email`)."""
    if omit_none and default is NOTHING:
        default = None
    metadata = {"wire": wire, "personal": personal, "omit_none": omit_none, "schema": schema, "keywords": keywords}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class _Slot:
    """How one field goes to and from `data`: its names, how to read a nested value, and its default."""

    attr: str
    wire: str
    omit_none: bool
    read: Callable[[Any], Any] | None  # nested dataclasses: a dict (or list of dicts) back into objects
    default: Callable[[], Any] | None  # what a stored event without the field reads as
    nullable: bool  # without a default, a stored event without the field reads as None


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(spec, dataclasses.field))
class DomainEvent:
    """Base of every typed event; see the module docstring."""

    # ClassVar names that no event field takes (a policy has a `name`, a `description`)
    wire_name: ClassVar[str]
    schema_version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = ""  # set by crmkit.aggregate.Aggregate when the owning class is made
    schema_extra: ClassVar[Mapping[str, Any]] = {}  # JSON Schema keywords for the whole `data` (e.g. oneOf)

    def __init_subclass__(cls, name: str | None = None, version: int = 1, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.wire_name = name or cls.__name__
        cls.schema_version = version
        dataclasses.dataclass(frozen=True, kw_only=True)(cls)

    @classmethod
    def meaning(cls) -> str:
        """The docstring on one line: what the catalogue says the event means."""
        return " ".join((cls.__doc__ or "").split())

    def data(self) -> dict[str, Any]:
        """The event's `data` as stored and published."""
        return _data_of(self)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Any:
        """The event back from stored `data`: unknown keys ignored, a missing field its default, else
        None where its type allows it (an event stored before the field was added).

        A missing field that can be neither is a KeyError: no event of this version was stored
        without it, so the record is forged or corrupt (a projection parks it)."""
        return _from_data(cls, data)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The fields' Python names, in order."""
        return tuple(slot.attr for slot in _slots(cls))

    @classmethod
    def personal_paths(cls) -> tuple[str, ...]:
        """Dotted paths of the personal fields (sealed on the wire with the person's key)."""
        paths: list[str] = []
        for f in _fields(cls):
            wire, personal = f.metadata.get("wire") or f.name, f.metadata.get("personal")
            paths.extend([wire] if personal is True else [f"{wire}.{key}" for key in personal or ()])
        return tuple(paths)


def json_schema(kind: type) -> dict[str, Any]:
    """The JSON Schema of a dataclass's `data`: a closed object of its fields (see the module docstring)."""
    properties = {}
    required = []
    for f in _fields(kind):
        wire = f.metadata.get("wire") or f.name
        properties[wire] = _field_schema(f, _hints(kind)[f.name])
        if f.default is NOTHING and f.default_factory is NOTHING:
            required.append(wire)
    schema = {"type": "object", "required": required, "additionalProperties": False, "properties": properties}
    return {**schema, **getattr(kind, "schema_extra", {})}


def _field_schema(f: dataclasses.Field[Any], hint: Any) -> dict[str, Any]:
    if (schema := f.metadata.get("schema")) is not None:
        return dict(schema() if callable(schema) else schema)
    keywords = dict(f.metadata.get("keywords") or {})
    if f.metadata.get("omit_none"):
        hint = _without_none(hint)
    if "enum" in keywords:  # described by its values alone
        values = list(keywords.pop("enum"))
        return {"enum": [*values, None] if _nullable(hint) else values, **keywords}
    schema = _hint_schema(hint)
    return {**schema, **keywords}


def _hint_schema(hint: Any) -> dict[str, Any]:
    origin, args = get_origin(hint), get_args(hint)
    if _nullable(hint):
        inner = _hint_schema(_without_none(hint))
        if "type" in inner:
            return {**inner, "type": [inner["type"], "null"]}
        return {"anyOf": [inner, {"type": "null"}]}
    if hint in SCALARS:
        return {"type": SCALARS[hint]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is list:
        return {"type": "array", "items": _hint_schema(args[0])}
    if origin is dict or hint is dict:
        value = args[1] if args else Any
        return {"type": "object"} if value is Any else {"type": "object", "additionalProperties": _hint_schema(value)}
    if dataclasses.is_dataclass(hint):
        return json_schema(hint)  # type: ignore[arg-type]
    if hint is Any:
        return {}
    raise TypeError(f"no JSON Schema for the type hint {hint!r}; give the field spec(schema=...)")


def _nullable(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)


def _without_none(hint: Any) -> Any:
    if not _nullable(hint):
        return hint
    rest = [arg for arg in get_args(hint) if arg is not type(None)]
    return rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007 (built from a list)


_HINTS: dict[type, dict[str, Any]] = {}
_SLOTS: dict[type, tuple[_Slot, ...]] = {}


def _fields(kind: type) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(typing.cast(Any, kind))


def _hints(kind: type) -> dict[str, Any]:
    """The resolved type hints, on first use: a class nested in the aggregate is named through it
    (`list[Ticket.Due]`), which resolves once the module is loaded."""
    if kind not in _HINTS:
        _HINTS[kind] = typing.get_type_hints(kind, localns=dict(vars(kind)))
    return _HINTS[kind]


def _slots(kind: type) -> tuple[_Slot, ...]:
    """How each field goes to and from `data`, worked out once per class (folding reads many events)."""
    if kind in _SLOTS:
        return _SLOTS[kind]
    slots = []
    for f in _fields(kind):
        default: Callable[[], Any] | None = None
        if f.default is not NOTHING:
            default = functools.partial(_same, f.default)
        elif f.default_factory is not NOTHING:
            default = typing.cast(Callable[[], Any], f.default_factory)
        hint = _hints(kind)[f.name]
        slots.append(
            _Slot(
                f.name,
                f.metadata.get("wire") or f.name,
                bool(f.metadata.get("omit_none")),
                _reader(_without_none(hint)),
                default,
                _nullable(hint),
            )
        )
    _SLOTS[kind] = tuple(slots)
    return _SLOTS[kind]


def _same(value: Any) -> Any:
    return value


def _reader(hint: Any) -> Callable[[Any], Any] | None:
    """How to turn a stored value of this hint into objects: only nested dataclasses need it."""
    if dataclasses.is_dataclass(hint):
        nested = typing.cast(type, hint)
        return lambda value: None if value is None else _from_data(nested, value)
    if get_origin(hint) is list and (item := _reader(get_args(hint)[0])) is not None:
        return lambda value: None if value is None else [item(v) for v in value]
    return None


def _from_data(kind: type, data: Mapping[str, Any]) -> Any:
    values = {}
    for slot in _slots(kind):
        if slot.wire in data:
            value = data[slot.wire]
            values[slot.attr] = slot.read(value) if slot.read is not None else value
        elif slot.default is not None:
            values[slot.attr] = slot.default()
        elif slot.nullable:
            values[slot.attr] = None
        else:
            raise KeyError(f"{kind.__name__} has no {slot.wire!r}")
    return kind(**values)


def _data_of(event: Any) -> dict[str, Any]:
    data = {}
    for slot in _slots(type(event)):
        value = getattr(event, slot.attr)
        if value is None and slot.omit_none:
            continue
        data[slot.wire] = _plain(value) if slot.read is not None else value
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _data_of(value)
    return value


def registry(*owners: type) -> dict[tuple[str, int], type[DomainEvent]]:
    """(name, version) → event class of every event declared in `owners` (aggregates): a service's registry."""
    found: dict[tuple[str, int], type[DomainEvent]] = {}
    for owner in owners:
        for key, kind in getattr(owner, "event_types", {}).items():
            if found.setdefault(key, kind) is not kind:
                raise TypeError(f"{key[0]} v{key[1]} is declared twice: {found[key].__qualname__}, {kind.__qualname__}")
    return found


def personal_fields(*owners: type) -> dict[str, tuple[str, ...]]:
    """Event type → its personal fields, for every event of `owners` that has some (what the event
    store seals: crmkit.shredding.PersonalData)."""
    return {kind.wire_name: paths for kind in registry(*owners).values() if (paths := kind.personal_paths())}
