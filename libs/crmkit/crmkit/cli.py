"""The `crm` command: run the stack, mint tokens, replay and rebuild.

`crm --help` lists every command; `crm COMMAND --help` describes its arguments. The long
ones (rebuild, replay, export) show totals, rate and time left on a terminal and write
only a start and a summary line elsewhere (crmkit.progress). A service may add commands
of its own (`ServiceSpec.commands`, e.g. the service desk's `crm sla recompute`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from crmkit import auth, catalogue, keys, logs, profile, stack, streams
from crmkit.config import REPO_ROOT, data_dir, slug
from crmkit.deadletters import DeadLetters
from crmkit.events import rfc3339
from crmkit.progress import Progress
from crmkit.projector import Projection, rebuild
from crmkit.runtime import Runtime
from crmkit.service import ServiceSpec, discover, run_worker, serve_grpc, spec_for
from crmkit.settings import credentials, local_stack

log = logging.getLogger("crm")

SERVICE_HELP = "a service: contacts, sales, service-desk or messaging"
EPILOG = """environment: CRM_KAFKA_BOOTSTRAP, CRM_MONGO_URL, CRM_JWT_SECRET, CRM_DATA_DIR (default var/)
and the rest in README.md, "Configuration". Runbooks: docs/operations.md."""


def build_parser() -> argparse.ArgumentParser:
    """Every command and argument, each with the line `crm --help` shows for it."""
    parser = argparse.ArgumentParser(
        prog="crm",
        description="The CRM's command line: the local stack, tokens "
        "and keys, event replay, read-model rebuilds, event export.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=summary)

    up_cmd = command("up", "run the local stack in the foreground (what `make run` runs); Ctrl-C stops it")
    up_cmd.add_argument("--services", help="comma-separated subset (default: all installed)")

    token_cmd = command("token", "print a JWT for the local stack, on stdout")
    token_cmd.add_argument("--roles", required=True, help="comma-separated, e.g. admin or contacts:read")
    token_cmd.add_argument("--subject", default="admin", help="the token's subject, who it speaks for (default admin)")
    token_cmd.add_argument(
        "--team", help="the token's team claim: where team-scoped roles such as sales:read:team apply"
    )
    token_cmd.add_argument("--ttl", type=int, default=12 * 3600, help="seconds (default 12h)")
    token_cmd.add_argument(
        "--audience",
        default=auth.EVERY_SERVICE,
        help="comma-separated services the token is for (default: every service)",
    )

    keys_cmd = command("keys", "list, rotate or retire token signing keys; print fresh service credentials")
    keys_cmd.add_argument(
        "action",
        choices=["list", "rotate", "retire", "service-credentials"],
        help="list the ring; rotate: add a signing key; retire: drop old ones; "
        "service-credentials: Kubernetes Secrets with a key per service",
    )
    keys_cmd.add_argument("kid", nargs="?", help="retire: the key to drop")
    keys_cmd.add_argument("--older-than-days", type=float, help="retire: every older key (never the signing one)")
    keys_cmd.add_argument(
        "--file",
        type=Path,
        help="the ring file (default var/jwt-keys.json; on Kubernetes, a copy of the crm-jwt Secret's keys)",
    )

    replay_cmd = command("replay", "re-publish a service's stored events to its Kafka topic (consumers dedupe)")
    replay_cmd.add_argument("service", help=SERVICE_HELP)

    rebuild_cmd = command("rebuild", "drop and rebuild a service's read models from its events")
    rebuild_cmd.add_argument("service", help=SERVICE_HELP)
    rebuild_cmd.add_argument("projection", nargs="?", help="only this read model (default: all of the service's)")

    serve_cmd = command("serve", "run one process of a service (what Kubernetes runs)")
    serve_cmd.add_argument("service", help=SERVICE_HELP)
    serve_cmd.add_argument("process", help="api, grpc, worker, or one of the service's extra processes")

    tail_cmd = command("tail", "print a topic's events as they arrive, one line each, until Ctrl-C")
    tail_cmd.add_argument("topic", help="e.g. crm.contacts.events")
    tail_cmd.add_argument(
        "--from-beginning", action="store_true", help="start at the topic's first event, not at its end"
    )
    tail_cmd.add_argument("--type", help="only this event type (ContactCreated or crm.contacts.ContactCreated.v1)")

    export_cmd = command("export", "append a topic's events not exported before to a flat file (docs/bi.md)")
    export_cmd.add_argument("topic", help="e.g. crm.sales.events")
    export_cmd.add_argument(
        "--format", choices=["jsonl", "csv"], required=True, help="one JSON object or one CSV row per event"
    )
    export_cmd.add_argument(
        "--out",
        type=Path,
        required=True,
        help="the file appended to; FILE.offsets.json beside it records where to resume",
    )
    export_cmd.add_argument("--type", help="only this event type (short or full name)")

    dead_cmd = command("deadletters", "list, re-apply (after a fix) or drop records projections parked")
    dead_cmd.add_argument(
        "action",
        choices=["list", "retry", "drop"],
        help="list them; retry: apply them again and remove those that succeed; drop them",
    )
    dead_cmd.add_argument("service", help=SERVICE_HELP)
    dead_cmd.add_argument("--projection", help="only this projection's")
    dead_cmd.add_argument("--id", help="only this dead letter (as `list` shows it)")

    catalogue_cmd = command(
        "catalogue", "write every service's event schemas and the catalogue page (`make catalogue`)"
    )
    catalogue_cmd.add_argument(
        "--out", type=Path, default=REPO_ROOT / "docs" / "events", help="the folder written (default docs/events)"
    )

    for service, spec in sorted(discover().items()):  # commands a service contributes (ServiceSpec.commands)
        for name, contributed in spec.commands.items():
            if name in commands.choices:
                raise SystemExit(f"service {service} contributes `crm {name}`, which another command already is")
            contributed.arguments(command(name, contributed.summary))
            commands.choices[name].set_defaults(contributed=contributed.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "up": up,
        "token": token,
        "replay": replay,
        "rebuild": rebuild_cmd_run,
        "serve": serve,
        "tail": tail_cmd_run,
        "export": export_cmd_run,
        "catalogue": catalogue_cmd_run,
        "deadletters": deadletters_cmd_run,
        "keys": keys_cmd_run,
    }
    handler = handlers.get(args.command) or args.contributed
    return handler(args)


def catalogue_cmd_run(args: argparse.Namespace) -> int:
    catalogues = [spec.events for _, spec in sorted(discover().items()) if spec.events is not None]
    written = catalogue.write_docs(catalogues, args.out)
    print(f"wrote {len(written)} files under {args.out}", file=sys.stderr)
    return 0


def _bootstrap() -> str:
    return local_stack().kafka_bootstrap or "127.0.0.1:9092"


def tail_cmd_run(args: argparse.Namespace) -> int:
    streams.tail(_bootstrap(), args.topic, from_beginning=args.from_beginning, event_type=args.type, out=sys.stdout)
    return 0


def export_cmd_run(args: argparse.Namespace) -> int:
    with Progress(f"export {args.topic}", None, unit="records") as progress:
        rows = streams.export(
            _bootstrap(), args.topic, fmt=args.format, out=args.out, event_type=args.type, progress=progress.update
        )
        progress.finish(f"exported {rows} new events from {args.topic} to {args.out} in {progress.elapsed():.1f}s")
    return 0


def token(args: argparse.Namespace) -> int:
    roles = [role.strip() for role in args.roles.split(",") if role.strip()]
    audience = [slug(name.strip()) for name in args.audience.split(",") if name.strip()]
    print(auth.issue(keys.ring(), args.subject, roles, args.ttl, audience=audience, team=args.team))
    return 0


def keys_cmd_run(args: argparse.Namespace) -> int:
    """The ring file's keys; rotate and retire print what changed (docs/operations.md, "Rotating keys")."""
    if args.action == "service-credentials":
        print(_service_credentials())
        return 0
    if args.action != "list" and args.file is None and (credentials().jwt_keys or credentials().jwt_secret):
        print(
            "note: this environment's ring comes from CRM_JWT_KEYS/CRM_JWT_SECRET, not the file changed here",
            file=sys.stderr,
        )
    try:
        if args.action == "rotate":
            print(keys.rotate(args.file))
        elif args.action == "retire":
            if (args.kid is None) == (args.older_than_days is None):
                print("retire takes a KID or --older-than-days", file=sys.stderr)
                return 2
            older = None if args.older_than_days is None else timedelta(days=args.older_than_days)
            print("\n".join(keys.retire(args.kid, older_than=older, path=args.file)))
        else:
            for key in keys.describe(args.file):
                print("\t".join([key["kid"], key["created"], *(["signing"] if key["signing"] else [])]))
    except keys.KeyRingError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


