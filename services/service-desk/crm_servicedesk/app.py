"""Wiring: how the service desk plugs into the chassis (its `ServiceSpec`)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from crm_servicedesk import api, grpc_api, projections, survey_api
from crm_servicedesk.catalogue import EVENTS
from crm_servicedesk.commands import TicketDesk
from crm_servicedesk.domain import PERSONAL_DATA
from crmkit.config import Ports
from crmkit.projector import Projection
from crmkit.runtime import Runtime
from crmkit.service import ServiceSpec

log = logging.getLogger(__name__)


def prepare(runtime: Runtime) -> None:
    runtime.store.ensure_indexes()
    projections.tickets_view(runtime.db, runtime.store, runtime.settings.topic).ensure_indexes()
    TicketDesk(runtime).ensure_indexes()


def all_projections(runtime: Runtime) -> list[Projection]:
    desk = TicketDesk(runtime)
    return [
        projections.tickets_view(runtime.db, runtime.store, runtime.settings.topic),
        projections.policies_view(runtime.db, runtime.store, runtime.settings.topic),
        desk.tiers,
        projections.local_contacts(runtime.db, desk.directory, on_merged=desk.repoint_contact,
                                   on_erased=desk.erase_contact),
    ]


def sla_sweeper(runtime: Runtime) -> Callable[[threading.Event], None]:
    """The worker's breach detector: sweep every CRM_SERVICEDESK_SWEEP_SECONDS (default 5)."""
    interval = float(os.environ.get("CRM_SERVICEDESK_SWEEP_SECONDS", "5"))
    desk = TicketDesk(runtime)

    def sla_sweep(stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                outcome = desk.sweep()
                desk.record_sweep(outcome, time.perf_counter() - started)
            except Exception:
                log.exception("SLA sweep failed; trying again")
            stop.wait(interval)

    return sla_sweep


SERVICE = ServiceSpec(
    name="service-desk",
    title="CRM service desk",
    description="Tickets from every channel, SLA policies on business hours, satisfaction and reports.",
    ports=Ports(http=8003, grpc=50053, metrics=9121),
    blueprints=lambda runtime: [api.blueprint(TicketDesk(runtime)), survey_api.blueprint(TicketDesk(runtime))],
    servicers=lambda server, runtime: grpc_api.register(server, TicketDesk(runtime)),
    projections=all_projections,
    prepare=prepare,
    jobs=lambda runtime: [sla_sweeper(runtime)],
    personal_fields=PERSONAL_DATA,
    references=("contact_id",),
    events=EVENTS,
)
