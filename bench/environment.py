"""The servers and the contacts api process a bench run measures, on free ports in a temp dir.

Everything started here is registered on an ExitStack before anything else can fail,
so it is stopped on success, on error, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from crmkit import auth, stack

SERVICE = "contacts"
DATABASE = "bench_contacts"
TOPIC = "bench.contacts.events"
API_WORKERS = "2"  # gunicorn's default for our api (crmkit.gunicorn_conf), stated so the figure is reproducible
API_THREADS = "4"


@dataclass(frozen=True)
class Environment:
    home: Path
    kafka_bootstrap: str
    mongo_url: str
    api_url: str
    token: str
    env: dict[str, str]  # what the api process got; the bench process points its own runtime there too


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    """Poll GET /readyz until it answers 200 (Mongo and Kafka reachable), within `timeout`."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the contacts api exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"{exc.code} {exc.read()[:200]!r}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise TimeoutError(f"the contacts api was not ready after {timeout}s: {last}")


@contextlib.contextmanager
def started(keep: bool = False) -> Iterator[Environment]:
    """Kafka, MongoDB and `crm serve contacts api`, all stopped (and the temp dir removed) on exit."""
    home = Path(tempfile.mkdtemp(prefix="crm-bench-"))
    failed = True
    with contextlib.ExitStack() as cleanup:
        try:
            kafka_port, mongo_port, http_port = stack.free_port(), stack.free_port(), stack.free_port()
            kafka = stack.start_kafka(kafka_port, home / "log")
            cleanup.callback(stack.stop_process, kafka)
            mongo = stack.start_mongo(mongo_port, home / "mongo", home / "log")
            cleanup.callback(stack.stop_process, mongo)
            bootstrap, mongo_url = f"127.0.0.1:{kafka_port}", f"mongodb://127.0.0.1:{mongo_port}"
            stack.ensure_topics(bootstrap, [TOPIC])  # what `crm up` does before starting services

            secret = "bench-" + os.urandom(16).hex()
            env = {
                "CRM_KAFKA_BOOTSTRAP": bootstrap,
                "CRM_MONGO_URL": mongo_url,
                "CRM_DATA_DIR": str(home / "var"),
                "CRM_JWT_SECRET": secret,
                "CRM_CONTACTS_HTTP_PORT": str(http_port),
                "CRM_CONTACTS_DATABASE": DATABASE,
                "CRM_CONTACTS_TOPIC": TOPIC,
                "CRM_API_WORKERS": API_WORKERS,
                "CRM_API_THREADS": API_THREADS,
                "CRM_RATE_LIMIT_PER_MINUTE": "0",  # measure the service, not the limiter
                "CRM_LOG_LEVEL": "WARNING",
            }
            with open(home / "log" / "contacts-api.log", "ab") as output:
                api = subprocess.Popen(
                    [sys.executable, "-m", "crmkit.cli", "serve", SERVICE, "api"],
                    env={**os.environ, **env},
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            cleanup.callback(stack.stop_process, api)
            api_url = f"http://127.0.0.1:{http_port}"
            wait_ready(api_url, api)
            token = auth.issue(secret, "bench", ["admin"], ttl_seconds=3600)
            yield Environment(home, bootstrap, mongo_url, api_url, token, env)
            failed = False
        finally:
            cleanup.close()  # stop everything before deciding about the logs
            if failed or keep:
                print(f"bench: servers' logs kept in {home / 'log'}", file=sys.stderr)
            else:
                shutil.rmtree(home, ignore_errors=True)
