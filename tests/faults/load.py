"""A steady write load for the fault suite, run as its own process (`python load.py CONFIG`).

It plays a well-behaved client of the contacts and messaging APIs while processes die
around it: each unit of work creates a contact, moves its lifecycle stage, grants email
and sms consent, and sends it one email and one sms. Every write is retried until it is
answered 2xx (creates with the same Idempotency-Key, so a retry never makes a second
record); every 2xx answer is appended to the results file at once, one JSON line each,
so what the servers acknowledged survives whatever happens to this process.

SIGTERM asks it to stop: the unit in hand is finished (retrying until `finish_within`
seconds have passed), then it exits. A write still unanswered then is written down as
`unresolved`. CONFIG is a JSON file: contacts_url, messaging_url, token, out, threads,
finish_within.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RETRY_PAUSE = 0.2  # seconds between tries of one write (a server restarting, a key still running)
REQUEST_TIMEOUT = 10.0
RETRIED = (0, 409, 429)  # no answer, the key's first request still running, slow down (and every 5xx)


class Unresolved(Exception):
    """The write was still unanswered when the time to finish ran out."""


@dataclass
class Client:
    contacts_url: str
    messaging_url: str
    token: str
    out: Any  # the results file, shared by the threads
    lock: threading.Lock
    stop: threading.Event
    finish_by: list[float]  # [monotonic deadline], set when stop is asked

    def unit(self, n: int) -> None:
        """One customer's worth of writes across both services."""
        contact = self.write(
            "contact",
            "POST",
            f"{self.contacts_url}/v1/contacts",
            {
                "first_name": f"Load{n}",
                "last_name": "Fault",
                "email": f"load{n}@example.com",
                "phone": f"+98912{n:07d}",
                "lifecycle_stage": "lead",
            },
            key=True,
        )
        cid = contact["id"]
        self.write(
            "stage", "PATCH", f"{self.contacts_url}/v1/contacts/{cid}", {"lifecycle_stage": "marketing_qualified_lead"}
        )
        for channel in ("email", "sms"):
            self.write(
                "consent",
                "PUT",
                f"{self.contacts_url}/v1/contacts/{cid}/consents/{channel}",
                {"status": "granted", "source": "fault-suite"},
            )
        self.write(
            "message",
            "POST",
            f"{self.messaging_url}/v1/messages",
            {
                "contact_id": cid,
                "channel": "email",
                "category": "transactional",
                "subject": "Your order {{ first_name }}",
                "body": "Hello {{ first_name }}, it shipped.",
            },
            key=True,
        )
        self.write(
            "message",
            "POST",
            f"{self.messaging_url}/v1/messages",
            {"contact_id": cid, "channel": "sms", "category": "transactional", "body": "Shipped, {{ first_name }}."},
            key=True,
        )

    def write(self, kind: str, method: str, url: str, body: dict[str, Any], *, key: bool = False) -> dict[str, Any]:
        """Send until 2xx; no answer, 409, 429 and 5xx are retried, another 4xx ends this thread."""
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = str(uuid.uuid4())
        data = json.dumps(body).encode()
        tries = 0
        while True:
            tries += 1
            status, answer = _call(method, url, data, headers)
            if 200 <= status < 300:
                self.record(
                    {
                        "kind": kind,
                        "status": status,
                        "id": answer.get("id"),
                        "version": answer.get("version"),
                        "key": headers.get("Idempotency-Key"),
                        "tries": tries,
                    }
                )
                return answer
            if status not in RETRIED and status < 500:
                self.record({"kind": kind, "status": status, "rejected": answer, "url": url})
                raise Unresolved(f"{method} {url} answered {status}")
            if self.finish_by and time.monotonic() > self.finish_by[0]:
                self.record({"kind": kind, "unresolved": True, "last_status": status, "url": url, "tries": tries})
                raise Unresolved(f"{method} {url} still unanswered")
            time.sleep(RETRY_PAUSE)

    def record(self, line: dict[str, Any]) -> None:
        with self.lock:
            self.out.write(json.dumps(line) + "\n")
            self.out.flush()

    def run(self, first: int, step: int) -> None:
        n = first
        while not self.stop.is_set():
            try:
                self.unit(n)
            except Unresolved:
                return
            n += step


def _call(method: str, url: str, data: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """(status, JSON answer); status 0 when no answer came (refused, reset, timed out)."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"{}")
        except (ValueError, OSError):
            return error.code, {}
    except (OSError, ValueError):  # URLError, resets, timeouts, a torn answer
        return 0, {}


def main(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text())
    stop = threading.Event()
    finish_by: list[float] = []

    def on_term(*_: object) -> None:
        finish_by.append(time.monotonic() + float(config["finish_within"]))
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    threads = int(config["threads"])
    with open(config["out"], "a", encoding="utf-8") as out:
        client = Client(
            config["contacts_url"], config["messaging_url"], config["token"], out, threading.Lock(), stop, finish_by
        )
        workers = [threading.Thread(target=client.run, args=(n, threads), daemon=True) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            while worker.is_alive():
                worker.join(timeout=0.5)  # short joins: the signal handler runs between them
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
