"""Dead letters: records a projection will not or cannot apply, parked so it moves on.

A projector parks a record, in the service's `deadletters` collection, when

- it is refused on sight: not a CRM CloudEvent, or not an event of the service that
  owns the topic it was read from (its `source` or `type` names another service);
- or it failed on its own `attempts` times (a fold that raises, a reaction that keeps
  failing): the batch it came in was split, and only what fails alone is parked.

An outage is never parked: MongoDB or another service away is retried for as long as it
lasts (`is_transient`). A parked record keeps the envelope exactly as received, the
projection, where it was read (topic, partition, offset), the error (class and message,
with the event's own values masked), the attempts and the first and last failure. `crm
deadletters list|retry|drop` shows them, applies them again after a fix, or drops them
(docs/operations.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import grpc
from bson import Binary
from kafka.errors import KafkaError
from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError, WTimeoutError

from crmkit.config import topic_owner
from crmkit.errors import Unavailable
from crmkit.events import RecordedEvent, utcnow

COLLECTION = "deadletters"
MASK = "***"
MESSAGE_LIMIT = 300  # characters of an error message kept


class Refused(Exception):
    """A record no projection may apply, whatever the code: it is parked on first sight."""


class NotACrmEvent(Refused):
    pass


class ForeignEvent(Refused):
    def __init__(self, message: str, event: RecordedEvent) -> None:
        super().__init__(message)
        self.event = event  # what it claims to be (kept in the dead letter's summary)


class Applies(Protocol):
    """What a dead letter is applied through (a projection)."""

    def handle(self, events: Sequence[RecordedEvent]) -> None: ...


Reader = Callable[[list[RecordedEvent]], list[RecordedEvent]]

TRANSIENT_TYPES = (Unavailable, ConnectionFailure, ExecutionTimeout, WTimeoutError, ConnectionError, TimeoutError)
TRANSIENT_LABELS = ("RetryableWriteError", "TransientTransactionError")
TRANSIENT_GRPC = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is an outage (retry without end) rather than something wrong with the event.

    Transient: a dependency not answering: crmkit `Unavailable` (another service's gRPC
    down), pymongo connection failures (AutoReconnect, ServerSelectionTimeout, network
    timeouts, a primary stepping down), server or write-concern timeouts and errors MongoDB
    labels retryable, gRPC UNAVAILABLE/DEADLINE_EXCEEDED/RESOURCE_EXHAUSTED/ABORTED,
    Kafka errors it marks retriable, and OS-level connection errors and timeouts. The
    cause chain counts too: a projection that wraps an outage in its own error is still
    in an outage. An error that gathers others (an ExceptionGroup, or one with a
    `failures` mapping, like crmkit.directory's failed reactions) is an outage when every
    one of them is; when some are not, the batch is split and each is judged alone.
    Everything else (KeyError in a fold, a validation error, a duplicate key)
    says the event cannot be applied by this code, and is retried a few times, then parked.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _outage(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _outage(exc: BaseException) -> bool:
    gathered = _gathered(exc)
    if gathered:
        return all(is_transient(each) for each in gathered)
    if isinstance(exc, TRANSIENT_TYPES):
        return True
    if isinstance(exc, PyMongoError):
        return any(exc.has_error_label(label) for label in TRANSIENT_LABELS)
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        return exc.code() in TRANSIENT_GRPC
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


def _gathered(exc: BaseException) -> list[BaseException]:
    """The errors `exc` stands for, when it gathers several."""
    if isinstance(exc, BaseExceptionGroup):
        return list(exc.exceptions)
    failures = getattr(exc, "failures", None)
    if isinstance(failures, Mapping):
        return [each for each in failures.values() if isinstance(each, BaseException)]
    return []


def inspect(raw: bytes, owner: str | None) -> RecordedEvent:
    """The event in a record as received; `Refused` when it is none of ours or not `owner`'s.

    `owner` is the slug of the service that owns the topic (crmkit.config.topic_owner);
    None (a topic no service owns) accepts any CRM event.
    """
    try:
        envelope = json.loads(raw)
        event = RecordedEvent.from_cloudevent(envelope)
    except ValueError as exc:  # JSON, UTF-8 and envelope errors are all ValueErrors
        raise NotACrmEvent(f"not a CRM CloudEvent ({exc.__class__.__name__})") from None
    source = envelope.get("source")
    if owner is not None and (event.service != owner or source != f"crm/{owner}"):
        raise ForeignEvent(
            f"the topic belongs to {owner}; the record says source {_short(source)}, "
            f"type {_short(envelope.get('type'))}",
            event,
        )
    return event


def describe(exc: BaseException, event: RecordedEvent | None) -> dict[str, str]:
    """An error as a dead letter keeps it: class and message, the event's own values masked.

    Messages often quote what they choke on; the event's values are the only personal
    data a projection handles, so every string among them is replaced by `***`.
    """
    message = str(exc)
    for value in sorted(_strings(event.data if event else {}), key=len, reverse=True):
        if len(value) >= 3:
            message = message.replace(value, MASK)
    return {"class": exc.__class__.__name__, "message": message[:MESSAGE_LIMIT]}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _short(value: Any) -> str:
    return repr(value)[:80]


@dataclass(frozen=True)
class Delivery:
    """One Kafka record as a projector received it, and what it holds."""

    topic: str
    partition: int
    offset: int
    raw: bytes
    event: RecordedEvent | None  # None when it is not a CRM event
    refusal: Refused | None = None  # set: parked on sight, never applied

    @classmethod
    def receive(cls, topic: str, partition: int, offset: int, raw: bytes, owner: str | None) -> Delivery:
        try:
            return cls(topic, partition, offset, raw, inspect(raw, owner))
        except ForeignEvent as refusal:
            return cls(topic, partition, offset, raw, refusal.event, refusal)
        except NotACrmEvent as refusal:
            return cls(topic, partition, offset, raw, None, refusal)

    def key(self, projection: str) -> str:
        """The dead letter's id: one per projection and record, so parking twice changes nothing."""
        return f"{projection}:{self.topic}:{self.partition}:{self.offset}"


