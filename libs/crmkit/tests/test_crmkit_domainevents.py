"""Typed events: declared with their aggregate, recorded as objects, folded back from stored data (no servers)."""

from __future__ import annotations

import functools
from dataclasses import FrozenInstanceError, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from jsonschema import Draft202012Validator

from crmkit.aggregate import Aggregate, changes_by_event
from crmkit.catalogue import Catalogue, EventType
from crmkit.domainevents import DomainEvent, json_schema, personal_fields, registry, spec
from crmkit.events import RecordedEvent

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class Gadget(Aggregate):
    aggregate_type = "gadget"

    @dataclass(frozen=True)
    class Part:
        sku: str = spec(minLength=1)
        count: int | None = spec(minimum=1)

    class GadgetMade(DomainEvent):
        """A gadget was made:   its label
        and its parts."""

        label: str = spec(minLength=1, personal=True)
        colour: Literal["red", "blue"]
        parts: list[Gadget.Part]
        weight: float | None = spec(minimum=0, description="grams")
        note: str | None = spec(omit_none=True, maxLength=10)

    class GadgetMoved(DomainEvent, name="GadgetMoved", version=2):
        """It moved."""

        from_: str = spec(wire="from", enum=("shelf", "box"))
        to: str = spec(enum=("shelf", "box"))
        tags: list[str] = spec(default_factory=list, items={"type": "string", "minLength": 1})
        extra: dict[str, Any] = spec(default_factory=dict)
        sizes: dict[str, int] = spec(default_factory=dict)

    class GadgetPolished(DomainEvent):
        """Nothing but a fact for consumers."""

        at: str = spec(format="date-time")

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.label: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.place = "shelf"

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """A fact with no effect on state (GadgetPolished)."""

    @apply.register(GadgetMade)
    def _made(self, event: GadgetMade) -> None:
        self.label = event.label
        self.parts = [{"sku": part.sku, "count": part.count} for part in event.parts]

    @apply.register(GadgetMoved)
    def _moved(self, event: GadgetMoved) -> None:
        self.place = event.to

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "label": self.label, "parts": self.parts, "place": self.place}


def made() -> Gadget.GadgetMade:
    return Gadget.GadgetMade(label="G1", colour="red", parts=[Gadget.Part(sku="a", count=2)], weight=None)


def stored(gadget: Gadget) -> list[RecordedEvent]:
    return [
        RecordedEvent(f"e{n}", "shop", gadget.id, "gadget", n, e.type, e.schema_version, e.data, T0, "ana", "c", None)
        for n, e in enumerate(gadget.pending, start=1)
    ]


def test_an_event_is_declared_with_its_aggregate() -> None:
    assert Gadget.GadgetMade.aggregate_type == "gadget"
    assert (Gadget.GadgetMade.wire_name, Gadget.GadgetMade.schema_version) == ("GadgetMade", 1)
    assert Gadget.event_types == {
        ("GadgetMade", 1): Gadget.GadgetMade,
        ("GadgetMoved", 2): Gadget.GadgetMoved,
        ("GadgetPolished", 1): Gadget.GadgetPolished,
    }
    assert Gadget.GadgetMade.meaning() == "A gadget was made: its label and its parts."
    with pytest.raises(FrozenInstanceError):
        made().label = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Gadget.GadgetMade("G1", "red", [], None)  # type: ignore[misc]  # keyword-only: no field order to mix up


def test_recording_an_object_applies_it_and_keeps_its_data() -> None:
    gadget = Gadget("g1")
    gadget.record(made())
    gadget.record(Gadget.GadgetMoved(from_="shelf", to="box"))
    assert (gadget.label, gadget.place, gadget.version) == ("G1", "box", 2)
    assert [(e.type, e.schema_version, e.data) for e in gadget.pending] == [
        ("GadgetMade", 1, {"label": "G1", "colour": "red", "parts": [{"sku": "a", "count": 2}], "weight": None}),
        ("GadgetMoved", 2, {"from": "shelf", "to": "box", "tags": [], "extra": {}, "sizes": {}}),
    ]


