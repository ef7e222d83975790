"""Aggregates fold their events; history is derived by folding one event at a time (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crmkit.aggregate import Aggregate, changes_by_event
from crmkit.errors import Conflict
from crmkit.events import NewEvent, RecordedEvent

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class Widget(Aggregate):
    """A tiny aggregate: a name, a size and a set of tags."""

    aggregate_type = "Widget"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name: str | None = None
        self.size = 0
        self.tags: list[str] = []

    def apply(self, event_type: str, data: dict[str, Any]) -> None:
        if event_type == "WidgetCreated":
            self.name, self.size = data["name"], data.get("size", 1)
        elif event_type == "WidgetRenamed":
            self.name = data["name"]
        elif event_type == "WidgetResized":
            self.size += data["by"]
        elif event_type == "WidgetTagged":
            self.tags = sorted({*self.tags, data["tag"]})
        elif event_type == "WidgetUntagged":
            self.tags = [t for t in self.tags if t != data["tag"]]

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "name": self.name,
            "size": self.size,
            "tags": self.tags,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    # commands
    def create(self, name: str) -> None:
        if self.version:
            raise Conflict("already exists")
        self.record("WidgetCreated", {"name": name, "size": 1})

    def rename(self, name: str) -> None:
        if name != self.name:
            self.record("WidgetRenamed", {"name": name})

    def resize(self, by: int) -> None:
        self.record("WidgetResized", {"by": by})

    def tag(self, tag: str) -> None:
        if tag not in self.tags:
            self.record("WidgetTagged", {"tag": tag})


def stored(stream: str, changes: list[NewEvent], start: int = 1) -> list[RecordedEvent]:
    return [
        RecordedEvent(
            id=f"e{start + i}",
            service="widgets",
            stream_id=stream,
            aggregate_type="Widget",
            version=start + i,
            type=e.type,
            schema_version=e.schema_version,
            data=e.data,
            time=T0 + timedelta(minutes=start + i),
            actor="user:alice",
            correlation_id=f"c{start + i}",
            causation_id=None,
        )
        for i, e in enumerate(changes)
    ]


LATER = [
    NewEvent("WidgetRenamed", {"name": "Gear"}),
    NewEvent("WidgetTagged", {"tag": "blue"}),
    NewEvent("WidgetResized", {"by": 4}),
]
HISTORY = [NewEvent("WidgetCreated", {"name": "Cog", "size": 2}), *LATER]


class TestAggregate:
    def test_from_events_folds_the_stream(self) -> None:
        widget = Widget.from_events("w1", stored("w1", HISTORY))
        assert (widget.name, widget.size, widget.tags, widget.version) == ("Gear", 6, ["blue"], 4)
        assert widget.created_at == T0 + timedelta(minutes=1)
        assert widget.updated_at == T0 + timedelta(minutes=4)
        assert widget.pending == [] and widget.stored_version == 4

    def test_version_comes_from_the_stream(self) -> None:
        later_part = stored("w1", LATER, start=7)
        assert Widget.from_events("w1", later_part).version == 9

    def test_record_applies_at_once_and_keeps_pending(self) -> None:
        widget = Widget.from_events("w1", stored("w1", HISTORY[:1]))
        widget.rename("Gear")
        widget.rename("Gear")  # the second command sees the first one's effect: no event
        widget.tag("red")
        assert widget.name == "Gear" and widget.tags == ["red"]
        assert widget.version == 3 and widget.stored_version == 1
        assert widget.pending == [NewEvent("WidgetRenamed", {"name": "Gear"}), NewEvent("WidgetTagged", {"tag": "red"})]

    def test_empty_stream(self) -> None:
        widget = Widget.from_events("w1", [])
        assert widget.version == 0 and widget.created_at is None and widget.name is None


class TestChangesByEvent:
    def test_before_and_after_of_every_moved_field(self) -> None:
        entries = changes_by_event(Widget, "w1", stored("w1", HISTORY))
        assert [e["version"] for e in entries] == [1, 2, 3, 4]
        assert [e["type"] for e in entries] == ["WidgetCreated", "WidgetRenamed", "WidgetTagged", "WidgetResized"]
        assert entries[0]["changes"] == {
            "name": {"before": None, "after": "Cog"},
            "size": {"before": 0, "after": 2},
        }
        assert entries[1]["changes"] == {"name": {"before": "Cog", "after": "Gear"}}
        assert entries[2]["changes"] == {"tags": {"before": [], "after": ["blue"]}}
        assert entries[3]["changes"] == {"size": {"before": 2, "after": 6}}

    def test_carries_who_when_and_which_event(self) -> None:
        first = changes_by_event(Widget, "w1", stored("w1", HISTORY))[0]
        assert first["event_id"] == "e1" and first["actor"] == "user:alice" and first["correlation_id"] == "c1"
        assert first["time"] == T0 + timedelta(minutes=1)

    def test_bookkeeping_fields_are_not_changes(self) -> None:
        entries = changes_by_event(Widget, "w1", stored("w1", HISTORY))
        assert all({"version", "created_at", "updated_at"}.isdisjoint(e["changes"]) for e in entries)

    def test_an_event_that_moves_nothing_has_no_changes(self) -> None:
        tagged = NewEvent("WidgetTagged", {"tag": "x"})
        events = stored("w1", [HISTORY[0], tagged, tagged])
        assert changes_by_event(Widget, "w1", events)[2]["changes"] == {}


EVENTS = st.one_of(
    st.builds(lambda n: NewEvent("WidgetRenamed", {"name": n}), st.text(max_size=5)),
    st.builds(lambda b: NewEvent("WidgetResized", {"by": b}), st.integers(-5, 5)),
    st.builds(lambda t: NewEvent("WidgetTagged", {"tag": t}), st.sampled_from("abcd")),
    st.builds(lambda t: NewEvent("WidgetUntagged", {"tag": t}), st.sampled_from("abcd")),
)
STREAMS = st.lists(EVENTS, max_size=25).map(lambda rest: [NewEvent("WidgetCreated", {"name": "w"}), *rest])


def state(widget: Widget) -> dict[str, Any]:
    return {k: v for k, v in widget.view().items() if k not in ("created_at", "updated_at")}


# No deadline: a loaded CI machine must not turn a slow example into a failure.
PROPERTY = settings(deadline=None, max_examples=60)


@PROPERTY
@given(STREAMS, st.data())
def test_folding_one_at_a_time_equals_folding_all(changes: list[NewEvent], data: st.DataObject) -> None:
    events = stored("w1", changes)
    whole = Widget.from_events("w1", events)
    split = data.draw(st.integers(0, len(events)))
    stepwise = Widget.from_events("w1", events[:split])
    for event in events[split:]:
        stepwise.apply(event.type, event.data)
        stepwise.version = event.version
    assert state(stepwise) == state(whole)
    running = Widget("w1")
    for count, event in enumerate(events, start=1):  # every intermediate state matches its prefix's fold
        running.apply(event.type, event.data)
        running.version = event.version
        assert state(running) == state(Widget.from_events("w1", events[:count]))


@PROPERTY
@given(STREAMS)
def test_replaying_what_commands_recorded_gives_the_same_state(changes: list[NewEvent]) -> None:
    live = Widget("w1")
    for change in changes:
        live.record(change.type, change.data)
    replayed = Widget.from_events("w1", stored("w1", live.pending))
    assert state(replayed) == state(live)


@PROPERTY
@given(STREAMS)
def test_applying_the_history_changes_rebuilds_the_view(changes: list[NewEvent]) -> None:
    events = stored("w1", changes)
    view = state(Widget("w1"))
    for entry in changes_by_event(Widget, "w1", events):
        for name, change in entry["changes"].items():
            assert view[name] == change["before"]
            view[name] = change["after"]
        view["version"] = entry["version"]
    assert view == state(Widget.from_events("w1", events))


@PROPERTY
@given(STREAMS, st.data())
def test_the_default_restore_continues_a_fold_like_the_whole_stream(
    changes: list[NewEvent], data: st.DataObject
) -> None:
    events = stored("w1", changes)
    split = data.draw(st.integers(0, len(events)))
    resumed = Widget.restore(Widget.from_events("w1", events[:split]).view())  # what a read model holds
    resumed.catch_up(events[split:])
    assert resumed.view() == Widget.from_events("w1", events).view()
