"""What an event store promises, whichever one serves it.

`crmkit.eventstore.EventStore` (MongoDB, the one services run on) and
`crmkit.memstore.InMemoryEventStore` (tests without servers) both keep this contract,
which the contract tests in libs/crmkit/tests/test_crmkit_store_contract.py check on
each: an append is one commit, stored whole or not at all, at the version it was decided
on, or `ConcurrencyError`. `crmkit.repository.Repository` and the use cases need nothing
more. Pure: importing this module pulls in no driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from crmkit.events import Metadata, NewEvent, RecordedEvent


class ConcurrencyError(Exception):
    """Someone else appended to the stream since it was loaded."""

    def __init__(self, stream_id: str, expected_version: int) -> None:
        super().__init__(f"stream {stream_id} moved past version {expected_version}")
        self.stream_id = stream_id
        self.expected_version = expected_version


@dataclass(frozen=True)
class StreamAppend:
    """One stream's part of a bulk append: its new events at the version they were decided on."""

    stream_id: str
    aggregate_type: str
    expected_version: int
    events: Sequence[NewEvent]
    meta: Metadata


class Store(Protocol):
    """The part of an event store the repository and the use cases call."""

    service: str

    def append(
        self, stream_id: str, aggregate_type: str, expected_version: int, events: Sequence[NewEvent], meta: Metadata
    ) -> list[RecordedEvent]:
        """Store `events` as one commit at versions expected_version+1.., or raise ConcurrencyError."""
        ...

    def append_streams(self, appends: Sequence[StreamAppend]) -> tuple[list[RecordedEvent], set[str]]:
        """A commit per stream; returns what was stored and the streams that had moved on."""
        ...

    def load(self, stream_id: str, *, after_version: int = 0, as_of: datetime | None = None) -> list[RecordedEvent]:
        """The stream's events in version order (those after `after_version`, recorded by `as_of`)."""
        ...

    def load_many(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        """Several streams at once; unknown ids are left out."""
        ...

    def streams_referring(self, ids: Sequence[str], aggregate_types: Sequence[str]) -> set[tuple[str, str]]:
        """(stream, aggregate type) of the streams of these types with an event naming one of `ids`."""
        ...
