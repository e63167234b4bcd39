"""What a person watching a job sees: one live line (rows done/total, rows/s, tokens/s, ETA) instead of Ray
Data's operator chatter, and nothing at all when the output is not a terminal (logs and CI stay clean).

Rates are measured from the first finished shard, so the model's load (seconds on a GPU, minutes for Phi-4
from a cold disk) does not pass for slow inference; the summary reports the two apart.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

#: The shortest time from the first finished block to the last that a processing rate is reported over.
MIN_SPAN_S = 1.0

#: Ray Data's own progress output, kept for `-v`: its per-operator bars and "Running Dataset" lines.
RAY_DATA_LOGGERS = ("ray.data",)


def quiet_ray_data(verbose: bool) -> None:
    """Ray Data's progress bars and INFO lines off unless ``verbose`` (they are the live line's job)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = verbose
    ctx.print_on_execution_start = verbose
    for name in RAY_DATA_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    # Its one warning about the bars being off (they are, on purpose) would read like a problem.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.INFO if verbose else logging.ERROR)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Rows and tokens as shards finish; ``line()`` is the text of the live line."""

    def __init__(
        self,
        total: int,
        done: int = 0,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        started: float | None = None,
    ) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic() if started is None else started  # the job's start (time.monotonic())
        self.first_at: float | None = None  # when the first shard finished: the end of start-up (model load)
        self.last_at: float | None = None
        self.rows, self.tokens = done, 0  # ``done``: rows an earlier run committed
        self._rows_at_first = self._tokens_at_first = 0
        self._drawn = 0.0

    def update(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens
        now = self.last_at = time.monotonic()
        if self.first_at is None:
            self.first_at = now
            self._rows_at_first, self._tokens_at_first = self.rows, self.tokens
        if self.enabled and (now - self._drawn > 0.5 or self.rows >= self.total):
            self._drawn = now
            self.stream.write("\r" + self.line(now) + "\x1b[K")
            self.stream.flush()

    def rates(self, now: float | None = None) -> tuple[float, float]:
        """(rows/s, tokens/s) from the first finished shard to ``now`` (default: the last one): start-up excluded.
        Blocks that finish together (a small job, all of it in the first wave) give no span worth a rate: under
        ``MIN_SPAN_S`` it is (0, 0)."""
        now = (self.last_at or time.monotonic()) if now is None else now
        if self.first_at is None or now - self.first_at < MIN_SPAN_S:
            return 0.0, 0.0
        span = now - self.first_at
        return (self.rows - self._rows_at_first) / span, (self.tokens - self._tokens_at_first) / span

    @property
    def startup_s(self) -> float:
        """Seconds until the first shard finished: reading, the model's load, the first batch."""
        return (self.first_at or time.monotonic()) - self.started

    def line(self, now: float | None = None) -> str:
        rows_s, tokens_s = self.rates(time.monotonic() if now is None else now)
        left = self.total - self.rows
        eta = f"ETA {_duration(left / rows_s)}" if rows_s > 0 and left > 0 else ("done" if left <= 0 else "ETA ?")
        pct = 100 * self.rows / self.total if self.total else 100.0
        return f"{self.rows}/{self.total} rows ({pct:.0f}%)  {rows_s:.1f} rows/s  {tokens_s:.0f} tokens/s  {eta}"

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
