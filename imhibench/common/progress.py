"""Progress lines for the job log: rows done / total, rows/s, output tokens/s, time left."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Progress:
    """Counts finished rows and tokens; logs a line at most every ``interval_s`` seconds.

    Rates count this run only (rows resumed from shards are done but not timed). The time left
    is remaining rows / current rate; rows run longest prompt first, so it errs on the long side.
    """

    def __init__(
        self,
        label: str,
        total: int,
        done: int = 0,
        interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        count_tokens: bool = True,
    ):
        self.label, self.total, self.done = label, total, done
        self.count_tokens = count_tokens
        self.interval_s, self.clock = interval_s, clock
        self.started = self.last = clock()
        self.rows = self.tokens = 0

    def batch(self, rows: int, tokens: int) -> None:
        """Count a finished batch; log if the last line is ``interval_s`` old."""
        self.rows += rows
        self.tokens += tokens
        self.done += rows
        if self.clock() - self.last >= self.interval_s:
            self.log()

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.rows / elapsed
        left = self.total - self.done
        eta = str(dt.timedelta(seconds=round(left / rate))) if rate > 0 else "unknown"
        share = 100 * self.done / self.total if self.total else 100.0
        tokens = f"{self.tokens / elapsed:.1f} output tokens/s, " if self.count_tokens else ""
        return (
            f"{self.label}: {self.done}/{self.total} rows ({share:.1f}%), {rate:.2f} rows/s, "
            f"{tokens}about {eta} left"
        )

    def log(self, prefix: str = "") -> None:
        log.info("%s%s", prefix, self.line())
        self.last = self.clock()
