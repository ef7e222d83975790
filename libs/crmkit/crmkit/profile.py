"""The deployment profile (CRM_ENV) and what production refuses to start with.

Locally (`development`, the default) a fresh clone runs with nothing configured: secrets
are generated into var/ on first use, each service's key is derived from the token secret,
Kafka and MongoDB are the stand-ins `crm up` starts on 127.0.0.1, and messages go to files
and a local SMTP sink. In production each of those conveniences is a hole: a generated
secret differs in every pod and dies with it, a derived service key lets whoever holds the
token secret speak for every service, and a file provider marks messages sent that nobody
receives. So with CRM_ENV=production every process checks its environment before it
connects to anything and refuses to start, naming every unsafe variable and why, rather
than running half right.

The chassis checks what every service shares (secrets, Kafka, MongoDB); a service adds
its own through `ServiceSpec.production_checks` (messaging: its public URLs and
providers). The checks read a mapping, not the process environment, so tests/deploy runs
the same functions against the rendered prod overlay and the two cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

DEVELOPMENT = "development"
PRODUCTION = "production"
PROFILES = (DEVELOPMENT, PRODUCTION)
PLACEHOLDER = "CHANGE-ME"  # the values of deploy/k8s/secrets.example.yaml
MIN_SECRET_LENGTH = 32  # characters of an HMAC secret (`crm keys rotate` makes 64)
EX_CONFIG = 78  # sysexits.h: configuration error (a restart cannot fix it)


@dataclass(frozen=True)
class Problem:
    """One unsafe setting: the variable to change and why (never its value: it may be a secret)."""

    variable: str
    reason: str

    def __str__(self) -> str:
        return f"{self.variable}: {self.reason}"


# A service's own checks: the problems it finds in an environment (production only).
Check = Callable[[Mapping[str, str]], Iterable[Problem]]


def current(environ: Mapping[str, str] | None = None) -> str:
    """The profile `environ` (default: this process's) runs in: CRM_ENV, `development` when unset."""
    return (os.environ if environ is None else environ).get("CRM_ENV") or DEVELOPMENT


def problems(environ: Mapping[str, str], checks: Sequence[Check] = ()) -> list[Problem]:
    """Every unsafe setting in `environ` for its profile: the chassis's, then each check's.

    Outside production nothing is refused except a profile that does not exist (a typo
    such as `prod` must not switch the checks off silently).
    """
    name = current(environ)
    if name not in PROFILES:
        return [Problem("CRM_ENV", f"{name!r} is not a profile: use {' or '.join(PROFILES)}")]
    if name != PRODUCTION:
        return []
    found = [*_secrets(environ), *_infrastructure(environ)]
    for check in checks:
        found += check(environ)
    found += _placeholders(environ)
    return list(dict.fromkeys(found))  # several services' checks may share a variable (crm up)


def refuse_unsafe(checks: Sequence[Check], environ: Mapping[str, str] | None = None) -> None:
    """Exit (code 78) when `environ` is unsafe for its profile, after logging every problem as JSON."""
    found = problems(os.environ if environ is None else environ, checks)
    if not found:
        return
    log.critical(
        "refusing to start: the configuration is unsafe for CRM_ENV=%s (docs/operations.md, production checklist)",
        current(environ),
        extra={"problems": [str(p) for p in found]},
    )
    raise SystemExit(EX_CONFIG)


def url_problems(variable: str, environ: Mapping[str, str], fix: str) -> list[Problem]:
    """Why the URL in `variable` is unsafe in production: unset (a local default), not https,
    or a host that is this machine (127.0.0.1, localhost), which nothing outside the pod
    reaches. `fix` says what to set instead. The URL is never echoed: it may carry credentials."""
    value = environ.get(variable, "").strip()
    if not value:
        return [Problem(variable, f"unset; {fix}")]
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        return [Problem(variable, f"not an https URL with a host; {fix}")]
    if is_local_host(parts.hostname):
        return [Problem(variable, f"{parts.hostname} is this machine, which no one else reaches; {fix}")]
    return []


def is_local_host(host: str) -> bool:
    """Whether `host` is this machine only: localhost, a loopback or unspecified address."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _secrets(environ: Mapping[str, str]) -> Iterator[Problem]:
    """Every key must come from the environment (a Kubernetes Secret), never be generated or derived."""
    if ring := environ.get("CRM_JWT_KEYS"):
        yield from _ring_problems(ring)
    elif single := environ.get("CRM_JWT_SECRET"):
        yield from _weak("CRM_JWT_SECRET", single)
    else:
        yield Problem(
            "CRM_JWT_KEYS",
            "unset (and CRM_JWT_SECRET too): tokens would be signed with a key generated "
            "into var/jwt-keys.json, a different one in every pod; set it from the crm-jwt "
            "Secret",
        )
    if not environ.get("CRM_SERVICE_KEY"):
        yield Problem(
            "CRM_SERVICE_KEY",
            "unset: this service's key would be derived from the token secret, so "
            "whoever holds that could call as any service; set it from the "
            "crm-<service>-credentials Secret (`crm keys service-credentials`)",
        )
    if not environ.get("CRM_SERVICE_PUBLIC_KEYS"):
        yield Problem(
            "CRM_SERVICE_PUBLIC_KEYS",
            "unset: the services' public keys would be derived from the token "
            "secret; set it from the crm-service-public-keys Secret",
        )
    if link := environ.get("CRM_LINK_SECRET"):
        yield from _weak("CRM_LINK_SECRET", link)
    else:
        yield Problem(
            "CRM_LINK_SECRET",
            "unset: signed links (surveys, unsubscribe, receipts) would use a secret "
            "generated into var/link-secret, a different one in every pod; set it "
            "from the crm-links Secret",
        )


def _ring_problems(text: str) -> Iterator[Problem]:
    try:
        document = json.loads(text)
        keys = {kid: value["secret"] if isinstance(value, dict) else value for kid, value in document["keys"].items()}
        signing = document["signing"]
    except (ValueError, KeyError, TypeError, AttributeError):
        yield Problem("CRM_JWT_KEYS", 'not a key ring: {"signing": KID, "keys": {KID: {"secret": ...}}}')
        return
    if signing not in keys:
        yield Problem("CRM_JWT_KEYS", f"the signing kid {signing!r} is not one of the ring's keys")
    for kid, secret in keys.items():
        yield from _weak(f"CRM_JWT_KEYS (key {kid!r})", str(secret))


def _weak(variable: str, secret: str) -> Iterator[Problem]:
    if len(secret) < MIN_SECRET_LENGTH:
        yield Problem(variable, f"shorter than {MIN_SECRET_LENGTH} characters: too easy to guess")


def _infrastructure(environ: Mapping[str, str]) -> Iterator[Problem]:
    """Unset means the local stand-ins' address on 127.0.0.1, which no pod runs; and a Kafka
    without a login lets anyone write a forged event onto a topic (docs/operations.md, Kafka security)."""
    for variable, what in (("CRM_MONGO_URL", "MongoDB"), ("CRM_KAFKA_BOOTSTRAP", "Kafka")):
        if not environ.get(variable):
            yield Problem(
                variable, f"unset: {what} would be the local stand-in on 127.0.0.1; set it to the cluster's address"
            )
    protocol = environ.get("CRM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT" or (protocol == "SSL" and not environ.get("CRM_KAFKA_SSL_CERTFILE")):
        yield Problem(
            "CRM_KAFKA_SECURITY_PROTOCOL",
            "no login to Kafka: anyone who reaches the brokers could "
            "write to the topics; use SASL_SSL with the service's "
            "KafkaUser, or SSL with a client certificate (mTLS)",
        )


def _placeholders(environ: Mapping[str, str]) -> Iterator[Problem]:
    for variable, value in sorted(environ.items()):
        if variable.startswith("CRM_") and PLACEHOLDER in value:
            yield Problem(variable, f"still the {PLACEHOLDER} placeholder of deploy/k8s/secrets.example.yaml")