class DeadLetters:
    """The `deadletters` collection of a service's database."""

    def __init__(self, collection: Collection[dict[str, Any]]) -> None:
        self.collection = collection

    @classmethod
    def of(cls, db: Database[dict[str, Any]]) -> DeadLetters:
        """The dead letters of the service whose database is `db`."""
        return cls(db[COLLECTION])

    def ensure_indexes(self) -> None:
        self.collection.create_index(
            [("projection", ASCENDING), ("topic", ASCENDING), ("partition", ASCENDING), ("offset", ASCENDING)]
        )

    def park(
        self, projection: str, delivery: Delivery, error: dict[str, str], attempts: int, first_failed: datetime
    ) -> bool:
        """Keep `delivery` for `projection`; True when it was not parked already."""
        now = utcnow()
        summary = delivery.event
        result = self.collection.update_one(
            {"_id": delivery.key(projection)},
            {
                "$set": {"error": error, "attempts": attempts, "last_failed": now},
                "$setOnInsert": {
                    "projection": projection,
                    "topic": delivery.topic,
                    "partition": delivery.partition,
                    "offset": delivery.offset,
                    "envelope": Binary(delivery.raw),
                    "first_failed": first_failed,
                    "parked_at": now,
                    "event": {
                        "id": summary.id,
                        "type": summary.full_type,
                        "subject": summary.stream_id,
                        "time": summary.time,
                    }
                    if summary
                    else None,
                },
            },
            upsert=True,
        )
        return result.upserted_id is not None

    def parked(self, projection: str, deliveries: Sequence[Delivery]) -> set[str]:
        """Which of `deliveries` are parked for `projection` already (same place, same bytes)."""
        keys = {d.key(projection): d.raw for d in deliveries}
        found = self.collection.find({"_id": {"$in": list(keys)}}, {"envelope": 1})
        return {doc["_id"] for doc in found if bytes(doc["envelope"]) == keys[doc["_id"]]}

    def find(self, projection: str | None = None, letter_id: str | None = None) -> list[dict[str, Any]]:
        """Dead letters in the order they were read (per topic and partition)."""
        query: dict[str, Any] = {}
        if projection:
            query["projection"] = projection
        if letter_id:
            query["_id"] = letter_id
        return list(
            self.collection.find(query).sort(
                [("projection", ASCENDING), ("topic", ASCENDING), ("partition", ASCENDING), ("offset", ASCENDING)]
            )
        )

    def count(self, projection: str) -> int:
        return self.collection.count_documents({"projection": projection})

    def drop(self, letters: Iterable[dict[str, Any]]) -> int:
        return self.collection.delete_many({"_id": {"$in": [letter["_id"] for letter in letters]}}).deleted_count

    def retry(
        self, letters: Iterable[dict[str, Any]], projections: Mapping[str, Applies], reader: Reader
    ) -> tuple[int, int]:
        """Apply `letters` again through their projections (after a fix); (applied and removed, still failing).

        The ownership check runs again: a foreign record stays parked whatever the code.
        An outage stops the retry (raised); what was applied so far is removed.
        """
        applied = failing = 0
        for letter in letters:
            event: RecordedEvent | None = None
            try:
                projection = projections.get(letter["projection"])
                if projection is None:
                    raise LookupError(f"the service has no projection {letter['projection']!r}")
                event = inspect(bytes(letter["envelope"]), topic_owner(letter["topic"]))
                opened = reader([event])
                event = opened[0] if opened else event
                projection.handle(opened)
            except Exception as exc:
                if is_transient(exc):
                    raise
                self.collection.update_one(
                    {"_id": letter["_id"]},
                    {"$set": {"error": describe(exc, event), "last_failed": utcnow()}, "$inc": {"attempts": 1}},
                )
                failing += 1
                continue
            self.collection.delete_one({"_id": letter["_id"]})
            applied += 1
        return applied, failing
