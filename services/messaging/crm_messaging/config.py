"""The messaging service's own settings, all from the environment (see docs/messaging.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path

from crm_messaging.domain import parse_window
from crm_messaging.providers import FileSink, HttpGatewayProvider, Provider, SmtpProvider
from crm_messaging.templates import RenderLimits
from crmkit.config import data_dir, topic_of
from crmkit.profile import Problem, is_local_host, url_problems
from crmkit.settings import Current, Env, load


def _env(name: str, default: str = "", environ: Mapping[str, str] | None = None) -> str:
    return (os.environ if environ is None else environ).get(f"CRM_MESSAGING_{name}", default)


@dataclass(frozen=True)
class Gateway:
    """An HTTP SMS/fax gateway (CRM_MESSAGING_<CHANNEL>_URL, _USERNAME, _PASSWORD, _FROM, _TIMEOUT_SECONDS)."""

    url: str = ""
    username: str = ""
    password: str = ""
    sender: str = "CRM"
    timeout: float = 10.0


@dataclass(frozen=True)
class MessagingConfig:
    email_provider: str  # smtp (local default: the SMTP sink)
    sms_provider: str  # file | http
    fax_provider: str
    smtp_host: str
    smtp_port: int
    smtp_tls: str
    smtp_username: str
    smtp_password: str
    smtp_from: str
    smtp_sink: bool  # crm up starts the local SMTP sink on smtp_host:smtp_port
    mail_dir: Path
    outbox_dir: Path
    public_url: str  # where recipients reach this service (unsubscribe links)
    survey_url: str  # the service desk's survey pages: <base>/v1/surveys (a link adds /<token>)
    details_url: str  # the contacts service's pages to confirm one's details: <base>/v1/confirmations
    max_attempts: int
    backoff_base: float
    backoff_cap: float
    rate_per_minute: dict[str, int] = field(default_factory=dict)
    quiet_hours: dict[str, str] = field(default_factory=dict)
    receipt_secret: str = ""
    render_limits: RenderLimits = field(default_factory=RenderLimits)  # what one render may cost (templates.py)
    gateways: dict[str, Gateway] = field(default_factory=dict)  # the http provider's gateway per channel
    # the topics triggers follow (CRM_MESSAGING_TRIGGER_TOPICS; default: each source's, crmkit.config.topic_of)
    trigger_topics: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MessagingConfig:
        """From `environ` (default: the process's); SettingsError names every bad variable."""
        return load(cls.read, environ)

    @classmethod
    def read(cls, env: Env) -> MessagingConfig:
        home = data_dir() / "messaging"

        def text(name: str, default: str = "") -> str:
            return env.text(f"CRM_MESSAGING_{name}", default)

        def integer(name: str, default: int) -> int:
            return env.integer(f"CRM_MESSAGING_{name}", default, minimum=0)

        def number(name: str, default: float) -> float:
            return env.number(f"CRM_MESSAGING_{name}", default, minimum=0)

        return cls(
            email_provider=text("EMAIL_PROVIDER", "smtp"),
            sms_provider=text("SMS_PROVIDER", "file"),
            fax_provider=text("FAX_PROVIDER", "file"),
            smtp_host=text("SMTP_HOST", "127.0.0.1"),
            smtp_port=env.integer("CRM_MESSAGING_SMTP_PORT", 8025, minimum=0, maximum=65535),
            smtp_tls=text("SMTP_TLS", "none"),
            smtp_username=text("SMTP_USERNAME"),
            smtp_password=text("SMTP_PASSWORD"),
            smtp_from=text("SMTP_FROM", "CRM <crm@localhost>"),
            smtp_sink=text("SMTP_SINK", "true").lower() in ("1", "true", "yes"),
            mail_dir=Path(text("MAIL_DIR", str(home / "mail"))),
            outbox_dir=Path(text("OUTBOX_DIR", str(home / "outbox"))),
            public_url=text("PUBLIC_URL", "http://127.0.0.1:8004").rstrip("/"),
            survey_url=env.text("CRM_SURVEY_URL_BASE", "http://127.0.0.1:8003").rstrip("/") + "/v1/surveys",
            details_url=env.text("CRM_DETAILS_URL_BASE", "http://127.0.0.1:8001").rstrip("/") + "/v1/confirmations",
            max_attempts=integer("MAX_ATTEMPTS", 6),
            backoff_base=number("BACKOFF_SECONDS", 30),
            backoff_cap=number("BACKOFF_CAP_SECONDS", 3600),
            rate_per_minute={
                ch: integer(f"{ch.upper()}_PER_MINUTE", d) for ch, d in (("email", 6000), ("sms", 600), ("fax", 60))
            },
            quiet_hours={
                ch: text(f"{ch.upper()}_QUIET_HOURS", d)
                for ch, d in (("email", "off"), ("sms", "21:00-08:00"), ("fax", "21:00-08:00"))
            },
            receipt_secret=text("RECEIPT_SECRET"),
            render_limits=RenderLimits(
                subject_bytes=integer("MAX_SUBJECT_BYTES", 998),
                body_bytes=integer("MAX_BODY_BYTES", 1 << 20),
                loop_iterations=integer("MAX_LOOP_ITERATIONS", 10000),
                seconds=number("MAX_RENDER_SECONDS", 1),
            ),
            gateways={
                ch: Gateway(
                    text(f"{ch.upper()}_URL"),
                    text(f"{ch.upper()}_USERNAME"),
                    text(f"{ch.upper()}_PASSWORD"),
                    text(f"{ch.upper()}_FROM", "CRM"),
                    number(f"{ch.upper()}_TIMEOUT_SECONDS", 10),
                )
                for ch in ("sms", "fax")
            },
            trigger_topics=tuple(
                topic.strip()
                for topic in text(
                    "TRIGGER_TOPICS", ",".join(topic_of(source, env) for source in TRIGGER_SOURCES)
                ).split(",")
                if topic.strip()
            ),
        )

    def window(self, channel: str) -> tuple[time, time] | None:
        return parse_window(self.quiet_hours.get(channel, "off"))

    def providers(self) -> dict[str, Provider]:
        email = SmtpProvider(
            self.smtp_host,
            self.smtp_port,
            self.smtp_from,
            tls=self.smtp_tls,
            username=self.smtp_username,
            password=self.smtp_password,
        )
        return {
            "email": email,
            "sms": self._gateway("sms", self.sms_provider),
            "fax": self._gateway("fax", self.fax_provider),
        }

    def _gateway(self, channel: str, kind: str) -> Provider:
        if kind == "http":
            gateway = self.gateways.get(channel, Gateway())
            return HttpGatewayProvider(
                channel, gateway.url, gateway.username, gateway.password, gateway.sender, timeout=gateway.timeout
            )
        return FileSink(channel, self.outbox_dir / channel)


TRIGGER_SOURCES = ("service-desk", "sales", "contacts")  # whose topics triggers follow by default
current = Current(MessagingConfig.read)
"""The settings now (built once per environment): `config.current().max_attempts`."""


def production_problems(environ: Mapping[str, str]) -> list[Problem]:
    """What messaging refuses to start with in production (crmkit.profile): links that no
    recipient can open, and messages marked sent that nobody receives."""
    config = MessagingConfig.from_env(environ)
    return [
        *url_problems(
            "CRM_MESSAGING_PUBLIC_URL",
            environ,
            "unsubscribe links must open from outside: set it to your ingress for messaging",
        ),
        *url_problems(
            "CRM_SURVEY_URL_BASE",
            environ,
            "survey links must open from outside: set it to your ingress for the service desk",
        ),
        *url_problems(
            "CRM_DETAILS_URL_BASE",
            environ,
            "links to confirm one's details must open from outside: set it to your ingress for contacts",
        ),
        *_email_problems(config, environ),
        *_gateway_problems("sms", config.sms_provider, environ),
        *_gateway_problems("fax", config.fax_provider, environ),
    ]


def _email_problems(config: MessagingConfig, environ: Mapping[str, str]) -> list[Problem]:
    found = []
    if config.smtp_sink:
        found.append(
            Problem(
                "CRM_MESSAGING_SMTP_SINK",
                "true (the default) means the local SMTP sink, which keeps mail in files and delivers none; set false",
            )
        )
    if not _env("SMTP_HOST", environ=environ) or is_local_host(config.smtp_host):
        found.append(
            Problem(
                "CRM_MESSAGING_SMTP_HOST",
                "unset or this machine (where the local sink listens): set it to your mail server",
            )
        )
    if config.smtp_password and config.smtp_tls == "none":
        found.append(
            Problem(
                "CRM_MESSAGING_SMTP_TLS",
                "none while a password is set: the password would cross the network in clear; use starttls or ssl",
            )
        )
    return found


def _gateway_problems(channel: str, kind: str, environ: Mapping[str, str]) -> list[Problem]:
    """An SMS/fax channel needs the http gateway, its https URL and its credentials."""
    key = f"CRM_MESSAGING_{channel.upper()}"
    if kind != "http":
        what = "the file provider" if kind == "file" else "not a provider, so the file one"
        return [
            Problem(
                f"{key}_PROVIDER",
                f"{kind!r} is {what}: every {channel} is written under var/ and marked "
                f"sent, never delivered; use http (a gateway) with {key}_URL",
            )
        ]
    found = url_problems(f"{key}_URL", environ, f"set it to your {channel} gateway")
    found += [
        Problem(
            variable,
            f"unset: the {channel} gateway would be called without credentials; set it in the "
            "crm-messaging-providers Secret",
        )
        for variable in (f"{key}_USERNAME", f"{key}_PASSWORD")
        if not environ.get(variable)
    ]
    return found
