"""Read models of the messaging service (no personal data in any of them).

`messages` (status per message, for lists, campaign stats and the 360), `templates`,
`campaigns`, `triggers`: one document per aggregate, folded by the domain's own `apply`.
`contacts` is `crmkit.directory.LocalContacts` (locale, time zone, addresses) and
`trigger_reactor` (crm_messaging.triggers) reacts to other services' events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING

from crm_messaging.domain import Campaign, Message, Template, Trigger
from crmkit.aggregate import Aggregate
from crmkit.events import RecordedEvent
from crmkit.projector import StreamProjection

PRIVATE = ("subject", "body", "variables", "address")


class _Folded(StreamProjection):
    kind: type[Aggregate]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aggregate_types = (self.kind.aggregate_type,)

    def fold(self, document: dict[str, Any] | None, events: Sequence[RecordedEvent]) -> dict[str, Any]:
        # folding from the whole stream keeps the fold exactly the write side's
        aggregate = self.kind.from_events(events[0].stream_id, self.store.load(events[0].stream_id))
        return self.document(aggregate)

    def document(self, aggregate: Any) -> dict[str, Any]:
        return aggregate.view()


class MessagesView(_Folded):
    kind = Message

    def document(self, aggregate: Any) -> dict[str, Any]:
        view = {k: v for k, v in aggregate.view().items() if k not in PRIVATE}
        return {**view, "queued_ms": int(aggregate.created_at.timestamp() * 1000) if aggregate.created_at else 0}

    def ensure_indexes(self) -> None:
        self.collection.create_index([("contact_id", ASCENDING), ("queued_ms", DESCENDING)])
        self.collection.create_index([("campaign_id", ASCENDING), ("status", ASCENDING)])


class TemplatesView(_Folded):
    kind = Template

    def ensure_indexes(self) -> None:
        self.collection.create_index([("channel", ASCENDING)])


class CampaignsView(_Folded):
    kind = Campaign

    def ensure_indexes(self) -> None:
        self.collection.create_index([("status", ASCENDING)])


class TriggersView(_Folded):
    kind = Trigger

    def ensure_indexes(self) -> None:
        self.collection.create_index([("event_type", ASCENDING)])
