"""Segment use cases (define, change, list, read members) and the `segments` read model.

The edges (segments.api, grpc_api) call `SegmentBook`, the use cases (`SegmentUseCases`, on
any `crmkit.store.Store` and `views.SegmentViews`, so the use-case tests run them with no
server) wired to MongoDB; the rules themselves live in crm_contacts.segments.domain.
Members are never stored: each read compiles the segment's rules into a filter over the
`contacts` read model, so membership follows every change to a contact as soon as the
projection has applied it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from crm_contacts.records import projections
from crm_contacts.segments.domain import Segment, compile_filter
from crm_contacts.segments.views import MongoSegmentViews, SegmentViews
from crmkit import clock
from crmkit.aggregate import changes_by_event
from crmkit.events import Metadata, RecordedEvent, new_id
from crmkit.eventstore import EventStore
from crmkit.projector import AggregateView
from crmkit.repository import Repository
from crmkit.runtime import Runtime
from crmkit.store import Store

DEFAULT_STREAM_PAGE = 500
MAX_STREAM_PAGE = 1000


class SegmentUseCases:
    """The segment use cases on any event store and any `SegmentViews`; `publish` is handed
    what each save stored."""

    def __init__(self, store: Store, views: SegmentViews, publish: Callable[[list[RecordedEvent]], None]) -> None:
        self.views = views
        self.segments: Repository[Segment] = Repository(store, Segment, publish)

    def define(self, fields: dict[str, Any], meta: Metadata) -> Segment:
        segment = Segment.define(new_id(), fields["name"], fields.get("description"), fields["rules"])
        self.segments.save(segment, meta)
        return segment

    def update(self, segment_id: str, fields: dict[str, Any], meta: Metadata, if_match: int | None) -> Segment:
        return self.segments.change(segment_id, lambda s: s.update(fields), meta, if_match)

    def segment(self, segment_id: str, as_of: datetime | None = None) -> Segment:
        """A segment as it is (or was at `as_of`: NotFound before it existed)."""
        return self.segments.get(segment_id, as_of=as_of)

    def history(self, segment_id: str) -> list[dict[str, Any]]:
        return changes_by_event(Segment, segment_id, self.segments.history(segment_id))

    def list_segments(self, filters: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        docs, cursor = self.views.segment_page(filters["limit"], filters.get("cursor"))
        return [public(doc) for doc in docs], cursor

    def members_filter(self, segment_id: str, now: datetime | None = None) -> dict[str, Any]:
        """The segment's rules as a filter over the `contacts` read model, evaluated at `now`."""
        rules = self.segment(segment_id).parsed_rules()
        return compile_filter(rules, now or clock.now(), self._company_ids)

    def members(self, segment_id: str, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        docs, next_cursor = self.views.contact_page(self.members_filter(segment_id), limit, cursor)
        return [projections.public(doc) for doc in docs], next_cursor

    def member_ids(self, segment_id: str) -> set[str]:
        """Every member's id at once: the insights reports narrow their facts to a segment by it.
        Raises NotFound for an unknown id."""
        return set(self.views.contact_ids(self.members_filter(segment_id)))

    def member_pages(self, segment_id: str, page_size: int = DEFAULT_STREAM_PAGE) -> Iterator[list[dict[str, Any]]]:
        """Every member, a page at a time (keyset paging: memory stays at one page).

        The filter is compiled once, so relative times ("-30d") mean the same thing
        for the whole walk. Raises NotFound before yielding anything for an unknown id.
        """
        query = self.members_filter(segment_id)
        cursor: str | None = None
        while True:
            docs, cursor = self.views.contact_page(query, page_size, cursor)
            if docs:
                yield [projections.public(doc) for doc in docs]
            if cursor is None:
                return

    def _company_ids(self, query: dict[str, Any]) -> list[str]:
        return self.views.company_ids(query)


class SegmentBook(SegmentUseCases):
    """The segment use cases on a process's runtime (`MongoSegmentViews`); the edges (REST,
    gRPC, insights) read through the use cases, never a collection."""

    def __init__(self, runtime: Runtime) -> None:
        self.mongo_views = MongoSegmentViews(runtime.db)
        super().__init__(runtime.store, self.mongo_views, runtime.publish)


class SegmentsView(AggregateView):
    """The `segments` read model: one document per segment (its view), for listing."""

    kind = Segment

    def ensure_indexes(self) -> None:
        self.collection.create_index([("name", ASCENDING)])


def public(document: dict[str, Any]) -> dict[str, Any]:
    view = {k: v for k, v in document.items() if k != "_id"}
    return {"id": document["_id"], **view}


def segment_projections(db: Database, store: EventStore, topic: str) -> list[SegmentsView]:
    return [SegmentsView("segments", db["segments"], store, topic)]
