"""The messaging service's own settings, all from the environment (see docs/messaging.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path

from crm_messaging.domain import parse_window
from crm_messaging.providers import FileSink, HttpGatewayProvider, Provider, SmtpProvider
from crmkit.config import data_dir


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"CRM_MESSAGING_{name}", default)


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
    max_attempts: int
    backoff_base: float
    backoff_cap: float
    rate_per_minute: dict[str, int] = field(default_factory=dict)
    quiet_hours: dict[str, str] = field(default_factory=dict)
    receipt_secret: str = ""

    @classmethod
    def from_env(cls) -> MessagingConfig:
        home = data_dir() / "messaging"
        return cls(
            email_provider=_env("EMAIL_PROVIDER", "smtp"),
            sms_provider=_env("SMS_PROVIDER", "file"),
            fax_provider=_env("FAX_PROVIDER", "file"),
            smtp_host=_env("SMTP_HOST", "127.0.0.1"),
            smtp_port=int(_env("SMTP_PORT", "8025")),
            smtp_tls=_env("SMTP_TLS", "none"),
            smtp_username=_env("SMTP_USERNAME"),
            smtp_password=_env("SMTP_PASSWORD"),
            smtp_from=_env("SMTP_FROM", "CRM <crm@localhost>"),
            smtp_sink=_env("SMTP_SINK", "true").lower() in ("1", "true", "yes"),
            mail_dir=Path(_env("MAIL_DIR", str(home / "mail"))),
            outbox_dir=Path(_env("OUTBOX_DIR", str(home / "outbox"))),
            public_url=_env("PUBLIC_URL", "http://127.0.0.1:8004").rstrip("/"),
            survey_url=os.environ.get("CRM_SURVEY_URL_BASE", "http://127.0.0.1:8003").rstrip("/") + "/v1/surveys",
            max_attempts=int(_env("MAX_ATTEMPTS", "6")),
            backoff_base=float(_env("BACKOFF_SECONDS", "30")),
            backoff_cap=float(_env("BACKOFF_CAP_SECONDS", "3600")),
            rate_per_minute={ch: int(_env(f"{ch.upper()}_PER_MINUTE", d))
                             for ch, d in (("email", "6000"), ("sms", "600"), ("fax", "60"))},
            quiet_hours={ch: _env(f"{ch.upper()}_QUIET_HOURS", d)
                         for ch, d in (("email", "off"), ("sms", "21:00-08:00"), ("fax", "21:00-08:00"))},
            receipt_secret=_env("RECEIPT_SECRET"),
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