def _service_credentials() -> str:
    """Kubernetes Secrets (a JSON List for kubectl apply) with a fresh key per service and every
    service's public key: apply once per namespace, never commit."""
    made = keys.new_service_credentials(sorted(auth.SERVICE_GRANTS))
    documents = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"crm-{name}-credentials"},
            "type": "Opaque",
            "stringData": {"service-key": private},
        }
        for name, (private, _) in made.items()
    ]
    documents.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "crm-service-public-keys"},
            "type": "Opaque",
            "stringData": {"keys": json.dumps({name: public for name, (_, public) in made.items()})},
        }
    )
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}, indent=2)


def replay(args: argparse.Namespace) -> int:
    logs.configure(args.service, "cli")
    runtime = spec_for(args.service).runtime()
    try:
        with Progress(f"replay {args.service}", runtime.store.count()) as progress:
            sent = runtime.publisher.replay(progress.batches(runtime.store.scan(sealed=True)))
            progress.finish(
                f"replayed {sent} events of {args.service} in {progress.elapsed():.1f}s "
                f"({_rate(sent, progress.elapsed())} events/s)"
            )
    finally:
        runtime.close()
    return 0


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:.0f}" if seconds > 0 else "-"


def rebuild_cmd_run(args: argparse.Namespace) -> int:
    logs.configure(args.service, "cli")
    spec = spec_for(args.service)
    runtime = spec.runtime()
    spec.prepare(runtime)
    projections = [p for p in spec.projections(runtime) if args.projection in (None, p.name)]
    if not projections:
        print(f"no projection named {args.projection!r}", file=sys.stderr)
        return 2
    try:
        for projection in projections:
            with Progress(f"rebuild {projection.name}", _rebuild_size(projection, runtime)) as progress:
                count = rebuild(
                    projection,
                    runtime.store,
                    progress.update,
                    own_topic=runtime.settings.topic,
                    bootstrap=runtime.settings.kafka_bootstrap,
                )
                elapsed = progress.elapsed()
                progress.finish(
                    f"rebuilt {projection.name} from {count} events in {elapsed:.1f}s "
                    f"({_rate(count, elapsed)} events/s)"
                )
    finally:
        runtime.close()
    return 0


