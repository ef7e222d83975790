"""The SMTP adapter against a real aiosmtpd server: one connection carries a busy period's
mails, a connection the server dropped is reopened once, refusals and outages map to
Permanent and Transient without spoiling the next send."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from crm_messaging.providers import Outgoing, Permanent, SmtpProvider, Transient
from crmkit import stack


class Recorder:
    """Keeps every accepted mail's Message-ID with the client connection (peer) it came on."""

    def __init__(self) -> None:
        self.mails: list[tuple[str, Any]] = []

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self,
        server: Any,
        session: Any,
        envelope: Any,
        address: str,
        options: list[str],
    ) -> str:
        if address.startswith("nobody@"):
            return "550 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        text = envelope.content.decode("utf-8", "replace")
        message_id = next(
            line.split(":", 1)[1].strip() for line in text.splitlines() if line.lower().startswith("message-id:")
        )
        self.mails.append((message_id, session.peer))
        return "250 Message accepted for delivery"

    def connections(self) -> int:
        return len({peer for _, peer in self.mails})


class Server:
    def __init__(self) -> None:
        self.port = stack.free_port()
        self.recorder = Recorder()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    running.start()
    yield running
    running.stop()


def mail(key: str, to: str = "sara@example.com") -> Outgoing:
    return Outgoing(key, "email", to, "سلام", "متن پیام", None)


def test_a_busy_period_shares_one_connection_and_close_lets_it_go(server: Server) -> None:
    provider = SmtpProvider("127.0.0.1", server.port, "crm@example.com", timeout=5)
    ids = [provider.send(mail(f"m{i}")) for i in range(5)]
    assert [mid for mid, _ in server.recorder.mails] == ids == [f"<m{i}@crm.local>" for i in range(5)]
    assert server.recorder.connections() == 1
    provider.close()
    provider.send(mail("m5"))
    assert server.recorder.connections() == 2
    provider.close()


def test_a_connection_the_server_dropped_is_reopened_once_and_the_mail_goes(server: Server) -> None:
    provider = SmtpProvider("127.0.0.1", server.port, "crm@example.com", timeout=5)
    provider.send(mail("before"))
    server.stop()  # the server goes away (an idle timeout, a restart) while we keep the connection
    server.start()
    assert provider.send(mail("after")) == "<after@crm.local>"
    assert [mid for mid, _ in server.recorder.mails] == ["<before@crm.local>", "<after@crm.local>"]
    assert server.recorder.connections() == 2
    provider.close()


def test_an_outage_is_transient_and_the_next_send_connects_afresh(server: Server) -> None:
    provider = SmtpProvider("127.0.0.1", server.port, "crm@example.com", timeout=5)
    server.stop()
    with pytest.raises(Transient):
        provider.send(mail("during"))
    server.start()
    provider.send(mail("later"))
    assert [mid for mid, _ in server.recorder.mails] == ["<later@crm.local>"]
    provider.close()


def test_a_refused_recipient_is_permanent_and_the_next_mail_still_goes(server: Server) -> None:
    provider = SmtpProvider("127.0.0.1", server.port, "crm@example.com", timeout=5)
    with pytest.raises(Permanent, match="550"):
        provider.send(mail("refused", to="nobody@example.com"))
    provider.send(mail("fine"))
    assert [mid for mid, _ in server.recorder.mails] == ["<fine@crm.local>"]
    provider.close()
