"""Progress of the CLI's long work (`crm rebuild`, `crm replay`, `crm export`).

On a terminal one status line is redrawn in place: how much is done of how much,
the rate and the time left. Anywhere else (a file, a pipe, a Kubernetes Job's log)
redrawing makes thousands of lines of noise, so there it writes one line when the work
starts and the summary when it ends, nothing in between.

A helper of our own rather than tqdm: the policy (quiet unless a person watches) is
ours either way, and the arithmetic is a few lines the tests can drive with a fake clock,
without adding a package to every service image for three commands.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import TextIO, TypeVar

B = TypeVar("B", bound=Sized)

CLEAR_TO_END = "\x1b[K"


def is_terminal(stream: TextIO) -> bool:
    """Whether a person is watching `stream` (a closed or odd stream counts as not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def duration(seconds: float) -> str:
    """`0:07`, `12:30`, `2:05:09`: minutes and seconds, hours only when there are some."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class Progress:
    """Counts work done towards an expected total and shows it as the stream allows.

    `total` is what is known at the start (None: unknown, then no percent or ETA); the
    work may turn out larger (events appended meanwhile), and the total grows with it.
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        *,
        unit: str = "events",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.2,
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.live = is_terminal(self.stream)
        self.done = 0
        self._clock, self._interval = clock, interval
        self._started = clock()
        self._drawn_at = float("-inf")
        self._announced = False

    def __enter__(self) -> Progress:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.live:  # a failure leaves the last status on its own line, above the traceback
            self.stream.write("\n")
            self.stream.flush()

    def start(self) -> None:
        self._started = self._clock()
        if self.live:
            self._draw()
        elif self.total is not None:
            self._announce()

    def update(self, done: int, total: int | None = None) -> None:
        """`done` so far (a running count, as rebuild's callback gives it); `total` if it is known better now."""
        self.done = done
        if total is not None:
            self.total = total
        if self.live and self._clock() - self._drawn_at >= self._interval:
            self._draw()
        elif not self.live and self.total is not None:
            self._announce()

    def add(self, count: int) -> None:
        self.update(self.done + count)

    def batches(self, source: Iterable[B]) -> Iterator[B]:
        """`source`'s batches, each counted once whoever asked for it has finished with it."""
        for batch in source:
            yield batch
            self.add(len(batch))

    def finish(self, summary: str) -> None:
        """The last status (on a terminal) and `summary`, on a line of its own everywhere."""
        if self.live:
            self._draw()
            self.stream.write("\n")
            self.live = False  # __exit__ has nothing left to close
        else:
            self._announce()
        self._write_line(summary)

    def elapsed(self) -> float:
        return self._clock() - self._started

    def rate(self) -> float | None:
        """Per second so far; None before the first piece is done (nothing to say yet)."""
        elapsed = self.elapsed()
        return self.done / elapsed if elapsed > 0 and self.done else None

    def status(self) -> str:
        """`rebuild timeline: 4,500/10,000 events (45%)  1,234 events/s  ETA 0:04`."""
        total = None if self.total is None else max(self.total, self.done)
        rate = self.rate()
        parts = [f"{self.what}: {self.done:,}" + ("" if total is None else f"/{total:,}") + f" {self.unit}"]
        if total:
            parts[0] += f" ({100 * self.done // total}%)"
        parts.append(f"- {self.unit}/s" if rate is None else f"{rate:,.0f} {self.unit}/s")
        if total is not None:
            left = total - self.done
            parts.append("ETA " + (duration(left / rate) if rate else ("0:00" if left == 0 else "-")))
        return "  ".join(parts)

    def _announce(self) -> None:
        """The start line of a log, once, as soon as the size of the work is known (or it is over)."""
        if self._announced:
            return
        self._announced = True
        size = "an unknown number of" if self.total is None else f"{self.total:,}"
        self._write_line(f"{self.what}: {size} {self.unit} to go")

    def _draw(self) -> None:
        self._drawn_at = self._clock()
        self.stream.write("\r" + self.status() + CLEAR_TO_END)
        self.stream.flush()

    def _write_line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