def _rebuild_size(projection: Projection, runtime: Runtime) -> int:
    """What a rebuild of `projection` reads: the service's stored events if it follows its
    own topic, and every record now on the other topics it follows."""
    own = runtime.settings.topic
    foreign = [topic for topic in projection.topics if topic != own]
    stored = runtime.store.count() if own in projection.topics else 0
    return stored + (streams.records_on(runtime.settings.kafka_bootstrap, foreign) if foreign else 0)


def deadletters_cmd_run(args: argparse.Namespace) -> int:
    """List, retry or drop a service's dead letters (docs/operations.md, "A record was parked")."""
    logs.configure(args.service, "cli")
    spec = spec_for(args.service)
    runtime = spec.runtime()
    try:
        letters = DeadLetters.of(runtime.db)
        found = letters.find(args.projection, args.id)
        if args.action == "list":
            for letter in found:
                print(_dead_letter_line(letter))
            print(f"{len(found)} parked", file=sys.stderr)
        elif args.action == "retry":
            spec.prepare(runtime)
            projections = {projection.name: projection for projection in spec.projections(runtime)}
            applied, failing = letters.retry(found, projections, runtime.store.open)
            print(
                f"applied and removed {applied}; still failing {failing} (see `crm deadletters list`)", file=sys.stderr
            )
            return 1 if failing else 0
        else:
            print(f"dropped {letters.drop(found)}", file=sys.stderr)
    finally:
        runtime.close()
    return 0


def _dead_letter_line(letter: dict[str, Any]) -> str:
    """One dead letter on one line: where, what (type and ids, never the data) and why."""
    event = letter.get("event") or {}
    error = letter["error"]
    what = f"{event.get('type')} {event.get('subject')} (event {event.get('id')})" if event else "unreadable record"
    return (
        f"{letter['_id']}  {what}  {error['class']}: {error['message']}  attempts {letter['attempts']}, "
        f"first {rfc3339(letter['first_failed'])}, last {rfc3339(letter['last_failed'])}"
    )


