"""Configuration from the environment, the same locally and on Kubernetes.

Every knob is an environment variable (contract.md); defaults are the local stack's.
Per-service ports follow one pattern, `CRM_<SERVICE>_<KIND>_PORT`, so a new service
needs no new code here.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

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
    configured = os.environ.get("CRM_JWT_SECRET")
    if configured:
        return configured
    path = data_dir() / "jwt-secret"
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
        key, compact = slug(service).upper(), slug(service)
        return cls(
            service=service,
            slug=compact,
            kafka_bootstrap=_env("CRM_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            group_prefix=_env("CRM_KAFKA_GROUP_PREFIX", "crm"),
            mongo_url=_env("CRM_MONGO_URL", "mongodb://127.0.0.1:27017"),
            database=_env(f"CRM_{key}_DATABASE", f"crm_{compact}"),
            topic=_env(f"CRM_{key}_TOPIC", f"crm.{compact}.events"),
            ports=Ports(
                http=int(_env(f"CRM_{key}_HTTP_PORT", str(http))),
                grpc=int(_env(f"CRM_{key}_GRPC_PORT", str(grpc))),
                metrics=int(_env(f"CRM_{key}_METRICS_PORT", str(metrics))),
            ),
            log_level=_env("CRM_LOG_LEVEL", "INFO"),
            environment=_env("CRM_ENV", "local"),
        )


def grpc_target(service: str, default_port: int) -> str:
    """Where to reach another service's gRPC server (CRM_<SERVICE>_GRPC_TARGET)."""
    key = slug(service).upper()
    port = _env(f"CRM_{key}_GRPC_PORT", str(default_port))
    return _env(f"CRM_{key}_GRPC_TARGET", f"127.0.0.1:{port}")
