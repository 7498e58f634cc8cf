"""A sliding window of calls in flight whose size adapts to how the server copes (AIMD).

The window shrinks multiplicatively when the server signals overload: a 429, a share of failed
calls (5xx, timeouts, refused connections) above `error_budget` over the last window's worth of
calls, or recent latency well above the best recently seen for calls of a similar reply length.
It grows back by one slot per window's worth of healthy calls. A server that fails a steady share
of calls at random is not overloaded (backing off would only slow the run: the failed calls are
retried anyway), which is why single failures do not shrink the window and 429s do. A burst of
failures from calls that were all in flight together counts as one overload: after a decrease the
window holds still for one round trip. The median latency of recent calls (`round_trip`) is what
a retry of such a random failure waits (http.py).

Latency is the server's only: a client whose event loop ran late (short of CPU on a shared
machine, a long callback) reads every reply in flight late. That delay (`LoopLag`) is taken off
the calls it overlapped, and a call it made up more than a quarter of is not compared at all (the
server may have answered at any time during the delay), or a busy client would shrink its own window.
"""
from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

ROUND_TRIP_CALLS = 64


@dataclass(frozen=True, slots=True)
class ConcurrencyConfig:
    max_concurrency: int = 64
    min_concurrency: int = 1
    adaptive: bool = True
    decrease: float = 0.7  # window multiplied by this on overload
    slowdown: float = 3.0  # smoothed latency above slowdown x baseline counts as overload
    baseline_window: int = 500  # the baseline is the best latency over about this many similar calls
    error_budget: float = 0.5  # failed share of recent calls above which the server counts as overloaded

    def __post_init__(self) -> None:
        if not 1 <= self.min_concurrency <= self.max_concurrency:
            raise ValueError(f"need 1 <= min_concurrency ({self.min_concurrency}) <= max_concurrency "
                             f"({self.max_concurrency})")
        if not 0.0 < self.decrease < 1.0:
            raise ValueError(f"decrease must be in (0, 1), got {self.decrease}")
        if self.slowdown <= 1.0:
            raise ValueError(f"slowdown must be > 1, got {self.slowdown}")
        if not 0.0 < self.error_budget <= 1.0:
            raise ValueError(f"error_budget must be in (0, 1], got {self.error_budget}")
        if self.baseline_window < 10:
            raise ValueError(f"baseline_window must be >= 10, got {self.baseline_window}")