def serve(args: argparse.Namespace) -> int:
    spec = spec_for(args.service)
    if args.process == "api":
        return _exec_gunicorn(spec)
    if args.process in ("grpc", "worker"):
        {"grpc": serve_grpc, "worker": run_worker}[args.process](args.service)
        return 0
    if args.process not in spec.extra_processes:
        print(
            f"{args.service} has no process {args.process!r}; it runs: {', '.join(spec.processes())}", file=sys.stderr
        )
        return 2
    spec.extra_processes[args.process].run(args.service)
    return 0


def _exec_gunicorn(spec: ServiceSpec) -> int:
    settings = spec.settings()
    logs.configure(spec.name, "api", settings.log_level)
    profile.refuse_unsafe([spec.production_checks])  # once, before gunicorn forks workers that would each refuse
    multiproc = data_dir() / "run" / "prometheus" / f"{spec.name}-{os.getpid()}"
    shutil.rmtree(multiproc, ignore_errors=True)
    multiproc.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    argv = [
        "gunicorn",
        "--config",
        "python:crmkit.gunicorn_conf",
        "--bind",
        f"0.0.0.0:{settings.ports.http}",
        f"crmkit.service:wsgi('{spec.name}')",
    ]
    os.execv(str(Path(sys.executable).parent / "gunicorn"), argv)
    return 0  # not reached


def up(args: argparse.Namespace) -> int:
    logs.configure("crm", "up")
    services = discover()
    if args.services:
        wanted = {name.strip() for name in args.services.split(",")}
        services = {name: spec for name, spec in services.items() if name in wanted}
    # the local stack in production: every service's checks at once, before a stand-in starts
    profile.refuse_unsafe([spec.production_checks for spec in services.values()])
    home = data_dir()
    servers = _start_servers(home)
    try:
        _prepare(services)
        supervisor = stack.Supervisor()
        python = sys.executable
        for name, spec in services.items():
            for process in spec.processes(local=True):
                argv = [python, "-m", "crmkit.cli", "serve", name, process]
                supervisor.add(f"{name}-{process}", argv, dict(os.environ))
        _announce(services)
        return supervisor.run()
    finally:
        for server in reversed(servers):
            stack.stop_process(server)
        log.info("stack stopped")


def _start_servers(home: Path) -> list[subprocess.Popen[bytes]]:
    """Start the local Kafka and MongoDB unless the environment points at real ones."""
    servers = []
    local = local_stack()
    if local.kafka_bootstrap is None:
        servers.append(stack.start_kafka(local.kafka_port, home / "log"))
        os.environ["CRM_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{local.kafka_port}"  # for the processes it starts
    if local.mongo_url is None:
        servers.append(stack.start_mongo(local.mongo_port, home / "mongo", home / "log"))
        os.environ["CRM_MONGO_URL"] = f"mongodb://127.0.0.1:{local.mongo_port}"
    return servers


def _prepare(services: dict[str, ServiceSpec]) -> None:
    """Topics, indexes, and a replay for a broker that lost what the stores hold."""
    local = local_stack()
    bootstrap, partitions = local.kafka_bootstrap or "127.0.0.1:9092", local.topic_partitions
    stack.ensure_topics(bootstrap, [spec.settings().topic for spec in services.values()], partitions)
    for spec in services.values():
        runtime = spec.runtime()
        spec.prepare(runtime)
        if runtime.store.count() and stack.topic_is_empty(bootstrap, runtime.settings.topic):
            sent = runtime.publisher.replay()
            log.info("replayed stored events to a fresh broker", extra={"topic": runtime.settings.topic, "count": sent})
        runtime.close()


def _announce(services: dict[str, ServiceSpec]) -> None:
    lines = ["", "CRM is starting:"]
    for spec in services.values():
        s = spec.settings()
        lines.append(
            f"  {spec.name:<14} REST http://127.0.0.1:{s.ports.http}  (docs /docs)   gRPC 127.0.0.1:{s.ports.grpc}"
        )
        lines += [
            f"  {'':<14} {name} {process.url()}"
            for name, process in spec.extra_processes.items()
            if process.url is not None and process.enabled()
        ]
    lines += [
        f"  Kafka {local_stack().kafka_bootstrap}   MongoDB {local_stack().mongo_url}",
        "",
        "Admin token (12h):",
        auth.issue(keys.ring(), "admin", ["admin"]),
        "",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
