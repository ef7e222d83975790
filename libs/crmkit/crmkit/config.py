"""Configuration from the environment, the same locally and on Kubernetes.

Every knob is an environment variable (contract.md); defaults are the local stack's.
Per-service ports follow one pattern, `CRM_<SERVICE>_<KIND>_PORT`, so a new service
needs no new code here.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crmkit import profile
from crmkit.settings import Env, load

REPO_ROOT = Path(__file__).resolve().parents[3]


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def data_dir() -> Path:
    """Where local state lives (`var/` in the repo root unless CRM_DATA_DIR says otherwise)."""
    return Path(_env("CRM_DATA_DIR", str(REPO_ROOT / "var"))).resolve()


def jwt_secret() -> str:
    """The token signing secret: CRM_JWT_SECRET, or one generated once and kept under var/.

    Generating it lazily means a fresh clone works without any setup, while a deployment
    sets the variable from a Kubernetes Secret and never touches the disk.
    """
    return local_secret("CRM_JWT_SECRET", "jwt-secret")


def local_secret(variable: str, filename: str) -> str:
    """The secret in `variable`, else one generated once into `var/<filename>` (the local stack)."""
    configured = os.environ.get(variable)
    if configured:
        return configured
    path = data_dir() / filename
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = secrets.token_urlsafe(48)
        try:
            with open(path, "x", encoding="ascii") as fh:
                fh.write(candidate)
            os.chmod(path, 0o600)
        except FileExistsError:
            pass  # another process won the race; read what it wrote
    return path.read_text(encoding="ascii").strip()


def slug(service: str) -> str:
    """A service's name where punctuation is not allowed: event types, roles, env keys."""
    return service.replace("-", "")


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int  # the worker's and the gRPC process's own /metrics (api serves its own)


