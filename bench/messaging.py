"""Messages queued → sent per second through the messaging worker to the local sinks.

`run(env, messages=1000)` creates `messages` contacts with email and SMS consent in a
contacts database of its own (through `ContactBook`, the contacts service's use cases),
serves the contacts gRPC `ContactDirectory` in-process, queues one message per contact
(half email through real SMTP to the aiosmtpd sink, half SMS to the file sink) through
`MessageDesk.queue_message` (what POST /v1/messages runs), then runs the worker's
`Dispatcher` until every message is sent. Ours: messages per second from the first
dispatch to the last `MessageSent`, each with a gRPC consent check, a template render,
the provider call and a sealed event append, in batches of 500. Raw: plain `smtplib`
sends of similar mails to the same sink, on one kept connection (as the SMTP adapter
sends a batch) and with one connection each (what a send costs without any bookkeeping).

Standalone: `python -m bench.messaging [--messages N]` starts its own servers.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from bench.environment import Environment
from bench.stats import rate


def run(env: Environment, messages: int = 1000) -> dict[str, Any]:
    saved = dict(os.environ)  # the names below are this measurement's own; later ones get the environment back
    try:
        return _run(env, messages)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _run(env: Environment, messages: int) -> dict[str, Any]:
    from crm_contacts.app import SERVICE as CONTACTS
    from crm_contacts.grpc_api import register
    from crm_contacts.records.commands import ContactBook
    from crm_messaging.app import SERVICE as MESSAGING
    from crm_messaging.app import prepare
    from crm_messaging.commands import MessageDesk
    from crm_messaging.config import MessagingConfig
    from crm_messaging.dispatcher import Dispatcher
    from crm_messaging.sinks import SmtpSink
    from crmkit import rpc, stack
    from crmkit.events import Metadata

    home = Path(tempfile.mkdtemp(prefix="bench-messaging-"))
    grpc_port, smtp_port = stack.free_port(), stack.free_port()
    os.environ.update(
        {
            **env.env,
            "CRM_CONTACTS_DATABASE": "bench_msg_contacts",
            "CRM_CONTACTS_TOPIC": "bench.msg.contacts",
            "CRM_MESSAGING_DATABASE": "bench_messaging",
            "CRM_MESSAGING_TOPIC": "bench.messaging.events",
            "CRM_CONTACTS_GRPC_TARGET": f"127.0.0.1:{grpc_port}",
            "CRM_MESSAGING_SMTP_PORT": str(smtp_port),
            "CRM_MESSAGING_MAIL_DIR": str(home / "mail"),
            "CRM_MESSAGING_OUTBOX_DIR": str(home / "outbox"),
            "CRM_MESSAGING_SMS_QUIET_HOURS": "off",
            "CRM_MESSAGING_EMAIL_PER_MINUTE": "0",
            "CRM_MESSAGING_SMS_PER_MINUTE": "0",
            "CRM_SERVICE_NAME": "messaging",
        }
    )  # the dispatcher calls contacts as messaging
    contacts_rt, messaging_rt = CONTACTS.runtime(), MESSAGING.runtime()
    for runtime in (contacts_rt, messaging_rt):
        runtime.db.client.drop_database(runtime.settings.database)
    CONTACTS.prepare(contacts_rt)
    prepare(messaging_rt)
    book = ContactBook(contacts_rt)
    server, _ = rpc.build_server("contacts", grpc_port, lambda srv: register(srv, book))
    server.start()
    sink = SmtpSink(home / "mail", smtp_port).start()
    meta = Metadata(actor="bench", correlation_id="bench-messaging")
    try:
        ids = []
        for i in range(messages):
            contact = book.create_contact(
                {
                    "first_name": f"Bench{i}",
                    "last_name": "رضایی",
                    "email": f"bench{i}@example.org",
                    "phone": f"+98935{i:07d}",
                },
                meta,
            )
            for channel in ("email", "sms"):
                book.set_consent(contact.id, channel, {"status": "granted", "source": "bench"}, meta, None)
            ids.append(contact.id)
        desk = MessageDesk(messaging_rt, MessagingConfig.from_env())
        queued_at = time.perf_counter()
        for i, contact_id in enumerate(ids):
            channel = "email" if i % 2 == 0 else "sms"
            desk.queue_message(
                {
                    "contact_id": contact_id,
                    "channel": channel,
                    "subject": "Hi {{ first_name }}",
                    "body": "سلام {{ name }}, your code is {{ code }}",
                    "variables": {"code": i},
                    "category": "transactional",
                },
                meta,
            )
        queue_seconds = time.perf_counter() - queued_at
        dispatcher = Dispatcher(desk, batch=500)
        started = time.perf_counter()
        while dispatcher.run_once():
            pass
        seconds = time.perf_counter() - started
        sent = messaging_rt.db["schedule"].count_documents({"state": "done"})
        mails = len(list((home / "mail").glob("*.eml")))
        texts = len(list((home / "outbox" / "sms").glob("*.json")))
        if sent != messages or mails + texts != messages:
            raise RuntimeError(f"expected {messages} sends, got {sent} done, {mails} mails, {texts} texts")
        raw = min(messages, 500)
        raw_kept, raw_each = _raw_smtp(smtp_port, raw, reuse=True), _raw_smtp(smtp_port, raw, reuse=False)
    finally:
        sink.stop()
        server.stop(grace=None)
        contacts_rt.close()
        messaging_rt.close()
    return {
        "messages": messages,
        "queue_seconds": round(queue_seconds, 3),
        "queued_per_s": rate(messages, queue_seconds),
        "seconds": round(seconds, 3),
        "ours_sent_per_s": rate(messages, seconds),
        "emails": mails,
        "sms": texts,
        "raw": {
            "smtp_sends": raw,
            "smtp_per_s": rate(raw, raw_kept),
            "smtp_connection_each_per_s": rate(raw, raw_each),
        },
    }


def _raw_smtp(port: int, count: int, *, reuse: bool) -> float:
    started = time.perf_counter()
    client = smtplib.SMTP("127.0.0.1", port, timeout=10) if reuse else None
    for i in range(count):
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = "CRM <crm@localhost>", f"raw{i}@example.org", "Hi"
        mail["Message-ID"] = f"<raw-{reuse}-{i}@bench>"
        mail.set_content(f"سلام Bench{i} رضایی, your code is {i}", charset="utf-8")
        if client is not None:
            client.send_message(mail)
        else:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as single:
                single.send_message(mail)
    if client is not None:
        client.quit()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.messaging", description=__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    args = parser.parse_args(argv)
    from bench import environment

    with environment.started() as env:
        figures = run(env, args.messages)
    print(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
