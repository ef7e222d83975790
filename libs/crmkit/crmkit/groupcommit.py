"""Group commit: concurrent inserts in one process share one unordered `insert_many`.

A request thread that wants to insert documents queues them. If no write is under way it
becomes the leader: it takes everything queued (its own documents and those of the
threads that arrived meanwhile) and writes them in one round trip; otherwise it waits, and
the writes that queued up behind the current one go together in the next. An idle
process therefore pays no extra latency (a lone request writes at once), and a busy one
pays one round trip for many requests instead of one each, which is where the event
store's time went under load (bench/README.md).

Each request gets its own outcome: which of its documents were duplicates (a concurrent
writer took the key: that request's ConcurrencyError), or the error that hit the write
(e.g. MongoDB unreachable) for every request of that round.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from crmkit import metrics

DUPLICATE_KEY = 11000
MAX_DOCUMENTS = 1000  # per round trip; what queued beyond waits for the next round


@dataclass
class _Request:
    documents: Sequence[dict[str, Any]]
    duplicates: set[int] = field(default_factory=set)  # indexes into `documents`
    error: BaseException | None = None
    done: bool = False


class GroupCommit:
    """Inserts into one collection, batched across the threads that insert at the same time."""

    def __init__(self, collection: Collection[dict[str, Any]], name: str) -> None:
        self._collection = collection
        self._name = name  # the metric label: which collection's writes are grouped
        self._ready = threading.Condition()
        self._queue: list[_Request] = []
        self._writing = False

    def insert(self, documents: Sequence[dict[str, Any]]) -> set[int]:
        """Insert `documents`; returns the indexes of those whose `_id` (or another unique key)
        was already taken. Any other write error is raised, and none of the documents that
        did not fail is rolled back: each document is all or nothing on its own."""
        request = _Request(documents)
        with self._ready:
            self._queue.append(request)
            while not request.done:
                if self._writing:
                    self._ready.wait()
                    continue
                self._writing = True
                batch = self._take()
                self._ready.release()
                try:
                    self._write(batch)
                finally:
                    self._ready.acquire()
                    self._writing = False
                    self._ready.notify_all()
        if request.error is not None:
            raise request.error
        return request.duplicates

    def _take(self) -> list[_Request]:
        """The queued requests for one round trip: at least one, about MAX_DOCUMENTS documents."""
        size, taken = 0, 0
        for request in self._queue:
            if taken and size + len(request.documents) > MAX_DOCUMENTS:
                break
            size += len(request.documents)
            taken += 1
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    def _write(self, batch: list[_Request]) -> None:
        """One unordered insert_many for the whole batch, its outcome handed back per request."""
        owners = [(request, index) for request in batch for index in range(len(request.documents))]
        metrics.GROUP_COMMIT_SIZE.labels(self._name).observe(len(batch))
        try:
            self._collection.insert_many([doc for request in batch for doc in request.documents], ordered=False)
        except BulkWriteError as exc:
            for error in exc.details.get("writeErrors", []):
                request, index = owners[error["index"]]
                if error.get("code") == DUPLICATE_KEY:
                    request.duplicates.add(index)
                else:
                    request.error = request.error or BulkWriteError({**exc.details, "writeErrors": [error]})
        except BaseException as exc:  # the round trip failed as a whole: every request hears it
            for request in batch:
                request.error = exc
        for request in batch:
            request.done = True