def test_stored_events_fold_back_into_objects() -> None:
    gadget = Gadget("g1")
    gadget.record(made())
    gadget.record(Gadget.GadgetPolished(at="2024-01-01T00:00:00.000Z"))
    gadget.record(Gadget.GadgetMoved(from_="shelf", to="box"))
    events = stored(gadget)
    assert Gadget.from_events("g1", events).view() == {**gadget.view(), "version": 3}
    history = changes_by_event(Gadget, "g1", events)
    assert [entry["changes"] for entry in history] == [
        {"label": {"before": None, "after": "G1"}, "parts": {"before": [], "after": [{"sku": "a", "count": 2}]}},
        {},
        {"place": {"before": "shelf", "after": "box"}},
    ]


def test_from_data_reads_what_was_stored_tolerantly() -> None:
    event = Gadget.GadgetMade.from_data({"label": "G", "colour": "blue", "parts": [{"sku": "b"}], "unknown": 1})
    assert event == Gadget.GadgetMade(
        label="G", colour="blue", parts=[Gadget.Part(sku="b", count=None)], weight=None, note=None
    )
    assert event.data() == {"label": "G", "colour": "blue", "parts": [{"sku": "b", "count": None}], "weight": None}
    assert Gadget.GadgetMoved.from_data({"from": "box", "to": "shelf"}).tags == []
    noted = Gadget.GadgetMade(label="G", colour="red", parts=[], weight=1.5, note="hi")
    assert Gadget.GadgetMade.from_data(noted.data()) == noted


def test_from_data_refuses_a_record_without_a_field_that_cannot_be_none() -> None:
    """Such a record was never stored by this version (forged or corrupt): a projection parks it."""
    with pytest.raises(KeyError, match="GadgetMade has no 'colour'"):
        Gadget.GadgetMade.from_data({"label": "G", "parts": []})
    with pytest.raises(KeyError, match="Part has no 'sku'"):
        Gadget.GadgetMade.from_data({"label": "G", "colour": "red", "parts": [{"count": 2}]})


def test_an_event_type_of_another_aggregate_or_unknown_changes_nothing() -> None:
    gadget = Gadget("g1")
    gadget.apply_stored(
        RecordedEvent("e1", "shop", "g1", "gadget", 1, "GadgetMoved", 1, {"to": "box"}, T0, "a", "c", None)
    )  # v1 is not declared: not this aggregate's shape
    assert gadget.place == "shelf"


def test_the_json_schema_is_derived_from_the_hints_and_the_specs() -> None:
    assert json_schema(Gadget.GadgetMade) == {
        "type": "object",
        "required": ["label", "colour", "parts", "weight"],
        "additionalProperties": False,
        "properties": {
            "label": {"type": "string", "minLength": 1},
            "colour": {"enum": ["red", "blue"]},
            "parts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["sku", "count"],
                    "additionalProperties": False,
                    "properties": {
                        "sku": {"type": "string", "minLength": 1},
                        "count": {"type": ["integer", "null"], "minimum": 1},
                    },
                },
            },
            "weight": {"type": ["number", "null"], "minimum": 0, "description": "grams"},
            "note": {"type": "string", "maxLength": 10},
        },
    }
    moved = json_schema(Gadget.GadgetMoved)
    assert moved["required"] == ["from", "to"]
    assert moved["properties"] == {
        "from": {"enum": ["shelf", "box"]},
        "to": {"enum": ["shelf", "box"]},
        "tags": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "extra": {"type": "object"},
        "sizes": {"type": "object", "additionalProperties": {"type": "integer"}},
    }
    assert list(json_schema(Gadget.GadgetMade)["properties"]["weight"]) == ["type", "minimum", "description"]


