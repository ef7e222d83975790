"""Aggregates decide: the pure core every service's domain module builds on.

An aggregate's state is the fold of its events. Commands are methods that check the
rules against the current state and `record` new events, which are applied at once, so
a second command in the same unit of work sees the first one's effect. Nothing here does
I/O, and this module imports only the standard library and pure crmkit modules
(tests/architecture/test_pure_domain.py holds every domain to that); loading and saving
is `crmkit.repository.Repository`, the edge between domain and store.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from crmkit.domainevents import DomainEvent
from crmkit.events import NewEvent, RecordedEvent

BASE_STATE = frozenset({"id", "version", "pending", "created_at", "updated_at"})


class Aggregate:
    """Base for event-sourced aggregates: subclasses implement `apply`.

    Typed events (crmkit.domainevents) are declared inside the aggregate's class body; when the
    class is made each gets the aggregate's type and joins `event_types`, (name, version) →
    class, from which stored events are turned back into objects as they are folded. Such an
    aggregate's `apply` takes the event object (one `functools.singledispatchmethod`, a handler
    per class); an aggregate not converted yet still records and applies `(type, data)`.
    """

    aggregate_type: ClassVar[str]
    event_types: ClassVar[dict[tuple[str, int], type[DomainEvent]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.event_types = dict(cls.event_types)  # inherited ones, and this class's own
        for nested in vars(cls).values():
            if isinstance(nested, type) and issubclass(nested, DomainEvent):
                nested.aggregate_type = cls.aggregate_type
                cls.event_types[(nested.wire_name, nested.schema_version)] = nested

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self.version = 0  # events applied, stored or pending
        self.pending: list[NewEvent] = []
        self.created_at: datetime | None = None  # times of the first and the last stored event
        self.updated_at: datetime | None = None

    def apply(self, event: Any, data: dict[str, Any] | None = None) -> None:
        """Change state for one event (an object; `(type, data)` before the aggregate has typed
        events). Must not fail: the event already happened."""
        raise NotImplementedError

    def view(self) -> dict[str, Any]:
        """The state as clients see it (also what history compares)."""
        raise NotImplementedError

    def record(self, event: DomainEvent | str, data: dict[str, Any] | None = None, schema_version: int = 1) -> None:
        """Apply a decided event at once and keep it to be stored: an event object, or (while a
        service is not converted) its type and data."""
        if isinstance(event, DomainEvent):
            pending = NewEvent(event.wire_name, event.data(), event.schema_version)
            self.apply(event)
        else:
            pending = NewEvent(event, data or {}, schema_version)
            self.apply(event, pending.data)
        self.version += 1
        self.pending.append(pending)

    def apply_stored(self, event: RecordedEvent | NewEvent) -> None:
        """Apply a stored (upcast) event, or a recorded one again: as its object when the aggregate
        declares its type; a type it does not declare changes nothing. An aggregate without typed
        events gets `(type, data)`."""
        if not self.event_types:
            self.apply(event.type, event.data)
        elif (kind := self.event_types.get((event.type, event.schema_version))) is not None:
            self.apply(kind.from_data(event.data))

    @classmethod
    def state_names(cls) -> tuple[str, ...]:
        """The attributes `__init__` gives a new aggregate beyond the base's: its state, in order
        (what a snapshot keeps and `restore` sets back, without listing them again)."""
        return _state_names(cls)

    def adopt(self, event: DomainEvent) -> None:
        """Take the value of every field of `event` that names a state attribute (an event that
        states facts as they are now: a ticket opened with its subject, channel, ...)."""
        state = _state_names(type(self))
        for name in event.field_names():
            if name in state:
                setattr(self, name, getattr(event, name))

    @property
    def stored_version(self) -> int:
        return self.version - len(self.pending)

    @classmethod
    def from_events(cls, aggregate_id: str, events: Sequence[RecordedEvent]) -> Any:
        aggregate = cls(aggregate_id)
        aggregate.catch_up(events)
        return aggregate

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Any:
        """The aggregate back from its `view()`, so a projection can continue a fold.

        By default every key of the view that names an attribute is set back (version and
        times included); what the view leaves out keeps its default. Aggregates whose view
        is shaped differently from their state override this."""
        aggregate = cls(view["id"])
        for name, value in view.items():
            if name != "id" and hasattr(aggregate, name):
                setattr(aggregate, name, value)
        return aggregate

    def catch_up(self, events: Sequence[RecordedEvent]) -> None:
        """Apply stored events; version and times follow them."""
        for event in events:
            self.apply_stored(event)
            self.version = event.version
            self.created_at = self.created_at or event.time
            self.updated_at = event.time


_STATE: dict[type[Aggregate], tuple[str, ...]] = {}


def _state_names(kind: type[Aggregate]) -> tuple[str, ...]:
    if kind not in _STATE:
        _STATE[kind] = tuple(name for name in vars(kind("")) if name not in BASE_STATE)
    return _STATE[kind]


def changes_by_event(kind: type[Aggregate], aggregate_id: str, events: Sequence[RecordedEvent]) -> list[dict[str, Any]]:
    """Who changed what and when: each event with the before/after of every field it moved.

    Derived by folding one event at a time and comparing views, so events never have
    to carry "before" values (which would copy personal data into more places).
    """
    aggregate = kind(aggregate_id)
    before = aggregate.view()
    entries = []
    for event in events:
        aggregate.apply_stored(event)
        aggregate.version = event.version
        after = aggregate.view()
        changed = {
            name: {"before": before.get(name), "after": value}
            for name, value in after.items()
            if name not in ("version", "created_at", "updated_at") and before.get(name) != value
        }
        entries.append(
            {
                "version": event.version,
                "event_id": event.id,
                "type": event.type,
                "time": event.time,
                "actor": event.actor,
                "correlation_id": event.correlation_id,
                "changes": changed,
            }
        )
        before = after
    return entries