class AdaptiveLimiter:
    def __init__(self, config: ConcurrencyConfig = ConcurrencyConfig(), clock=time.monotonic) -> None:
        self.config = config
        self.limit = config.max_concurrency
        self.in_flight = 0
        self._clock = clock
        self._waiters: deque[asyncio.Future] = deque()
        self._rtt = 0.0  # smoothed seconds per call
        self._recent: deque[float] = deque(maxlen=ROUND_TRIP_CALLS)  # latencies, for `round_trip`
        self._baselines: dict[int, WindowMin] = {}  # best recent latency, by reply size class
        self._slowdown: float | None = None  # smoothed latency / baseline
        self._healthy = 0  # healthy calls since the window last changed
        self._hold_until = 0.0
        self.decreases = 0
        self.ceiling = config.max_concurrency  # lowered while some endpoints of a pool are down
        self._outcomes = [0, 0]  # (calls, failures) in the current error-rate block
        self.error_rate = 0.0  # smoothed share of failed attempts
        # Time-weighted occupancy, for "how full was the window" figures.
        self._busy = 0.0  # integral of in_flight dt
        self._since = clock()
        self._last = self._since

    # ---- the window ----
    async def acquire(self) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self._occupy(+1)
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future  # the releaser counted us in before waking us
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # woken and cancelled at once: give the slot back
            elif future in self._waiters:
                self._waiters.remove(future)
            raise

    def release(self) -> None:
        self._occupy(-1)
        self._wake()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            future = self._waiters.popleft()
            if not future.done():
                self._occupy(+1)
                future.set_result(None)

    def _occupy(self, delta: int) -> None:
        now = self._clock()
        self._busy += self.in_flight * (now - self._last)
        self._last = now
        self.in_flight += delta

    def occupancy(self) -> float:
        """Average calls in flight since the limiter was made (or `reset_occupancy`)."""
        now = self._clock()
        busy = self._busy + self.in_flight * (now - self._last)
        return busy / (now - self._since) if now > self._since else float(self.in_flight)

    def reset_occupancy(self) -> None:
        self._busy, self._since, self._last = 0.0, self._clock(), self._clock()

    # ---- adaptation ----
    def on_success(self, latency: float | None, work: float = 1.0) -> None:
        """A call that succeeded after `latency` seconds, having produced `work` (1 + tokens);
        `latency` None: the call's time says nothing of the server (the client was late)."""
        self._count_outcome(failed=False)
        if latency is not None:
            self._recent.append(latency)
        if not self.config.adaptive:
            return
        if latency is None:
            self._grow()
            return
        self._rtt = latency if self._rtt == 0.0 else 0.8 * self._rtt + 0.2 * latency
        # Latency grows with reply length, but not in proportion (a fixed cost per request), so
        # calls are compared only with calls of similar length: one baseline per power of two.
        size = int(math.log2(max(work, 1.0)))
        baseline = self._baselines.get(size)
        if baseline is None:
            baseline = self._baselines[size] = WindowMin(self.config.baseline_window)
        reference = baseline.value()
        baseline.add(latency)
        if reference is not None and reference > 0:
            ratio = latency / reference
            self._slowdown = ratio if self._slowdown is None else 0.8 * self._slowdown + 0.2 * ratio
            if self._slowdown > self.config.slowdown:
                self._decrease()
                return
        self._grow()

    def round_trip(self) -> float | None:
        """The median latency of the last `ROUND_TRIP_CALLS` successful calls (None before any):
        a typical round trip, which one slow reply or a few long generations do not move."""
        return statistics.median(self._recent) if self._recent else None

    def _grow(self) -> None:
        self._healthy += 1
        if self._healthy >= self.limit and self.limit < self.ceiling:
            self._set_limit(self.limit + 1)

    def on_overload(self) -> None:
        """An explicit overload signal (429 Too Many Requests)."""
        if self.config.adaptive:
            self._decrease()

    def on_failure(self, kind: str) -> None:
        """A failed attempt: "429" is overload; other kinds count toward the error budget."""
        if kind == "429":
            self.on_overload()
        self._count_outcome(failed=True)

    def overloaded(self) -> bool:
        """Whether recent failures exceed the error budget (a server in trouble, not a random 503)."""
        return self.error_rate > self.config.error_budget

    def _count_outcome(self, failed: bool) -> None:
        # Over about two windows' worth of calls: steady enough that a server failing 30% of calls at
        # random never reads as one failing most of them (which would back every retry off for seconds).
        self.error_rate += (failed - self.error_rate) / max(2 * self.limit, 64)
        if not self.config.adaptive:
            return
        self._outcomes[0] += 1
        self._outcomes[1] += failed
        calls, failures = self._outcomes
        if calls >= max(2 * self.limit, 64):
            self._outcomes = [0, 0]
            if failures > self.config.error_budget * calls:
                self._decrease()

    def set_ceiling(self, ceiling: int) -> None:
        """The most calls the window may hold now (a pool of endpoints with some down)."""
        ceiling = max(self.config.min_concurrency, min(ceiling, self.config.max_concurrency))
        change, self.ceiling = ceiling - self.ceiling, ceiling
        self._set_limit(max(self.config.min_concurrency, min(ceiling, self.limit + change)))

    def _decrease(self) -> None:
        now = self._clock()
        if now < self._hold_until:
            return
        self._set_limit(max(self.config.min_concurrency, int(self.limit * self.config.decrease)))
        self.decreases += 1
        # Hold for about one round trip so the calls already in flight do not decrease it again.
        self._hold_until = now + max(self._rtt, 0.05)

    def _set_limit(self, limit: int) -> None:
        self.limit = limit
        self._healthy = 0
        self._wake()


class WindowMin:
    """The minimum of about the last `window` values (kept as the minima of ten blocks)."""

    def __init__(self, window: int) -> None:
        self.block = max(1, window // 10)
        self.mins: deque[float] = deque(maxlen=10)
        self.current = float("inf")
        self.count = 0

    def add(self, value: float) -> None:
        self.current = min(self.current, value)
        self.count += 1
        if self.count >= self.block:
            self.mins.append(self.current)
            self.current, self.count = float("inf"), 0

    def value(self) -> float | None:
        best = min(self.mins, default=self.current)
        best = min(best, self.current)
        return None if best == float("inf") else best


class LoopLag:
    """How late the running event loop has been, in total: a timer asks to run every `interval`
    seconds, and whatever it wakes up later than asked adds to `stalled`."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.stalled = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def server_time(self, elapsed: float, stalled_before: float) -> float | None:
        """What the server took of a call that lasted `elapsed` s, `stalled_before` being `stalled`
        when it started; None when the loop's lateness made up more than a quarter of it."""
        late = self.stalled - stalled_before
        return elapsed - late if late <= 0.25 * elapsed else None

    def watch(self) -> None:
        """Start timing the running loop (again, if the loop changed)."""
        loop = asyncio.get_running_loop()
        if loop is self._loop and self._handle is not None:
            return
        self.stop()
        self._loop = loop
        self._schedule(loop.time())

    def _schedule(self, now: float) -> None:
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        self.stalled += max(0.0, now - self._due)
        self._schedule(now)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop = None