def test_what_an_object_records_is_valid_under_its_derived_schema() -> None:
    gadget = Gadget("g1")
    gadget.record(
        Gadget.GadgetMade(label="G", colour="blue", parts=[Gadget.Part(sku="x", count=None)], weight=2.0, note="n")
    )
    gadget.record(Gadget.GadgetMoved(from_="shelf", to="box", tags=["t"], sizes={"w": 1}))
    for event in gadget.pending:
        kind = Gadget.event_types[(event.type, event.schema_version)]
        assert not list(Draft202012Validator(json_schema(kind)).iter_errors(event.data))
    assert list(Draft202012Validator(json_schema(Gadget.GadgetMade)).iter_errors({**made().data(), "note": None}))


def test_the_catalogue_entry_is_derived_from_the_class() -> None:
    entry = EventType.of(Gadget.GadgetMade, made().data())
    assert (entry.name, entry.version, entry.aggregate, entry.personal) == ("GadgetMade", 1, "gadget", ("label",))
    assert entry.description == "A gadget was made: its label and its parts."
    sealed = Catalogue("shop", "Shop", [entry]).wire_schema(entry)["properties"]["data"]["properties"]["label"]
    assert sealed["anyOf"][1] == {"type": "null"}
    assert personal_fields(Gadget) == {"GadgetMade": ("label",)}


def test_one_type_and_version_declared_twice_is_refused() -> None:
    class Other(Aggregate):
        aggregate_type = "other"

        class GadgetMade(DomainEvent):
            """A clash."""

    with pytest.raises(TypeError, match="declared twice"):
        registry(Gadget, Other)


def test_a_hint_without_a_schema_asks_for_one() -> None:
    class Odd(DomainEvent):
        """Odd."""

        when: datetime

    with pytest.raises(TypeError, match="spec"):
        json_schema(Odd)


def test_an_aggregate_not_converted_still_records_type_and_data() -> None:
    class Legacy(Aggregate):
        aggregate_type = "legacy"

        def __init__(self, aggregate_id: str) -> None:
            super().__init__(aggregate_id)
            self.seen: list[str] = []

        def apply(self, event: Any, data: dict[str, Any] | None = None) -> None:
            self.seen.append(event)

        def view(self) -> dict[str, Any]:
            return {}

    legacy = Legacy("l1")
    legacy.record("Happened", {"x": 1}, schema_version=2)
    assert legacy.seen == ["Happened"] and legacy.pending[0].data == {"x": 1}
    assert Legacy.from_events(
        "l1", [RecordedEvent("e", "s", "l1", "legacy", 1, "Old", 1, {}, T0, "a", "c", None)]
    ).seen == ["Old"]


def test_a_schema_may_come_from_a_function_called_when_derived() -> None:
    class Later(DomainEvent):
        """Takes another event's field schema."""

        label: str = spec(schema=lambda: json_schema(Gadget.GadgetMade)["properties"]["label"])

    assert json_schema(Later)["properties"]["label"] == {"type": "string", "minLength": 1}


def test_adopt_takes_the_fields_that_name_state_and_state_names_come_from_init() -> None:
    assert Gadget.state_names() == ("label", "parts", "place")
    gadget = Gadget("g1")
    gadget.adopt(made())  # label is state, colour and weight are not
    assert (gadget.label, gadget.parts, gadget.place) == ("G1", [Gadget.Part(sku="a", count=2)], "shelf")
    assert not hasattr(gadget, "colour")


def test_personal_keys_inside_a_field_are_dotted_paths() -> None:
    class Renamed(DomainEvent):
        """Some of a record's fields changed."""

        record_id: str
        changes: dict[str, Any] = spec(personal=("name", "email"))

    assert Renamed.personal_paths() == ("changes.name", "changes.email")
    assert Renamed(record_id="r", changes={"name": "N"}).data() == {"record_id": "r", "changes": {"name": "N"}}
