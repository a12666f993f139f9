"""The progress line of a corpus job on stderr: rows done, rows/s, time left, bad rows, parts.

The rate is the pace since the first report, so the time left is not inflated by Ray's start and the model load.

Actors report after every window of rows (see embedder.run_part), so the line moves while a part is computed.
A part retried after a lost actor may report its first windows twice: each part's count is capped at its size.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from serve_app.corpus.job import PartResult


def duration(seconds: float) -> str:
    """3725 -> '1h02m05s'; 65 -> '1m05s'; 4.2 -> '4s'."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


class Progress:
    """Counts what the actors report; prints at most every `interval_s` (and always the last line)."""

    def __init__(
        self,
        part_rows: dict[int, int],
        parts_done_before: int,
        parts_total: int,
        out: TextIO | None = None,
        interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.part_rows = part_rows  # rows of each part this run computes
        self.total = sum(part_rows.values())
        self.before = parts_done_before
        self.parts_total = parts_total
        self.out = out if out is not None else sys.stderr
        self.interval_s = interval_s
        self.clock = clock
        self.started = clock()
        self.last_print: float | None = None
        self.rows: dict[int, int] = {}
        self.errors = 0
        self.finished: set[int] = set()
        self.failed: dict[int, str] = {}
        self.first: tuple[float, int] | None = None  # (time, rows done) at the first report

    @property
    def rows_done(self) -> int:
        return sum(min(n, self.part_rows.get(p, n)) for p, n in self.rows.items())

    def rate(self) -> float | None:
        """Rows/s since the first report: the pace once the actors run, with Ray's start and the model load behind
        it (None until a second report: one report says nothing of the pace)."""
        now, done = self.clock(), self.rows_done
        if self.first is not None and now > self.first[0] and done > self.first[1]:
            return (done - self.first[1]) / (now - self.first[0])
        return None

    def time_left(self) -> float | None:
        rate = self.rate()
        return (self.total - self.rows_done) / rate if rate else None

    def update(self, result: PartResult) -> None:
        self.rows[result.part] = self.rows.get(result.part, 0) + result.rows
        self.errors += result.errors
        if result.final:
            if result.failed:
                self.failed[result.part] = result.failed
            else:
                self.finished.add(result.part)
                self.rows[result.part] = self.part_rows.get(result.part, self.rows[result.part])
        if self.first is None and self.rows_done:
            self.first = (self.clock(), self.rows_done)
        self.maybe_print()

    def line(self) -> str:
        done, total = self.rows_done, self.total
        pct = 100.0 * done / total if total else 100.0
        rate = self.rate()
        left = self.time_left()
        parts = f"parts {self.before + len(self.finished)}/{self.parts_total}"
        if self.before:
            parts += f" ({self.before} done before)"
        fields = [
            f"corpus: {done:,}/{total:,} rows ({pct:.1f}%)",
            f"{rate:,.1f} rows/s" if rate else "-- rows/s",
            f"{duration(left)} left" if left is not None else "time left unknown",
            f"{self.errors:,} bad rows",
            parts,
        ]
        if self.failed:
            fields.append(f"{len(self.failed)} parts failed")
        return " | ".join(fields)

    def maybe_print(self, force: bool = False) -> None:
        now = self.clock()
        if force or self.last_print is None or now - self.last_print >= self.interval_s:
            print(self.line(), file=self.out, flush=True)
            self.last_print = now
