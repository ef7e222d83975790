"""crmkit.progress: totals, rate and ETA for a person at a terminal; two lines in a log."""

from __future__ import annotations

import io
import os
import pty

from crmkit.progress import Progress, duration, is_terminal


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_sees_done_of_total_the_rate_and_the_time_left() -> None:
    out, clock = Terminal(), Clock()
    with Progress("rebuild timeline", 10_000, stream=out, clock=clock, interval=0) as progress:
        clock.now += 4
        progress.update(4_000)
        assert out.getvalue().endswith("\rrebuild timeline: 4,000/10,000 events (40%)  1,000 events/s  ETA 0:06\x1b[K")
        clock.now += 6
        progress.update(10_000)
        progress.finish("rebuilt timeline from 10000 events in 10.0s")
    text = out.getvalue()
    assert "10,000/10,000 events (100%)  1,000 events/s  ETA 0:00" in text
    assert text.endswith("\nrebuilt timeline from 10000 events in 10.0s\n")


def test_a_terminal_is_redrawn_at_most_once_per_interval() -> None:
    out, clock = Terminal(), Clock()
    progress = Progress("replay", 1_000, stream=out, clock=clock, interval=0.5)
    progress.start()
    for done in range(1, 1_001):
        progress.update(done)  # no time passes: nothing new is drawn
    assert out.getvalue().count("\r") == 1
    clock.now += 1
    progress.update(1_000)
    assert out.getvalue().count("\r") == 2


def test_a_log_gets_a_start_line_and_the_summary_only() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress("rebuild timeline", 10_000, stream=out, clock=clock, interval=0) as progress:
        for done in range(0, 10_001, 100):
            clock.now += 0.1
            progress.update(done)
        progress.finish("rebuilt timeline from 10000 events in 10.0s")
    assert out.getvalue() == "rebuild timeline: 10,000 events to go\nrebuilt timeline from 10000 events in 10.0s\n"


def test_more_work_than_expected_grows_the_total_and_unknown_totals_have_no_eta() -> None:
    clock = Clock()
    progress = Progress("export", 10, stream=io.StringIO(), clock=clock)
    clock.now += 1
    progress.update(15)
    assert progress.status() == "export: 15/15 events (100%)  15 events/s  ETA 0:00"
    unknown = Progress("export", None, unit="records", stream=io.StringIO(), clock=clock)
    assert unknown.status() == "export: 0 records  - records/s"
    clock.now += 1
    assert unknown.status() == "export: 0 records  - records/s"  # nothing done yet: no rate to speak of
    empty = Progress("rebuild deals", 0, stream=io.StringIO(), clock=clock)
    clock.now += 1
    assert empty.status() == "rebuild deals: 0/0 events  - events/s  ETA 0:00"
    unknown.update(50)
    assert unknown.status() == "export: 50 records  25 records/s"


def test_a_log_hears_the_size_once_it_is_known() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress("export t", None, unit="records", stream=out, clock=clock) as progress:
        assert out.getvalue() == ""
        progress.update(0, 40)
        progress.update(20, 40)
        progress.update(40, 40)
        progress.finish("exported 40")
    assert out.getvalue() == "export t: 40 records to go\nexported 40\n"


def test_batches_are_counted_after_their_consumer_is_done_with_them() -> None:
    clock = Clock()
    progress = Progress("replay", 5, stream=io.StringIO(), clock=clock)
    seen = []
    for batch in progress.batches([[1, 2], [3, 4, 5]]):
        seen.append(progress.done)
        assert batch
    assert seen == [0, 2] and progress.done == 5


def test_durations_read_as_clock_times() -> None:
    assert [duration(s) for s in (0, 7.4, 750, 7509)] == ["0:00", "0:07", "12:30", "2:05:09"]


def test_a_pseudo_terminal_counts_as_a_terminal_and_a_pipe_does_not() -> None:
    primary, secondary = pty.openpty()
    read_end, write_end = os.pipe()
    try:
        with open(secondary, "w", closefd=False) as tty, open(write_end, "w", closefd=False) as pipe:
            assert is_terminal(tty) and not is_terminal(pipe)
            Progress("replay", 3, stream=tty, interval=0).start()
        assert b"replay: 0/3 events (0%)" in os.read(primary, 4096)
    finally:
        for fd in (primary, secondary, read_end, write_end):
            os.close(fd)