@dataclass(frozen=True)
class Settings:
    """What one service process needs to know about its surroundings."""

    service: str  # as in services/<name>, e.g. "service-desk"
    slug: str  # "servicedesk": in event types (crm.servicedesk.…), roles and database names
    kafka_bootstrap: str
    group_prefix: str  # consumer groups are "<prefix>.<service>.<projection>"
    mongo_url: str
    database: str
    topic: str
    ports: Ports
    log_level: str
    environment: str

    @classmethod
    def for_service(cls, service: str, *, http: int, grpc: int, metrics: int) -> Settings:
        """The service's connections, names and ports; SettingsError names every bad variable."""
        return load(lambda env: cls.read(env, service, Ports(http, grpc, metrics)))

    @classmethod
    def read(cls, env: Env, service: str, defaults: Ports) -> Settings:
        key, compact = slug(service).upper(), slug(service)

        def port(kind: str, default: int) -> int:
            return env.integer(f"CRM_{key}_{kind}_PORT", default, minimum=0, maximum=65535)

        return cls(
            service=service,
            slug=compact,
            kafka_bootstrap=env.text("CRM_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            group_prefix=env.text("CRM_KAFKA_GROUP_PREFIX", "crm"),
            mongo_url=env.text("CRM_MONGO_URL", "mongodb://127.0.0.1:27017"),
            database=env.text(f"CRM_{key}_DATABASE", f"crm_{compact}"),
            topic=topic_of(service, env),
            ports=Ports(
                http=port("HTTP", defaults.http),
                grpc=port("GRPC", defaults.grpc),
                metrics=port("METRICS", defaults.metrics),
            ),
            log_level=env.text("CRM_LOG_LEVEL", "INFO"),
            environment=profile.current(env.environ),  # development | production (crmkit.profile)
        )


def topic_of(service: str, env: Env | None = None) -> str:
    """The topic a service publishes its events to: CRM_<SERVICE>_TOPIC, else `crm.<slug>.events`.

    Every reader of another service's events asks here (never a literal `crm.sales.events`),
    so one variable moves a topic for its owner and all of its readers at once.
    """
    compact = slug(service)
    return (env or Env()).text(f"CRM_{compact.upper()}_TOPIC", f"crm.{compact}.events")


_TOPIC_VARIABLE = re.compile(r"CRM_([A-Z0-9]+)_TOPIC")
_DEFAULT_TOPIC = re.compile(r"crm\.([a-z0-9]+)\.events")


def topic_owner(topic: str) -> str | None:
    """The slug of the service that owns `topic` (the reverse of `topic_of`), None when no service does.

    A topic set by CRM_<SERVICE>_TOPIC belongs to that service; `crm.<slug>.events`
    belongs to <slug> unless its variable moved that service elsewhere. Only the owner
    may publish there, so a projector refuses any other `source` or `type` on it. A topic
    that several variables name has no single owner (None: nothing is refused).
    """
    claims = {
        match.group(1).lower()
        for name, value in os.environ.items()
        if value == topic and (match := _TOPIC_VARIABLE.fullmatch(name))
    }
    if claims:
        return claims.pop() if len(claims) == 1 else None
    match = _DEFAULT_TOPIC.fullmatch(topic)
    if match and topic_of(match.group(1)) == topic:
        return match.group(1)
    return None


@dataclass(frozen=True)
class ProjectionPolicy:
    """How a projector treats failures (env CRM_PROJECTION_*; docs/operations.md).

    An event that fails on its own is tried `attempts` times, `first_delay` apart and
    doubling, then parked. An outage is retried with the same back-off, capped at
    `max_delay`, for as long as it lasts. A projection behind its topic that has not
    advanced for `stall_seconds` makes readiness say `degraded`.

    `fetch_wait_ms` is how long the broker may hold a fetch that finds nothing new: the
    Kafka consumer's default (500 ms) put most of half a second between a write and its
    own list on the local server, which waits out the whole time (bench/README.md);
    real Kafka answers as soon as a record arrives, so a short wait only adds idle fetches.
    """

    attempts: int = 3
    first_delay: float = 0.5
    max_delay: float = 30.0
    stall_seconds: float = 60.0
    fetch_wait_ms: int = 100

    @classmethod
    def from_env(cls) -> ProjectionPolicy:
        return load(cls.read)

    @classmethod
    def read(cls, env: Env) -> ProjectionPolicy:
        return cls(
            attempts=max(1, env.integer("CRM_PROJECTION_ATTEMPTS", cls.attempts)),
            first_delay=env.number("CRM_PROJECTION_RETRY_DELAY_SECONDS", cls.first_delay, minimum=0),
            max_delay=env.number("CRM_PROJECTION_RETRY_MAX_DELAY_SECONDS", cls.max_delay, minimum=0),
            stall_seconds=env.number("CRM_PROJECTION_STALL_SECONDS", cls.stall_seconds, minimum=0),
            fetch_wait_ms=max(1, env.integer("CRM_PROJECTION_FETCH_WAIT_MS", cls.fetch_wait_ms)),
        )

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th failure in a row (1, 2, …)."""
        # capped: an outage of days must not overflow
        return min(self.first_delay * 2.0 ** min(failures - 1, 30), self.max_delay)


def grpc_target(service: str, default_port: int) -> str:
    """Where to reach another service's gRPC server (CRM_<SERVICE>_GRPC_TARGET)."""
    key = slug(service).upper()
    port = _env(f"CRM_{key}_GRPC_PORT", str(default_port))
    return _env(f"CRM_{key}_GRPC_TARGET", f"127.0.0.1:{port}")


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
_KAFKA_SASL_VARIABLES = (
    "CRM_KAFKA_SASL_MECHANISM",
    "CRM_KAFKA_SASL_USERNAME",
    "CRM_KAFKA_SASL_USERNAME_FILE",
    "CRM_KAFKA_SASL_PASSWORD",
    "CRM_KAFKA_SASL_PASSWORD_FILE",
)
_KAFKA_SSL_FILES = {
    "ssl_cafile": "CRM_KAFKA_SSL_CAFILE",
    "ssl_certfile": "CRM_KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "CRM_KAFKA_SSL_KEYFILE",
}


class KafkaSecurityError(ValueError):
    """A CRM_KAFKA_* security setting that cannot work; the message names the variable."""


def kafka_client_options() -> dict[str, Any]:
    """kafka-python's security settings from CRM_KAFKA_* (README: Configuration), for every client we build.

    PLAINTEXT (the local stack) unless CRM_KAFKA_SECURITY_PROTOCOL says SSL, SASL_PLAINTEXT
    or SASL_SSL. SASL takes a mechanism, a username and a password (each also as
    `<VARIABLE>_FILE`, a mounted Secret); SSL takes the cluster's CA and, for mTLS, a client
    certificate and key. Anything that cannot work raises KafkaSecurityError at once, so a
    process stops at start instead of retrying a broker that will never let it in; that
    includes credentials the protocol would silently ignore (SASL settings over SSL alone,
    a certificate over plain TCP), which would leave a deployment believing it is protected.
    """
    protocol = _env("CRM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").strip().upper()
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise KafkaSecurityError(
            f"CRM_KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}"
        )
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        options |= _kafka_sasl_options()
    else:
        _refuse_unused(_KAFKA_SASL_VARIABLES, protocol)
    if protocol.endswith("SSL"):
        options |= _kafka_ssl_options()
    else:
        _refuse_unused((*_KAFKA_SSL_FILES.values(), "CRM_KAFKA_SSL_CHECK_HOSTNAME"), protocol)
    return options


def _kafka_sasl_options() -> dict[str, str | bool]:
    mechanism = _env("CRM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512").strip().upper()
    if mechanism not in KAFKA_SASL_MECHANISMS:
        raise KafkaSecurityError(
            f"CRM_KAFKA_SASL_MECHANISM={mechanism!r} is not one of {', '.join(KAFKA_SASL_MECHANISMS)}"
        )
    return {
        "sasl_mechanism": mechanism,
        "sasl_plain_username": _required_secret("CRM_KAFKA_SASL_USERNAME"),
        "sasl_plain_password": _required_secret("CRM_KAFKA_SASL_PASSWORD"),
    }


def _kafka_ssl_options() -> dict[str, str | bool]:
    options: dict[str, str | bool] = {}
    for option, variable in _KAFKA_SSL_FILES.items():
        if path := _env(variable, "").strip():
            if not Path(path).is_file():
                raise KafkaSecurityError(f"{variable}={path!r}: no such file")
            options[option] = path
    if ("ssl_certfile" in options) != ("ssl_keyfile" in options):
        raise KafkaSecurityError(
            "CRM_KAFKA_SSL_CERTFILE and CRM_KAFKA_SSL_KEYFILE go together (mTLS): set both or neither"
        )
    check = _env("CRM_KAFKA_SSL_CHECK_HOSTNAME", "true").strip().lower()
    if check not in ("true", "false"):
        raise KafkaSecurityError(f"CRM_KAFKA_SSL_CHECK_HOSTNAME={check!r} is not true or false")
    options["ssl_check_hostname"] = check == "true"
    return options


def _required_secret(variable: str) -> str:
    """`variable`, or the content of the file `<variable>_FILE` names (a mounted Secret); one of them, not empty."""
    value, path = os.environ.get(variable), os.environ.get(f"{variable}_FILE")
    if value and path:
        raise KafkaSecurityError(f"{variable} and {variable}_FILE are both set: keep one")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise KafkaSecurityError(f"{variable}_FILE={path!r}: {exc.strerror or exc}") from exc
    if not value:
        raise KafkaSecurityError(f"{variable} (or {variable}_FILE) is required with SASL and is empty")
    return value


def _refuse_unused(variables: tuple[str, ...], protocol: str) -> None:
    if unused := [name for name in variables if os.environ.get(name)]:
        raise KafkaSecurityError(
            f"{', '.join(unused)} set, but CRM_KAFKA_SECURITY_PROTOCOL={protocol} does not use "
            "it: choose a protocol that does, or unset it"
        )
