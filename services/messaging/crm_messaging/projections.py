"""Read models of the messaging service (no personal data in any of them).

`messages` (status per message, for lists, campaign stats, the 360 and, from each one's
`consent` proof, the consent-proof report), `templates`,
`campaigns`, `triggers`: one document per aggregate, folded by the domain's own `apply`
onto the aggregate restored from the document (`crmkit.projector.AggregateView`).
`contacts` is `crmkit.directory.LocalContacts` (locale, time zone, addresses) and
`trigger_reactor` (crm_messaging.triggers) reacts to other services' events.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING

from crm_messaging.domain import Campaign, Message, Template, Trigger
from crmkit.events import epoch_ms
from crmkit.projector import AggregateView

PRIVATE = ("subject", "body", "variables", "address")


class MessagesView(AggregateView):
    kind = Message

    def document(self, aggregate: Any) -> dict[str, Any]:
        view = {k: v for k, v in aggregate.view().items() if k not in PRIVATE}
        return {
            **view,
            "queued_ms": epoch_ms(aggregate.created_at) if aggregate.created_at else 0,
            "consent": aggregate.consent,
        }  # the proof (nothing personal); restored with the aggregate

    def ensure_indexes(self) -> None:
        self.collection.create_index([("contact_id", ASCENDING), ("queued_ms", DESCENDING)])
        self.collection.create_index([("campaign_id", ASCENDING), ("status", ASCENDING)])
        self.collection.create_index([("consent.checked_at", ASCENDING)], sparse=True)


class TemplatesView(AggregateView):
    kind = Template

    def ensure_indexes(self) -> None:
        self.collection.create_index([("channel", ASCENDING)])


class CampaignsView(AggregateView):
    kind = Campaign

    def ensure_indexes(self) -> None:
        self.collection.create_index([("status", ASCENDING)])


class TriggersView(AggregateView):
    kind = Trigger

    def ensure_indexes(self) -> None:
        self.collection.create_index([("event_type", ASCENDING)])
