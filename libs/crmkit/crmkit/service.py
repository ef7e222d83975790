"""How a service describes itself to the chassis, and the three processes it runs as.

Each service package exposes one `ServiceSpec` under the `crm.services` entry-point
group. The chassis turns it into the `api` (gunicorn + Flask), `grpc` and `worker`
processes, and `crm up` / `crm replay` / `crm rebuild` find services the same way, so
adding a service touches no chassis code.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import grpc
from flask import Blueprint, Flask

from crmkit import logs, metrics, profile, rpc
from crmkit.catalogue import Catalogue
from crmkit.config import Ports, Settings
from crmkit.events import Upcasters
from crmkit.projector import Projection, ProjectorRunner
from crmkit.publisher import run_sweeper
from crmkit.runtime import Runtime
from crmkit.settings import SettingsError, chassis
from crmkit.stack import stop_on_signals
from crmkit.web import create_app

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtraProcess:
    """A service's own extra process: `run(service_name)` until SIGTERM/SIGINT."""

    run: Callable[[str], None]
    enabled: Callable[[], bool] = lambda: True  # whether `crm up` starts it (e.g. only for a local provider)
    url: Callable[[], str] | None = None  # where it listens, for `crm up`'s banner (e.g. smtp://127.0.0.1:2525)


@dataclass(frozen=True)
class ServiceCommand:
    """A `crm` command a service contributes (e.g. the service desk's `crm sla recompute`).

    `summary` is the line `crm --help` shows, `arguments` adds the command's arguments
    (each with its help) to its parser, `run` does the work and returns the exit code.
    """

    summary: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    title: str
    description: str
    ports: Ports
    blueprints: Callable[[Runtime], Sequence[Blueprint]]
    servicers: Callable[[grpc.Server, Runtime], Sequence[str]]
    projections: Callable[[Runtime], Sequence[Projection]]
    prepare: Callable[[Runtime], None]  # indexes and other idempotent setup
    upcasters: Upcasters = field(default_factory=Upcasters)
    # personal fields per event type (dotted paths into data), sealed with a per-person key
    personal_fields: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # keys of event data naming other records, which EventStore.streams_referring finds streams by
    references: Sequence[str] = ()
    # every event type the service emits (docs/events is generated from it)
    events: Catalogue | None = None
    # background loops the worker runs beside the projectors (imports, timers); each
    # gets the stop event and must return soon after it is set
    jobs: Callable[[Runtime], Sequence[Callable[[threading.Event], None]]] = lambda _runtime: ()
    # processes beyond api/grpc/worker (e.g. a local SMTP sink): `crm serve SERVICE NAME` runs one,
    # `crm up` starts those whose `enabled()` says the configuration needs them locally
    extra_processes: Mapping[str, ExtraProcess] = field(default_factory=dict)
    # what this service refuses to start with in production, beside the chassis's checks
    # (crmkit.profile): an environment in, its unsafe settings out
    production_checks: profile.Check = lambda _environ: ()
    # `crm` commands of this service's own, by name (`crm NAME ...`); a name the chassis uses is refused
    commands: Mapping[str, ServiceCommand] = field(default_factory=dict)
    # the service's own typed settings (its settings.py), built at start so that every bad variable
    # stops each of its processes at once, named (crmkit.settings.SettingsError)
    configure: Callable[[], object] = lambda: None

    def processes(self, *, local: bool = False) -> list[str]:
        """The process names this service runs; `local`: only those `crm up` should start now."""
        extra = [name for name, process in self.extra_processes.items() if not local or process.enabled()]
        return ["api", "grpc", "worker", *extra]

    def settings(self) -> Settings:
        return Settings.for_service(self.name, http=self.ports.http, grpc=self.ports.grpc, metrics=self.ports.metrics)

    def runtime(self) -> Runtime:
        runtime = Runtime(self.settings(), self.upcasters, self.personal_fields, self.references)
        runtime.store.catalogue = self.events
        return runtime


def discover() -> dict[str, ServiceSpec]:
    """Every installed service, by name."""
    return {ep.name: ep.load() for ep in entry_points(group="crm.services")}


def spec_for(name: str) -> ServiceSpec:
    services = discover()
    if name not in services:
        raise SystemExit(f"unknown service {name!r}; installed: {', '.join(sorted(services)) or 'none'}")
    return services[name]


