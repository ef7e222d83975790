"""The service desk's own settings, every one from the environment here (README: Configuration).

Built when a process starts (`ServiceSpec.configure`: a value that cannot work stops it,
naming every bad variable) and reached through `current()` by the code that needs one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from crm_servicedesk.domain import TYPES
from crmkit.settings import Current, Env, load


@dataclass(frozen=True)
class InboundConfig:
    """The support mailbox and the SMS webhook (CRM_SERVICEDESK_INBOUND_*)."""

    smtp_host: str
    smtp_port: int
    max_bytes: int  # a larger mail is refused with 552
    ticket_type: str  # the type of a ticket opened by mail or SMS
    sms_reply_hours: float  # an SMS within this long of the contact's latest SMS ticket is a reply to it
    secret: str  # CRM_SERVICEDESK_INBOUND_SECRET: the SMS webhook's shared secret ("" = derived)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InboundConfig:
        """From `environ` (default: the process's); SettingsError names every bad variable."""
        return load(cls.read, environ)

    @classmethod
    def read(cls, env: Env) -> InboundConfig:
        prefix = "CRM_SERVICEDESK_INBOUND_"
        return cls(
            smtp_host=env.text(f"{prefix}SMTP_HOST") or "127.0.0.1",
            smtp_port=env.integer(f"{prefix}SMTP_PORT", 2525, minimum=0, maximum=65535),
            max_bytes=env.integer(f"{prefix}MAX_BYTES", 10 * 1024 * 1024, minimum=1),
            ticket_type=env.choice(f"{prefix}TYPE", "question", TYPES),
            sms_reply_hours=env.number(f"{prefix}SMS_REPLY_HOURS", 72, minimum=0),
            secret=env.text(f"{prefix}SECRET"),
        )


@dataclass(frozen=True)
class ServiceDeskSettings:
    sweep_seconds: float  # CRM_SERVICEDESK_SWEEP_SECONDS: how often the worker sweeps for SLA breaches
    recompute_seconds: float  # CRM_SERVICEDESK_RECOMPUTE_SECONDS: how often it checks for a policy change
    inbound: InboundConfig

    @classmethod
    def read(cls, env: Env) -> ServiceDeskSettings:
        return cls(
            sweep_seconds=env.number("CRM_SERVICEDESK_SWEEP_SECONDS", 5, above=0),
            recompute_seconds=env.number("CRM_SERVICEDESK_RECOMPUTE_SECONDS", 10, above=0),
            inbound=InboundConfig.read(env),
        )


current = Current(ServiceDeskSettings.read)
"""The settings now (built once per environment): `settings.current().sweep_seconds`."""
