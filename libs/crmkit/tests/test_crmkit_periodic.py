"""crmkit.periodic: the one loop of every worker's periodic job."""

from __future__ import annotations

import threading

from crmkit import metrics
from crmkit.periodic import PeriodicJob


def _runs(job: str, outcome: str) -> float:
    return metrics.JOB_RUNS.labels("widgets", job, outcome)._value.get()


def test_a_failed_pass_is_counted_and_tried_again_at_the_next_interval() -> None:
    stop = threading.Event()
    passes: list[int] = []
    reported: list[object] = []

    def step() -> int:
        passes.append(1)
        if len(passes) == 1:
            raise RuntimeError("the database blinked")
        if len(passes) == 3:
            stop.set()
        return len(passes)

    job = PeriodicJob("widgets", "flaky", step, 0.001, report=lambda outcome, _seconds: reported.append(outcome))
    failed, ok = _runs("flaky", "failed"), _runs("flaky", "ok")
    thread = threading.Thread(target=job, args=(stop,), name=f"job-{job.__name__}")
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive() and len(passes) == 3 and reported == [2, 3]
    assert (_runs("flaky", "failed") - failed, _runs("flaky", "ok") - ok) == (1, 2)


def test_stop_ends_the_wait_at_once_and_the_interval_may_be_asked_each_time() -> None:
    stop = threading.Event()
    asked: list[int] = []

    def interval() -> float:
        asked.append(1)
        stop.set()
        return 3600.0  # a wait of an hour that stop must cut short

    job = PeriodicJob("widgets", "hourly", lambda: None, interval)
    assert job.__name__ == "hourly"
    thread = threading.Thread(target=job, args=(stop,))
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive() and asked == [1]


def test_a_failing_report_counts_as_a_failed_pass() -> None:
    def report(_outcome: object, _seconds: float) -> None:
        raise ValueError("cannot record")

    job = PeriodicJob("widgets", "unrecorded", lambda: 1, 1.0, report)
    assert job.run_once() is False
