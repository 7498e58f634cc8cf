"""The engine behind an asyncio server: requests stream their outputs while others join and leave.

The engine runs in one background thread (a model step holds no Python-level lock users wait on);
requests and aborts are handed to it through a locked inbox, outputs come back through each
request's asyncio queue on the event loop that asked.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import AsyncIterator

from nemotron.engine.llm_engine import LLMEngine, EngineRequest, StepOutput
from nemotron.engine.sampling import SamplingParams
from nemotron.errors import EngineDeadError, NemotronError

__all__ = ["AsyncLLM", "EngineDeadError"]

log = logging.getLogger(__name__)


class AsyncLLM:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._inbox: list[tuple[str, EngineRequest]] = []
        self._aborts: list[str] = []
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._wake = threading.Event()
        self._closed = False
        self._failed = False
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._run, name="nemotron-engine", daemon=True)
        self._thread.start()

    async def generate(self, prompt: list[int] | EngineRequest, params: SamplingParams | None = None,
                       request_id: str | None = None) -> AsyncIterator[StepOutput]:
        """Stream a request's outputs: prompt token ids with their params, or an EngineRequest the engine
        already checked (servers check every choice up front, to answer 400 before streaming). Leaving
        the loop early (or cancellation) aborts the request and frees its KV blocks. Bad requests
        raise RequestError before anything is queued."""
        if self._closed:
            raise EngineDeadError("the engine is shut down")
        request = prompt if isinstance(prompt, EngineRequest) else self.engine.check_request(prompt, params)
        request_id = request_id or f"async-{next(self._ids)}"
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            if request_id in self._streams:
                raise NemotronError(f"request id {request_id!r} is already in use")
            self._streams[request_id] = (asyncio.get_running_loop(), queue)
            self._inbox.append((request_id, request))
        self._wake.set()
        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            with self._lock:
                self._streams.pop(request_id, None)
                if not finished:
                    self._aborts.append(request_id)
            self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=1 if self._failed else 10)  # after fail() a step may never return

    def fail(self, err: EngineDeadError) -> None:
        """Answer every request in flight with `err` and refuse new ones: the engine cannot go on (a
        rank of a parallel run is gone). Safe from any thread, even while a step hangs."""
        self._closed = self._failed = True
        self._wake.set()
        with self._lock:
            request_ids = list(self._streams)
        for request_id in request_ids:
            self._deliver(request_id, err)

    # ---- the engine thread -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._closed:
            with self._lock:
                inbox, self._inbox = self._inbox, []
                aborts, self._aborts = self._aborts, []
            for request_id in aborts:
                self.engine.abort(request_id)
            for request_id, request in inbox:
                try:
                    self.engine.add_request(request, request_id)
                except NemotronError as err:
                    self._deliver(request_id, err)
            if not self.engine.has_unfinished():
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step()
            except Exception as err:  # a bug in a step: fail every request rather than leave them hanging
                log.exception("engine step failed")
                self._fail_all(err)
                continue
            for output in outputs:
                self._deliver(output.request_id, output)
        self._fail_all(EngineDeadError("the engine was shut down"))

    def _deliver(self, request_id: str, item: StepOutput | BaseException) -> None:
        with self._lock:
            target = self._streams.get(request_id)
        if target is None:  # the client left; its abort is on the way
            return
        loop, queue = target
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # that event loop is closed
            pass

    def _fail_all(self, err: BaseException) -> None:
        with self._lock:
            request_ids = list(self._streams)
        for request_id in request_ids:
            self.engine.abort(request_id)
            failure = err if isinstance(err, NemotronError) else EngineDeadError(f"engine step failed: {err!r}")
            self._deliver(request_id, failure)
