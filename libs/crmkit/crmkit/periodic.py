"""The worker's periodic jobs: one pass every interval until the process stops.

Every service has passes of this kind (contacts' lifecycle timers and freshness, sales'
customer values and quote expiry, the service desk's SLA sweep, recompute and SERVQUAL
policy). They share one loop, here, so they share its behaviour: a failed pass is logged
with its traceback, counted (`crm_job_runs_total{outcome="failed"}`) and tried again at
the next interval (a worker job that dies would stop the timers silently); each pass is
timed (`crm_job_seconds`); the wait is `stop.wait`, so shutdown never waits out an interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crmkit import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicJob:
    """`step()` every `interval` seconds (a number, or asked before each wait) until `stop` is set.

    `report(outcome, seconds)`, when given, is told what a pass that succeeded returned and how
    long it took (to log what moved, or to record it); it runs under the same error handling.
    A `PeriodicJob` is what `ServiceSpec.jobs` returns: the worker calls it with its stop event.
    """

    service: str
    name: str  # the job's name in logs, metrics and the worker's thread name (job-<name>)
    step: Callable[[], Any]
    interval: float | Callable[[], float]
    report: Callable[[Any, float], None] | None = None

    @property
    def __name__(self) -> str:  # the worker names a job's thread after it
        return self.name

    def __call__(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.run_once()
            stop.wait(self.interval() if callable(self.interval) else self.interval)

    def run_once(self) -> bool:
        """One pass; False when it failed (logged and counted, never raised)."""
        started = time.monotonic()
        try:
            outcome = self.step()
            seconds = time.monotonic() - started
            if self.report is not None:
                self.report(outcome, seconds)
        except Exception:
            metrics.JOB_RUNS.labels(self.service, self.name, "failed").inc()
            log.exception("%s failed; trying again next interval", self.name, extra={"job": self.name})
            return False
        metrics.JOB_RUNS.labels(self.service, self.name, "ok").inc()
        metrics.JOB_SECONDS.labels(self.service, self.name).observe(seconds)
        return True


def log_when(message: str, moved: Callable[[Any], int]) -> Callable[[Any, float], None]:
    """A `report` that logs `message` with the count `moved(outcome)` when that count is not 0."""

    def report(outcome: Any, seconds: float) -> None:
        if count := moved(outcome):
            log.info(message, extra={"count": count, "seconds": round(seconds, 3)})

    return report
