"""The connections one process holds: MongoDB, the event store, and Kafka (lazily).

Created once per process (after gunicorn forks), shared by the REST views, the gRPC
servicers and the worker's loops of that process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from pymongo import MongoClient, timeout

from crmkit.config import Settings, kafka_client_options
from crmkit.events import RecordedEvent, Upcasters
from crmkit.eventstore import EventStore
from crmkit.publisher import Publisher, make_producer
from crmkit.shredding import KeyVault, PersonalData

log = logging.getLogger(__name__)

READY_TIMEOUT = 2.0  # seconds a readiness check may wait for a dependency
HANDOFF_CAPACITY = 10_000  # commits waiting for the background sender before we leave them to the sweeper


class Runtime:
    def __init__(
        self,
        settings: Settings,
        upcasters: Upcasters | None = None,
        personal_fields: Mapping[str, Sequence[str]] | None = None,
        references: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        kafka_client_options()  # a CRM_KAFKA_* security setting that cannot work stops the process here, at start
        self.mongo: MongoClient[dict[str, Any]] = MongoClient(
            settings.mongo_url,
            serverSelectionTimeoutMS=5000,
            connectTimeoutMS=3000,
            tz_aware=True,
            tzinfo=UTC,
            appname=f"crm-{settings.service}",
        )
        self.db = self.mongo[settings.database]
        self.vault = KeyVault(self.db["data_keys"])
        personal = PersonalData(self.vault, personal_fields) if personal_fields else None
        self.store = EventStore(self.db, settings.slug, upcasters, personal, references)
        self._publisher: Publisher | None = None
        self._lock = threading.Lock()
        self._handoff: queue.Queue[list[RecordedEvent] | None] = queue.Queue(maxsize=HANDOFF_CAPACITY)
        self._sender: threading.Thread | None = None
        self._sender_lock = threading.Lock()
        self._probe = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readiness")
        self._metadata: KafkaConsumer | None = None

    @property
    def publisher(self) -> Publisher:
        with self._lock:
            if self._publisher is None:

                def producer() -> KafkaProducer:
                    return make_producer(self.settings.kafka_bootstrap, f"crm-{self.settings.slug}-{os.getpid()}")

                self._publisher = Publisher(self.store, producer(), self.settings.topic, renew=producer)
            return self._publisher

    def publish(self, events: Sequence[RecordedEvent]) -> None:
        """Hand committed events to a background sender, so a request never waits for Kafka.

        The events are already committed; if the queue is full or Kafka is away, they stay
        in the outbox and the worker's sweeper sends them.
        """
        with self._sender_lock:  # not self._lock: that one is held while a producer connects to Kafka
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_loop, name="outbox-sender", daemon=True)
                self._sender.start()
        try:
            self._handoff.put_nowait(list(events))
        except queue.Full:
            log.warning("publish queue full; the sweeper will send these", extra={"count": len(events)})

    def flush(self) -> None:
        """Wait until everything handed to `publish` is acknowledged by Kafka (tests, shutdown)."""
        if self._sender is not None:
            self._handoff.join()
        if self._publisher is not None:
            self._publisher.flush()

    def _send_loop(self) -> None:
        while (events := self._handoff.get()) is not None:
            try:
                self.publisher.publish(events)
            except Exception as exc:  # Kafka away or slow: the outbox keeps them for the sweeper
                log.warning("Kafka unavailable; events stay in the outbox", extra={"error": repr(exc)})
            finally:
                self._handoff.task_done()
        self._handoff.task_done()

    def mongo_problem(self) -> str | None:
        try:
            with timeout(READY_TIMEOUT):  # answer the probe in time, rather than after server selection gives up
                self.mongo.admin.command("ping")
            return None
        except Exception as exc:  # any failure means not ready; the reason is reported
            return f"MongoDB unreachable: {exc.__class__.__name__}"

    def kafka_problem(self) -> str | None:
        """Ask the cluster (not a cache) whether our topic exists, within READY_TIMEOUT.

        A metadata request that never auto-creates the topic, on a thread of its own, so
        a hung broker makes the probe say "not ready" in time instead of hanging it.
        """
        try:
            topics = self._probe.submit(self._cluster_topics).result(timeout=READY_TIMEOUT)
        except FutureTimeout:
            return f"Kafka did not answer within {READY_TIMEOUT:g}s"
        except Exception as exc:
            return f"Kafka unreachable: {exc.__class__.__name__}"
        if self.settings.topic not in topics:
            return f"Kafka topic {self.settings.topic} does not exist"
        return None

    def _cluster_topics(self) -> set[str]:
        if self._metadata is None:
            budget = int(READY_TIMEOUT * 1000)  # a stuck probe thread would outlive the probe and delay exit
            self._metadata = KafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                client_id=f"crm-{self.settings.service}-readiness",
                allow_auto_create_topics=False,
                bootstrap_timeout_ms=budget,
                request_timeout_ms=budget,
                **kafka_client_options(),
            )
        return self._metadata.topics()  # a live metadata request every time

    def close(self) -> None:
        """Finish handing over what requests committed, then let go of every connection."""
        if self._sender is not None:
            with contextlib.suppress(queue.Full):  # a full queue: the sender is stuck, the sweeper has them
                self._handoff.put_nowait(None)
            self._sender.join(timeout=15)
        if self._lock.acquire(timeout=1):
            try:
                self._close_clients()
            finally:
                self._lock.release()
        else:  # a producer is still trying to reach Kafka: what it would have sent stays in the outbox
            log.warning("Kafka unreachable at shutdown; unsent events stay in the outbox")
        self._probe.shutdown(wait=False)
        self.mongo.close()

    def _close_clients(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        if self._metadata is not None:
            self._metadata.close()
            self._metadata = None
