"""Wiring: how the sales service plugs into the chassis (its `ServiceSpec`)."""

from __future__ import annotations

from crm_sales import api, grpc_api, projections, reassign_api, reports, settings
from crm_sales.catalogue import EVENTS
from crm_sales.commands import SalesBook
from crm_sales.domain import PERSONAL_DATA
from crmkit.config import Ports
from crmkit.runtime import Runtime
from crmkit.service import ServiceSpec


def all_projections(book: SalesBook) -> list:
    runtime = book.runtime
    return [*projections.views(runtime.db, runtime.store, runtime.settings.topic), book.local]


def prepare(runtime: Runtime) -> None:
    runtime.store.ensure_indexes()
    for view in projections.views(runtime.db, runtime.store, runtime.settings.topic):
        view.ensure_indexes()
    book = SalesBook(runtime)
    book.local.ensure_indexes()
    book.ensure_indexes()
    book.ensure_default_pipeline()
    book.directory.close()


SERVICE = ServiceSpec(
    name="sales",
    title="CRM sales",
    description="Products, pipelines, deals, activities, quotes, forecast and customer value.",
    ports=Ports(http=8002, grpc=50052, metrics=9111),
    blueprints=lambda runtime: [api.blueprint(SalesBook(runtime)), reassign_api.blueprint(SalesBook(runtime))],
    servicers=lambda server, runtime: grpc_api.register(server, SalesBook(runtime)),
    projections=lambda runtime: all_projections(SalesBook(runtime)),
    prepare=prepare,
    events=EVENTS,
    personal_fields=PERSONAL_DATA,
    references=("contact_id", "to", "deal_id"),  # a contact's records at erasure and merge (SalesBook._records_of)
    configure=settings.current,  # a setting that cannot work stops every process at start, naming each
    jobs=lambda runtime: [reports.value_job(SalesBook(runtime)), reports.expiry_job(SalesBook(runtime))],
)
