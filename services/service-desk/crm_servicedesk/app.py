"""Wiring: how the service desk plugs into the chassis (its `ServiceSpec`)."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, date, datetime

from crm_servicedesk import (
    api,
    grpc_api,
    inbound_api,
    projections,
    reactions,
    servqual_api,
    servqual_desk,
    settings,
    sla_api,
    survey_api,
)
from crm_servicedesk.catalogue import EVENTS, UPCASTERS
from crm_servicedesk.commands import TicketDesk
from crm_servicedesk.domain import PERSONAL_DATA
from crm_servicedesk.recompute import Recompute
from crmkit import logs
from crmkit.config import Ports
from crmkit.periodic import PeriodicJob
from crmkit.progress import Progress
from crmkit.projector import Projection
from crmkit.runtime import Runtime
from crmkit.service import ExtraProcess, ServiceCommand, ServiceSpec

log = logging.getLogger(__name__)


def prepare(runtime: Runtime) -> None:
    runtime.store.ensure_indexes()
    projections.tickets_view(runtime.db, runtime.store, runtime.settings.topic).ensure_indexes()
    TicketDesk(runtime).ensure_indexes()
    servqual_desk.ServqualDesk(TicketDesk(runtime)).ensure_indexes()


def all_projections(runtime: Runtime) -> list[Projection]:
    """The service's own read models, then its reactions to other services (reactions.py)."""
    return [
        projections.tickets_view(runtime.db, runtime.store, runtime.settings.topic),
        projections.policies_view(runtime.db, runtime.store, runtime.settings.topic),
        servqual_desk.surveys_view(runtime.db, runtime.store, runtime.settings.topic),
        *reactions.worker_projections(runtime),
    ]


def sla_sweeper(runtime: Runtime) -> PeriodicJob:
    """The worker's breach detector: sweep every CRM_SERVICEDESK_SWEEP_SECONDS (default 5)."""
    desk = TicketDesk(runtime)
    return PeriodicJob(
        runtime.settings.service, "sla_sweep", desk.sweep, settings.current().sweep_seconds, report=desk.record_sweep
    )


def sla_recomputer(runtime: Runtime) -> PeriodicJob:
    """The worker's recompute after a policy change: checks every CRM_SERVICEDESK_RECOMPUTE_SECONDS
    (default 10) whether a policy's version moved since its last finished run, and if so re-folds
    every open ticket's clocks (`recompute.Recompute`, batched and resumable)."""
    recompute = Recompute(TicketDesk(runtime))

    def sla_recompute() -> None:
        marks = recompute.policy_marks()
        if not recompute.up_to_date("worker", marks):
            outcome = recompute.run("worker", marks=marks)
            log.info("SLA clocks recomputed after a policy change", extra=outcome)

    return PeriodicJob(runtime.settings.service, "sla_recompute", sla_recompute, settings.current().recompute_seconds)


def _day(text: str) -> datetime:
    """A `--from`/`--to` value: a date (midnight UTC) or an RFC 3339 time with its offset."""
    try:
        moment = (
            datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
            if len(text) == 10
            else datetime.fromisoformat(text)
        )
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (2026-03-01) or a time with an offset: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"a time needs its offset (e.g. Z): {text!r}")
    return moment


def _sla_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["recompute"],
        help="recompute: re-fold SLA clocks against the policy versions in force at each moment",
    )
    parser.add_argument(
        "--from",
        dest="since",
        type=_day,
        metavar="DATE",
        help="also the solved and closed tickets opened since DATE (2026-03-01, or a time with "
        "its offset); without it only the open ones",
    )
    parser.add_argument(
        "--to", dest="until", type=_day, metavar="DATE", help="with --from: only tickets opened before DATE"
    )


def sla_command(args: argparse.Namespace) -> int:
    """`crm sla recompute`: what the worker does after a policy change, on request and for closed tickets too;
    an interrupted run resumes when started again with the same arguments."""
    if args.until is not None and (args.since is None or args.until <= args.since):
        print("--to needs a --from before it", file=sys.stderr)
        return 2
    logs.configure(SERVICE.name, "cli")
    runtime = SERVICE.runtime()
    try:
        prepare(runtime)
        recompute = Recompute(TicketDesk(runtime))
        with Progress("sla recompute", recompute.total(args.since, args.until), unit="tickets") as progress:
            outcome = recompute.run("cli", args.since, args.until, progress=progress.update)
            progress.finish(
                f"recomputed {outcome['tickets']} tickets' SLA clocks; {outcome['changed']} changed, "
                f"in {progress.elapsed():.1f}s"
            )
    finally:
        runtime.close()
    return 0


def _serve_inbound_smtp(service: str) -> None:
    """The support mailbox (`crm serve service-desk inbound-smtp`): imported only when it runs."""
    from crm_servicedesk import inbound_smtp

    inbound_smtp.serve(service)


def _inbound_smtp_url() -> str:
    config = settings.current().inbound
    return f"smtp://{config.smtp_host}:{config.smtp_port} (support mail)"


SERVICE = ServiceSpec(
    name="service-desk",
    title="CRM service desk",
    description="Tickets from every channel, SLA policies on business hours, satisfaction and reports.",
    ports=Ports(http=8003, grpc=50053, metrics=9121),
    blueprints=lambda runtime: [
        api.blueprint(TicketDesk(runtime)),
        survey_api.blueprint(TicketDesk(runtime)),
        sla_api.blueprint(TicketDesk(runtime)),
        inbound_api.blueprint(TicketDesk(runtime)),
        *servqual_api.blueprints(runtime),
    ],
    servicers=lambda server, runtime: grpc_api.register(server, TicketDesk(runtime)),
    projections=all_projections,
    prepare=prepare,
    jobs=lambda runtime: [sla_sweeper(runtime), sla_recomputer(runtime), servqual_desk.job(runtime)],
    configure=settings.current,  # a setting that cannot work stops every process at start, naming each
    personal_fields=PERSONAL_DATA,
    references=("contact_id",),
    events=EVENTS,
    upcasters=UPCASTERS,
    extra_processes={"inbound-smtp": ExtraProcess(run=_serve_inbound_smtp, url=_inbound_smtp_url)},
    commands={
        "sla": ServiceCommand(
            "recompute the service desk's SLA clocks after a policy or calendar change", _sla_arguments, sla_command
        )
    },
)
