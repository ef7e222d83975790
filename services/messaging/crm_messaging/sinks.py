"""The local SMTP server `crm up` starts for the messaging service (`crm serve messaging
smtp-sink`): it accepts every mail and writes it as an .eml file a person can open,
under var/messaging/mail/ (CRM_MESSAGING_MAIL_DIR). Tests start it on a free port.

The same Message-ID twice is one file, as real receivers keep one mail; but every mail
accepted is also a line (its Message-ID) in `deliveries.log` there, so a test or a drill
can count how many times each message was handed over.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from crmkit import logs, stack

log = logging.getLogger(__name__)
logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every sender and recipient at info
SAFE = re.compile(r"[^A-Za-z0-9._-]")
DELIVERIES = "deliveries.log"  # one line per mail accepted: the (file-safe) Message-ID


class _Writer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook
        self.folder.mkdir(parents=True, exist_ok=True)
        raw: bytes = envelope.original_content or envelope.content
        message_id = re.search(rb"^Message-ID:\s*<([^>]+)>", raw, re.IGNORECASE | re.MULTILINE)
        name = SAFE.sub("_", message_id.group(1).decode("ascii", "replace")) if message_id else None
        path = self.folder / f"{name or threading.get_ident()}.eml"
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(raw)
        temporary.replace(path)  # the same Message-ID twice is one file: a retried send is no second mail
        with (self.folder / DELIVERIES).open("a", encoding="ascii") as log_file:
            log_file.write(f"{name or path.stem}\n")
        return "250 Message accepted for delivery"


class SmtpSink:
    """An aiosmtpd server writing .eml files; `start()`/`stop()` or use as a context manager."""

    def __init__(self, folder: Path, port: int, host: str = "127.0.0.1") -> None:
        self.folder = folder
        self.controller = Controller(_Writer(folder), hostname=host, port=port)

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def serve(service: str) -> None:
    """The `smtp-sink` process: serve until SIGTERM/SIGINT."""
    from crm_messaging.config import current

    config = current()
    logs.configure(service, "smtp-sink")
    stop = stack.stop_on_signals()
    with SmtpSink(config.mail_dir, config.smtp_port, config.smtp_host):
        log.info("SMTP sink writing .eml files", extra={"url": f"smtp://{config.smtp_host}:{config.smtp_port}"})
        stop.wait()
