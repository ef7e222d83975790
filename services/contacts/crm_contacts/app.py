"""Wiring: how the contacts service plugs into the chassis (its `ServiceSpec`)."""

from __future__ import annotations

from crm_contacts import grpc_api, reactions, settings
from crm_contacts.catalogue import EVENTS, UPCASTERS
from crm_contacts.imports import api as imports_api
from crm_contacts.imports import jobs as imports
from crm_contacts.insights import api as insights_api
from crm_contacts.insights.projections import insight_projections
from crm_contacts.records import (
    api,
    confirm_api,
    export_api,
    freshness,
    freshness_api,
    lifecycle,
    projections,
    unmerge_api,
)
from crm_contacts.records.commands import ContactBook
from crm_contacts.records.customer360 import Neighbours
from crm_contacts.records.domain import PERSONAL_DATA
from crm_contacts.segments import api as segments_api
from crm_contacts.segments.commands import SegmentBook, segment_projections
from crmkit.config import Ports
from crmkit.runtime import Runtime
from crmkit.service import ServiceSpec


def prepare(runtime: Runtime) -> None:
    runtime.store.ensure_indexes()
    for projection in projections.projections(runtime.db, runtime.store, runtime.settings.topic):
        projection.ensure_indexes()
    for segment_projection in segment_projections(runtime.db, runtime.store, runtime.settings.topic):
        segment_projection.ensure_indexes()
    for insight_projection in insight_projections(runtime.db, runtime.store, runtime.settings.topic):
        insight_projection.ensure_indexes()
    imports.ImportJobs(runtime).ensure_indexes()


SERVICE = ServiceSpec(
    name="contacts",
    title="CRM contacts",
    description="People and companies: the single source of who each customer is.",
    ports=Ports(http=8001, grpc=50051, metrics=9101),
    blueprints=lambda runtime: [
        api.blueprint(ContactBook(runtime), Neighbours()),
        segments_api.blueprint(SegmentBook(runtime)),
        imports_api.blueprint(runtime),
        insights_api.blueprint(runtime, SegmentBook(runtime)),
        export_api.blueprint(ContactBook(runtime), export_api.RecordKeepers()),
        unmerge_api.blueprint(ContactBook(runtime)),
        freshness_api.blueprint(ContactBook(runtime)),
        confirm_api.blueprint(ContactBook(runtime)),
    ],
    servicers=lambda server, runtime: grpc_api.register(server, ContactBook(runtime), SegmentBook(runtime)),
    projections=lambda runtime: [
        *projections.projections(runtime.db, runtime.store, runtime.settings.topic),
        *segment_projections(runtime.db, runtime.store, runtime.settings.topic),
        *insight_projections(runtime.db, runtime.store, runtime.settings.topic),
        *reactions.table(runtime).projections(),
    ],  # reactions.py: other services' events
    prepare=prepare,
    jobs=lambda runtime: [
        imports.ImportRunner(runtime).run,
        lifecycle.timers(runtime).job(runtime.settings.service),
        freshness.timer(runtime).job(runtime.settings.service),
    ],
    personal_fields=PERSONAL_DATA,
    configure=settings.current,  # a setting that cannot work stops every process at start, naming each
    events=EVENTS,
    upcasters=UPCASTERS,
)
