"""Progress of a pipeline run: a tqdm bar (units done of those known so far: the total grows as
stages make records for the next ones) whose postfix shows calls in flight against the current
concurrency window, tokens generated and throughput. Without a terminal (a run under nohup,
a log file) it prints one line every `log_interval` seconds instead."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    def __init__(self, stage: str, total: int, done: int, gauges: Callable[[], tuple[int, int, int]],
                 enabled: bool = True, stream: TextIO | None = None, log_interval: float = 30.0) -> None:
        """`gauges()` returns (calls in flight, concurrency window, tokens generated so far)."""
        self.stage, self.total, self.done, self.initial = stage, total, done, done
        self.gauges = gauges
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.tokens_at_start = gauges()[2]
        self.log_interval = log_interval
        self._last_log = self.start
        self._bar = None
        self.enabled = enabled
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, desc=stage, unit="unit", file=self.stream,
                             mininterval=0.5, dynamic_ncols=True, smoothing=0.05)

    def _postfix(self) -> str:
        in_flight, window, tokens = self.gauges()
        elapsed = max(time.monotonic() - self.start, 1e-9)
        made = tokens - self.tokens_at_start
        return f"in flight {in_flight}/{window}, {made / 1000:.1f}k tok, {made / elapsed:.0f} tok/s"

    def grow(self, n: int) -> None:
        """More units became known (a pipeline learns its size as stages make records)."""
        if n <= 0:
            return
        self.total += n
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)

    def tick(self) -> None:
        """Refresh the gauges (called periodically, also while no unit finishes)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=True)
            return
        now = time.monotonic()
        if now - self._last_log >= self.log_interval:
            self._last_log = now
            self._line()

    def _line(self) -> None:
        elapsed = time.monotonic() - self.start
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        print(f"[{self.stage}] {self.done}/{self.total} units, ETA {eta}, {self._postfix()}", file=self.stream,
              flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.close()
        elif self.enabled:
            self._line()
