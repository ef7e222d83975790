"""Typed settings from the environment: one reader, every bad variable named at once.

Each service keeps its knobs in one frozen dataclass (`crm_<svc>/settings.py`, messaging's
`config.py`), and the chassis keeps its own in `ChassisSettings` below; nothing else reads
`os.environ` for a setting. A dataclass is built by a `read(env)` function that asks an
`Env` for each variable by type; an `Env` notes every value that cannot work instead of
stopping at the first, so a deployment with three typos learns of all three from one start
(`SettingsError`, whose message names each variable and why).

`Current(read)` is how code reaches the settings: built from `os.environ` the first time,
then the same object for as long as the variables it read keep their values (a process's
environment never changes, so it is built once; a test that moves a variable with
`monkeypatch` gets settings built again, from the new value).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """Settings that cannot work; `problems` holds (variable, why) for every one of them."""

    def __init__(self, problems: Iterable[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("bad settings: " + "; ".join(f"{name}: {why}" for name, why in self.problems))


class Env:
    """Typed reads from one environment; a bad value is noted (see `check`) and its default used."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.problems: list[tuple[str, str]] = []
        self.seen: dict[str, str | None] = {}  # every variable read and its raw value, for `Current`

    def raw(self, name: str) -> str | None:
        """The variable as set (None when unset); the one place a value is taken from the environment."""
        value = self.environ.get(name)
        self.seen[name] = value
        return value

    def text(self, name: str, default: str = "") -> str:
        """The value, or `default` when unset (an empty value stays empty)."""
        value = self.raw(name)
        return default if value is None else value

    def optional(self, name: str) -> str | None:
        """The value stripped, None when unset or empty."""
        return (self.raw(name) or "").strip() or None

    def integer(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        """A whole number (unset or empty: `default`), within [minimum, maximum] when given."""
        return int(self._number(name, default, int, "a whole number", minimum, maximum))

    def number(
        self,
        name: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        above: float | None = None,
    ) -> float:
        """A number (unset or empty: `default`), within [minimum, maximum] and more than `above` when given."""
        value = self._number(name, default, float, "a number", minimum, maximum)
        if above is not None and not value > above:
            self.problem(name, f"{value:g} must be more than {above:g}")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        """true/false (also 1/0, yes/no); unset or empty: `default`."""
        raw = (self.raw(name) or "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes"):
            return True
        if raw in ("0", "false", "no"):
            return False
        self.problem(name, f"{raw!r} is not true or false")
        return default

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        """One of `choices` (case as given); unset or empty: `default`."""
        allowed = tuple(choices)
        value = (self.raw(name) or "").strip() or default
        if value not in allowed:
            self.problem(name, f"{value!r} is not one of {', '.join(allowed)}")
            return default
        return value

    def problem(self, name: str, why: str) -> None:
        """Note a value that cannot work (for checks a typed read cannot make)."""
        self.problems.append((name, why))

    def check(self) -> None:
        """Raise SettingsError naming every problem noted so far."""
        if self.problems:
            raise SettingsError(self.problems)

    def _number(
        self,
        name: str,
        default: float,
        kind: Callable[[str], float],
        noun: str,
        minimum: float | None,
        maximum: float | None,
    ) -> float:
        raw = (self.raw(name) or "").strip()
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            self.problem(name, f"{raw!r} is not {noun}")
            return default
        if value != value or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = " and ".join(
                part
                for part in (
                    minimum is not None and f"at least {minimum:g}",
                    maximum is not None and f"at most {maximum:g}",
                )
                if part
            )
            self.problem(name, f"{raw!r} must be {bounds or 'a number'}")
            return default
        return value


def load(read: Callable[[Env], T], environ: Mapping[str, str] | None = None) -> T:
    """`read` over `environ` (default: the process's), raising SettingsError naming every bad variable."""
    env = Env(environ)
    value = read(env)
    env.check()
    return value


class Current(Generic[T]):
    """The settings `read` builds from `os.environ`, built again only when a variable it read changes."""

    def __init__(self, read: Callable[[Env], T]) -> None:
        self.read = read
        self._lock = threading.Lock()
        self._built: tuple[dict[str, str | None], T] | None = None

    def __call__(self) -> T:
        built = self._built
        if built is not None and all(os.environ.get(name) == value for name, value in built[0].items()):
            return built[1]
        with self._lock:
            env = Env()
            value = self.read(env)
            env.check()
            self._built = (env.seen, value)
            return value


@dataclass(frozen=True)
class ChassisSettings:
    """The chassis's own knobs, the same for every service (README: Configuration)."""

    projector_batch: int  # CRM_PROJECTOR_BATCH: max records a projector applies per bulk write
    rate_limit_per_minute: int  # CRM_RATE_LIMIT_PER_MINUTE: per-token budget of an api process (0: off)
    idempotency_ttl_seconds: float  # CRM_IDEMPOTENCY_TTL_SECONDS
    idempotency_lease_seconds: float  # CRM_IDEMPOTENCY_LEASE_SECONDS
    grpc_bind: str  # CRM_GRPC_BIND: the address gRPC listens on
    grpc_max_streams: int | None  # CRM_GRPC_MAX_STREAMS: None = half the server's threads
    metrics_addr: str  # CRM_METRICS_ADDR: where a grpc/worker process serves /metrics
    api_workers: int  # CRM_API_WORKERS: gunicorn workers
    api_threads: int  # CRM_API_THREADS: threads per gunicorn worker
    log_level: str  # CRM_LOG_LEVEL
    strict_events: bool  # CRM_STRICT_EVENTS=1 (tests): every event appended must match the catalogue
    multiprocess_metrics: bool  # PROMETHEUS_MULTIPROC_DIR set (by `crm up`/gunicorn): merge the workers' metrics

    @classmethod
    def read(cls, env: Env) -> ChassisSettings:
        streams = env.integer("CRM_GRPC_MAX_STREAMS", 0, minimum=1) if env.optional("CRM_GRPC_MAX_STREAMS") else None
        return cls(
            projector_batch=env.integer("CRM_PROJECTOR_BATCH", 500, minimum=1),
            rate_limit_per_minute=env.integer("CRM_RATE_LIMIT_PER_MINUTE", 60_000, minimum=0),
            idempotency_ttl_seconds=env.number("CRM_IDEMPOTENCY_TTL_SECONDS", 86_400, above=0),
            idempotency_lease_seconds=env.number("CRM_IDEMPOTENCY_LEASE_SECONDS", 60, above=0),
            grpc_bind=env.text("CRM_GRPC_BIND", "127.0.0.1"),
            grpc_max_streams=streams,
            metrics_addr=env.text("CRM_METRICS_ADDR", "0.0.0.0"),
            api_workers=env.integer("CRM_API_WORKERS", 2, minimum=1),
            api_threads=env.integer("CRM_API_THREADS", 4, minimum=1),
            log_level=env.text("CRM_LOG_LEVEL", "INFO"),
            strict_events=env.text("CRM_STRICT_EVENTS") == "1",
            multiprocess_metrics=bool(env.text("PROMETHEUS_MULTIPROC_DIR")),
        )


chassis = Current(ChassisSettings.read)
"""The chassis's settings now: `crmkit.settings.chassis().projector_batch`."""


@dataclass(frozen=True)
class Credentials:
    """Who a process is and what it verifies and signs with (crmkit.keys). Rotations change these
    variables under a running test or tool, which `Current` notices: built again on any change."""

    jwt_keys: str | None  # CRM_JWT_KEYS: the token key ring as JSON
    jwt_secret: str | None  # CRM_JWT_SECRET: a ring of one key
    service_public_keys: str | None  # CRM_SERVICE_PUBLIC_KEYS: every service's public key, JSON
    service_key: str | None  # CRM_SERVICE_KEY: this service's own private key
    service_name: str | None  # CRM_SERVICE_NAME: set by `crm serve` (boot) and the test harness
    data_dir: str | None  # CRM_DATA_DIR, as set (crmkit.config.data_dir resolves the default)

    @classmethod
    def read(cls, env: Env) -> Credentials:
        return cls(
            jwt_keys=env.raw("CRM_JWT_KEYS"),
            jwt_secret=env.raw("CRM_JWT_SECRET"),
            service_public_keys=env.raw("CRM_SERVICE_PUBLIC_KEYS"),
            service_key=env.raw("CRM_SERVICE_KEY"),
            service_name=env.raw("CRM_SERVICE_NAME") or None,
            data_dir=env.raw("CRM_DATA_DIR"),
        )


credentials = Current(Credentials.read)


@dataclass(frozen=True)
class LocalStack:
    """What `crm up` and the `crm` tools need: a broker and a database to use, or ports to start them on."""

    kafka_bootstrap: str | None  # CRM_KAFKA_BOOTSTRAP: set, `crm up` starts no local broker
    mongo_url: str | None  # CRM_MONGO_URL: set, `crm up` starts no local server
    kafka_port: int  # CRM_KAFKA_PORT: the local broker's port
    mongo_port: int  # CRM_MONGO_PORT: the local server's port
    topic_partitions: int  # CRM_TOPIC_PARTITIONS: partitions of the topics `crm up` creates

    @classmethod
    def read(cls, env: Env) -> LocalStack:
        return cls(
            kafka_bootstrap=env.raw("CRM_KAFKA_BOOTSTRAP"),
            mongo_url=env.raw("CRM_MONGO_URL"),
            kafka_port=env.integer("CRM_KAFKA_PORT", 9092, minimum=1, maximum=65535),
            mongo_port=env.integer("CRM_MONGO_PORT", 27017, minimum=1, maximum=65535),
            topic_partitions=env.integer("CRM_TOPIC_PARTITIONS", 3, minimum=1),
        )


local_stack = Current(LocalStack.read)