def wsgi(name: str) -> Flask:
    """The api process's app (gunicorn calls this once per worker, after the fork)."""
    spec, runtime = boot(name, "api")
    return create_app(runtime, spec.blueprints(runtime), title=spec.title, description=spec.description)


def boot(name: str, process: str) -> tuple[ServiceSpec, Runtime]:
    """What every process of a service does first (a service's own extra processes that record
    events too): take its identity (the service its calls to other services speak for), log as
    JSON, refuse an unsafe production configuration, connect, prepare the database."""
    os.environ["CRM_SERVICE_NAME"] = name
    spec = spec_for(name)
    settings = configured(spec, process)
    logs.configure(name, process, settings.log_level)
    profile.refuse_unsafe([spec.production_checks])  # before anything is generated or connected
    runtime = spec.runtime()
    spec.prepare(runtime)
    return spec, runtime


def configured(spec: ServiceSpec, process: str) -> Settings:
    """The service's settings, once every setting of the chassis and of the service was read: a value
    that cannot work exits (78) naming every bad variable of all three at once, not the first."""
    problems: list[tuple[str, str]] = []
    settings: Settings | None = None
    for build in (spec.settings, chassis, spec.configure):
        try:
            built = build()
        except SettingsError as exc:
            problems += exc.problems
            continue
        if isinstance(built, Settings):
            settings = built
    if problems or settings is None:
        error = SettingsError(dict.fromkeys(problems))
        logs.configure(spec.name, process, "INFO")
        log.critical("refusing to start: %s", error, extra={"problems": [f"{n}: {why}" for n, why in error.problems]})
        raise SystemExit(profile.EX_CONFIG) from error
    return settings


def serve_grpc(name: str) -> None:
    """The grpc process: serve until SIGTERM, then let in-flight calls finish."""
    spec, runtime = boot(name, "grpc")
    stop = stop_on_signals()
    server, health = rpc.build_server(name, runtime.settings.ports.grpc, lambda srv: spec.servicers(srv, runtime))
    metrics.serve(runtime.settings.ports.metrics + 1)
    server.start()
    log.info("gRPC serving", extra={"url": f"grpc://{rpc.bind_address(runtime.settings.ports.grpc)}"})
    stop.wait()
    health.enter_graceful_shutdown()
    server.stop(grace=10).wait()
    runtime.close()


def run_worker(name: str) -> None:
    """The worker process: the outbox sweeper and every projector, each in a thread."""
    spec, runtime = boot(name, "worker")
    stop = stop_on_signals()
    threads = [threading.Thread(target=run_sweeper, args=(runtime.publisher, stop), name="sweeper")]
    batch = chassis().projector_batch
    runners = [
        ProjectorRunner(
            name,
            projection,
            runtime.settings.kafka_bootstrap,
            runtime.store.open,
            db=runtime.db,
            group_prefix=runtime.settings.group_prefix,
            max_records=batch,
        )
        for projection in spec.projections(runtime)
    ]
    metrics.serve(runtime.settings.ports.metrics, worker_readiness(runners))
    for runner in runners:
        threads.append(threading.Thread(target=runner.run, args=(stop,), name=f"projector-{runner.projection.name}"))
    for job in spec.jobs(runtime):
        threads.append(threading.Thread(target=job, args=(stop,), name=f"job-{getattr(job, '__name__', 'job')}"))
    for thread in threads:
        thread.start()
    log.info("worker running", extra={"count": len(threads)})
    stop.wait()
    for thread in threads:
        thread.join(timeout=30)
    runtime.close()


def worker_readiness(runners: Sequence[ProjectorRunner]) -> metrics.Readiness:
    """The worker's /readyz: 503 `degraded`, naming them, while projections are stalled.

    Stalled: behind the topic with no advance for CRM_PROJECTION_STALL_SECONDS (an outage,
    or a bug retried without end). Nothing routes requests to a worker, so the 503 takes
    nothing out of service; it makes the stall visible to probes and `kubectl get pods`.
    """

    def readiness() -> tuple[int, dict[str, Any]]:
        states = [runner.progress.report() for runner in runners]
        stalled = [state["name"] for state in states if state["state"] == "degraded"]
        if stalled:
            return 503, {
                "status": "degraded",
                "detail": f"not advancing while behind: {', '.join(stalled)}",
                "projections": states,
            }
        return 200, {"status": "ready", "projections": states}

    return readiness
