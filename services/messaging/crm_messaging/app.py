"""Wiring: how the messaging service plugs into the chassis (its `ServiceSpec`)."""

from __future__ import annotations

from crm_messaging import api, grpc_api, reactions
from crm_messaging.catalogue import EVENTS
from crm_messaging.commands import MessageDesk
from crm_messaging.config import current, production_problems
from crm_messaging.dispatcher import Dispatcher
from crm_messaging.domain import PERSONAL_DATA
from crm_messaging.suppressions import PERSONAL as SUPPRESSION_PERSONAL
from crm_messaging.triggers import install_defaults
from crmkit.config import Ports
from crmkit.runtime import Runtime
from crmkit.service import ExtraProcess, ServiceSpec


def prepare(runtime: Runtime) -> None:
    runtime.store.ensure_indexes()
    desk = MessageDesk(runtime)
    desk.ensure_indexes()
    install_defaults(desk)


def projections(runtime: Runtime) -> list:
    desk = MessageDesk(runtime)
    return [*desk.read_models(), *reactions.worker_projections(desk)]  # reactions.py: other services' events


def _serve_smtp_sink(service: str) -> None:
    """Imported only when the sink runs: the images leave its aiosmtpd out (production relays mail)."""
    from crm_messaging import sinks

    sinks.serve(service)


def _local_smtp_sink() -> bool:
    config = current()
    return config.email_provider == "smtp" and config.smtp_sink


SERVICE = ServiceSpec(
    name="messaging",
    title="CRM messaging",
    description="Every outbound message: templates, consent-checked sends, campaigns, triggers, delivery tracking.",
    ports=Ports(http=8004, grpc=50054, metrics=9131),
    blueprints=lambda runtime: [api.blueprint(MessageDesk(runtime))],
    servicers=lambda server, runtime: grpc_api.register(server, MessageDesk(runtime)),
    projections=projections,
    prepare=prepare,
    jobs=lambda runtime: [Dispatcher(MessageDesk(runtime)).run],
    personal_fields={**PERSONAL_DATA, "AddressSuppressed": SUPPRESSION_PERSONAL},
    events=EVENTS,
    references=("contact_id", "to"),  # a contact's messages at merge and unmerge (MessageDesk._messages_of)
    extra_processes={"smtp-sink": ExtraProcess(run=_serve_smtp_sink, enabled=_local_smtp_sink)},
    production_checks=production_problems,
    configure=current,  # a setting that cannot work stops every process at start, naming each
)
