"""Runs the units of every stage of a pipeline at once, within one window, and writes their results.

The window bounds the units at work across the whole pipeline (not per stage): stages overlap, so
the model backends always have the next calls ready. A unit sleeping in backoff is out of the count
(`backends.base.waiting` pauses its ticket) and another unit takes its place; units coming back
from backoff get the next free places before new units start. New units are taken downstream
first, so finished records reach the output early and memory stays bounded. Results are written
in batches (write + fsync off the event loop) every `flush_every` units or `flush_interval` seconds,
and a finished stage's data files off the loop too.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path

from nemotron.errors import NemotronError
from nemotron.sdg.backends.base import CURRENT_UNIT
from nemotron.sdg.config import PipelineConfig
from nemotron.sdg.flows import StageFlow
from nemotron.sdg.progress import Progress
from nemotron.sdg.stages import Unit
from nemotron.sdg.store import append_line, write_atomic


class UnitWindow:
    """At most `size` units at work at once; waiters coming back from backoff go first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.active = 0
        self._resumers: deque[asyncio.Future] = deque()

    def has_room(self) -> bool:
        return self.active < self.size and not self._resumers

    def release(self) -> None:
        self.active -= 1
        while self._resumers and self.active < self.size:
            future = self._resumers.popleft()
            if not future.done():
                self.active += 1
                future.set_result(None)

    async def acquire(self) -> None:
        if self.has_room():
            self.active += 1
            return
        future = asyncio.get_running_loop().create_future()
        self._resumers.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()
            elif future in self._resumers:
                self._resumers.remove(future)
            raise


class _Ticket:
    """One unit's place in the window (what `backends.base.waiting` pauses)."""

    def __init__(self, window: UnitWindow, refill: Callable[[], None]) -> None:
        self.window, self.refill, self.paused = window, refill, False

    def pause(self) -> None:
        self.paused = True
        self.window.release()
        self.refill()

    async def resume(self) -> None:
        await self.window.acquire()
        self.paused = False


RunUnit = Callable[[StageFlow, Unit], Awaitable["dict | str"]]
AfterCommit = Callable[[Callable[[], object]], Future]


def _at_once(write: Callable[[], object]) -> Future:
    future: Future = Future()
    future.set_result(write())
    return future


class Scheduler:
    def __init__(self, config: PipelineConfig, flows: list[StageFlow], used: list, run_unit: RunUnit, out: Path,
                 progress: Progress, after_commit: AfterCommit = _at_once) -> None:
        """`used`: the distinct model backends (their windows size ours); `run_unit` returns a unit's
        result line, or the error (a string) that failed it for this run; results are written through
        `after_commit` (the call cache's: on its writer thread, after the answers they used)."""
        self.config, self.flows, self.run_unit, self.out, self.progress = config, flows, run_unit, out, progress
        self.after_commit = after_commit
        self.window = UnitWindow(config.unit_window or max(4, 2 * sum(m.concurrency for m in used)))
        self.tasks: set[asyncio.Task] = set()
        self.finished = asyncio.Event()
        self.crash: list[BaseException] = []
        self.writing = asyncio.Lock()
        self.writes: list[asyncio.Future] = []
        self.files: list[asyncio.Future] = []  # finished stages' data files being written
        self.last_flush = time.monotonic()

    async def run(self) -> None:
        flows = self.flows
        for flow in flows:
            flow.load()
            flow.write_file = self._write_file
        for flow in flows:
            flow.start()
        self.progress.grow(self._known())
        self.progress.advance(sum(f.units_finished for f in flows))
        tick = asyncio.ensure_future(self._ticker())
        tick.add_done_callback(self._crashed)  # a timed flush that fails fails the run, like a unit's
        try:
            if not all(f.done for f in flows):
                self._fill()
                await self.finished.wait()
            await asyncio.gather(*self.files, return_exceptions=True)  # a failed one is in self.crash
            if self.crash:
                raise self.crash[0]
        finally:
            for task in (*self.tasks, tick):
                task.cancel()
            await asyncio.gather(*self.tasks, tick, return_exceptions=True)
            await asyncio.gather(*self.writes, *self.files, return_exceptions=True)  # one append at a time on each file
            try:
                batches = self._pending()
                self.after_commit(lambda: [f.store.append(batch) for f, batch in batches]).result()
            except NemotronError:
                if not self.crash:
                    raise
            self.progress.close()

    def _known(self) -> int:
        return sum(f.units_known for f in self.flows)

    # ---- starting units ----
    def _fill(self) -> None:
        window = self.window
        while window.has_room() and not self.crash:
            flow = next((f for f in reversed(self.flows) if f.ready), None)  # downstream first
            if flow is None:
                return
            unit = flow.ready.popleft()
            if unit.id in flow.results:
                continue
            window.active += 1
            task = asyncio.ensure_future(self._unit(flow, unit))
            self.tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self.crash:
            self.crash.append(task.exception())
            self.finished.set()

    async def _unit(self, flow: StageFlow, unit: Unit) -> None:
        ticket = _Ticket(self.window, self._fill)
        CURRENT_UNIT.set(ticket)
        flow.started_unit()
        try:
            outcome = await self.run_unit(flow, unit)
        finally:
            if not ticket.paused:
                self.window.release()
        if isinstance(outcome, str):
            append_line(self.out / "failures.jsonl",
                        {"stage": flow.stage.name, "unit": unit.id, "error": outcome, "time": time.time()})
            flow.fail(unit, outcome)
        else:
            flow.finish_unit(unit, outcome)
        self.progress.advance()
        self.progress.grow(self._known() - self.progress.total)
        if sum(len(f.pending) for f in self.flows) >= self.config.flush_every and not self.writing.locked():
            await self._flush()
        self._fill()
        if all(f.done for f in self.flows):
            self.finished.set()
        elif self.tasks <= {asyncio.current_task()} and not any(f.ready for f in self.flows):
            raise RuntimeError("the pipeline stalled: no unit runs or waits, but stages are unfinished "
                               f"({[f.stage.name for f in self.flows if not f.done]})")

    # ---- writing results ----
    def _write_file(self, path: Path, records: list[dict]) -> None:
        """A finished stage's data file, written off the event loop: write + fsync of a whole file
        take tens of milliseconds, which every call in flight would otherwise wait for."""
        task = asyncio.ensure_future(asyncio.to_thread(write_atomic, path, records))
        self.files.append(task)
        task.add_done_callback(self._crashed)

    def _crashed(self, task: asyncio.Future) -> None:
        """Done callback of the tasks no unit awaits (data files, the ticker): their error ends the run."""
        if not task.cancelled() and task.exception() is not None and not self.crash:
            self.crash.append(task.exception())
            self.finished.set()

    def _pending(self) -> list[tuple[StageFlow, list[dict]]]:
        return [(f, f.take_pending()) for f in self.flows if f.pending]

    async def _flush(self) -> None:
        # fsync off the event loop: calls in flight keep being served while a batch is written.
        # Shielded: a cancelled run still lets a batch already handed to the thread finish.
        async with self.writing:
            batches = self._pending()
            if batches:
                self.writes.append(asyncio.wrap_future(self.after_commit(
                    lambda: [f.store.append(batch) for f, batch in batches])))
                await asyncio.shield(self.writes[-1])
            self.last_flush = time.monotonic()

    async def _ticker(self) -> None:
        interval = self.config.flush_interval
        while True:
            await asyncio.sleep(min(interval, 0.5))
            if any(f.pending for f in self.flows) and time.monotonic() - self.last_flush >= interval:
                await self._flush()
            self.progress.tick()
