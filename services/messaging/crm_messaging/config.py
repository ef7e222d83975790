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
from crmkit.config import data_dir
from crmkit.profile import Problem, is_local_host, url_problems


def _env(name: str, default: str = "", environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(f"CRM_MESSAGING_{name}", default)


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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> MessagingConfig:
        home = data_dir() / "messaging"

        def env(name: str, default: str = "") -> str:
            return _env(name, default, environ)

        return cls(
            email_provider=env("EMAIL_PROVIDER", "smtp"),
            sms_provider=env("SMS_PROVIDER", "file"),
            fax_provider=env("FAX_PROVIDER", "file"),
            smtp_host=env("SMTP_HOST", "127.0.0.1"),
            smtp_port=int(env("SMTP_PORT", "8025")),
            smtp_tls=env("SMTP_TLS", "none"),
            smtp_username=env("SMTP_USERNAME"),
            smtp_password=env("SMTP_PASSWORD"),
            smtp_from=env("SMTP_FROM", "CRM <crm@localhost>"),
            smtp_sink=env("SMTP_SINK", "true").lower() in ("1", "true", "yes"),
            mail_dir=Path(env("MAIL_DIR", str(home / "mail"))),
            outbox_dir=Path(env("OUTBOX_DIR", str(home / "outbox"))),
            public_url=env("PUBLIC_URL", "http://127.0.0.1:8004").rstrip("/"),
            survey_url=environ.get("CRM_SURVEY_URL_BASE", "http://127.0.0.1:8003").rstrip("/") + "/v1/surveys",
            details_url=environ.get("CRM_DETAILS_URL_BASE", "http://127.0.0.1:8001").rstrip("/") + "/v1/confirmations",
            max_attempts=int(env("MAX_ATTEMPTS", "6")),
            backoff_base=float(env("BACKOFF_SECONDS", "30")),
            backoff_cap=float(env("BACKOFF_CAP_SECONDS", "3600")),
            rate_per_minute={ch: int(env(f"{ch.upper()}_PER_MINUTE", d))
                             for ch, d in (("email", "6000"), ("sms", "600"), ("fax", "60"))},
            quiet_hours={ch: env(f"{ch.upper()}_QUIET_HOURS", d)
                         for ch, d in (("email", "off"), ("sms", "21:00-08:00"), ("fax", "21:00-08:00"))},
            receipt_secret=env("RECEIPT_SECRET"),
            render_limits=RenderLimits(subject_bytes=int(env("MAX_SUBJECT_BYTES", "998")),
                                       body_bytes=int(env("MAX_BODY_BYTES", str(1 << 20))),
                                       loop_iterations=int(env("MAX_LOOP_ITERATIONS", "10000")),
                                       seconds=float(env("MAX_RENDER_SECONDS", "1"))),
        )

    def window(self, channel: str) -> tuple[time, time] | None:
        return parse_window(self.quiet_hours.get(channel, "off"))

    def providers(self) -> dict[str, Provider]:
        email = SmtpProvider(self.smtp_host, self.smtp_port, self.smtp_from, tls=self.smtp_tls,
                             username=self.smtp_username, password=self.smtp_password)
        return {"email": email, "sms": self._gateway("sms", self.sms_provider),
                "fax": self._gateway("fax", self.fax_provider)}

    def _gateway(self, channel: str, kind: str) -> Provider:
        if kind == "http":
            key = channel.upper()
            return HttpGatewayProvider(channel, _env(f"{key}_URL"), _env(f"{key}_USERNAME"),
                                       _env(f"{key}_PASSWORD"), _env(f"{key}_FROM", "CRM"),
                                       timeout=float(_env(f"{key}_TIMEOUT_SECONDS", "10")))
        return FileSink(channel, self.outbox_dir / channel)


def production_problems(environ: Mapping[str, str]) -> list[Problem]:
    """What messaging refuses to start with in production (crmkit.profile): links that no
    recipient can open, and messages marked sent that nobody receives."""
    config = MessagingConfig.from_env(environ)
    return [
        *url_problems("CRM_MESSAGING_PUBLIC_URL", environ,
                      "unsubscribe links must open from outside: set it to your ingress for messaging"),
        *url_problems("CRM_SURVEY_URL_BASE", environ,
                      "survey links must open from outside: set it to your ingress for the service desk"),
        *url_problems("CRM_DETAILS_URL_BASE", environ,
                      "links to confirm one's details must open from outside: set it to your ingress for contacts"),
        *_email_problems(config, environ),
        *_gateway_problems("sms", config.sms_provider, environ),
        *_gateway_problems("fax", config.fax_provider, environ),
    ]


def _email_problems(config: MessagingConfig, environ: Mapping[str, str]) -> list[Problem]:
    found = []
    if config.smtp_sink:
        found.append(Problem("CRM_MESSAGING_SMTP_SINK", "true (the default) means the local SMTP sink, which keeps "
                                                        "mail in files and delivers none; set false"))
    if not _env("SMTP_HOST", environ=environ) or is_local_host(config.smtp_host):
        found.append(Problem("CRM_MESSAGING_SMTP_HOST", "unset or this machine (where the local sink listens): "
                                                        "set it to your mail server"))
    if config.smtp_password and config.smtp_tls == "none":
        found.append(Problem("CRM_MESSAGING_SMTP_TLS", "none while a password is set: the password would cross "
                                                       "the network in clear; use starttls or ssl"))
    return found


def _gateway_problems(channel: str, kind: str, environ: Mapping[str, str]) -> list[Problem]:
    """An SMS/fax channel needs the http gateway, its https URL and its credentials."""
    key = f"CRM_MESSAGING_{channel.upper()}"
    if kind != "http":
        what = "the file provider" if kind == "file" else "not a provider, so the file one"
        return [Problem(f"{key}_PROVIDER", f"{kind!r} is {what}: every {channel} is written under var/ and marked "
                                           f"sent, never delivered; use http (a gateway) with {key}_URL")]
    found = url_problems(f"{key}_URL", environ, f"set it to your {channel} gateway")
    found += [Problem(variable, f"unset: the {channel} gateway would be called without credentials; set it in the "
                                "crm-messaging-providers Secret")
              for variable in (f"{key}_USERNAME", f"{key}_PASSWORD") if not environ.get(variable)]
    return found
