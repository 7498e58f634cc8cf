"""The engine behind an asyncio server: requests stream their outputs while others join and leave.

    llm = AsyncLLM(LLMEngine(loaded.model, loaded.tokenizer))
    async for out in llm.generate("The capital of France is", SamplingParams(max_tokens=8), "req-1"):
        print(out.outputs[0].text)  # everything so far (vLLM's default RequestOutputKind.CUMULATIVE)

`generate` is vLLM's: RequestOutputs, cumulative unless SamplingParams.output_kind says DELTA (what
each step added) or FINAL_ONLY (one output when the request is done); n > 1 runs n engine requests
and, streamed, each output carries the one completion that moved (vLLM's parallel sampling).
`stream` is the engine's own increments (StepOutput, with the tokens each step shows), which the
servers use. `await abort(request_id)` stops a request from anywhere on the loop (vLLM's abort): its
stream ends with a finished output whose completions that were still running say finish_reason
"abort". `AsyncLLM.from_pretrained(path, ...)` loads a model as `LLM(path, ...)` does (same keywords,
tensor-parallel ranks included; close() stops them). The engine runs in one background thread (a model step holds no Python-level lock
users wait on); requests and aborts are handed to it through a locked inbox, outputs come back
through each request's asyncio queue on the event loop that asked.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from pathlib import Path
from typing import TypeVar

import torch

from nemotron.engine.llm import LLM, Prompt, check_choices, prompt_text, prompt_token_ids
from nemotron.engine.llm_engine import EngineConfig, EngineRequest, LLMEngine, RequestError, StepOutput
from nemotron.engine.request_output import CompletionBuilder, RequestOutput, prompt_logprob_dicts
from nemotron.engine.sampling import RequestOutputKind, SamplingParams
from nemotron.errors import EngineDeadError, NemotronError

__all__ = ["AsyncLLM", "EngineDeadError", "merge"]

log = logging.getLogger(__name__)
T = TypeVar("T")


ABORTED = "abort"  # vLLM's finish reason for a request stopped by abort()
_ABORT = object()  # what abort() puts in a stream's queue


class AsyncLLM:
    def __init__(self, engine: LLMEngine, owner: LLM | None = None) -> None:
        self.engine = engine
        self._owner = owner  # the LLM that loaded the model (its ranks stop on close)
        self._lock = threading.Lock()  # guards everything below but the flags
        self._children: dict[str, list[str]] = {}  # generate()'s request id with n > 1 -> its completions' ids
        # A stream's id (the caller's) -> the engine's id for it, unique per stream, so that a reused id
        # never receives what an earlier request of that id still produces.
        self._engine_ids: dict[str, str] = {}
        self._pending_aborts: set[str] = set()  # completions aborted before their stream started
        self._inbox: list[tuple[str, EngineRequest]] = []  # by engine id
        self._aborts: list[str] = []  # engine ids
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}  # by engine id
        self._serials = itertools.count()
        self._wake = threading.Event()
        self._closed = False
        self._failed = False
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._run, name="nemotron-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_pretrained(cls, model: str | Path, config: EngineConfig | None = None, **llm_options) -> AsyncLLM:
        """Load `model` as `LLM(model, config, **llm_options)` does (dtype, tensor_parallel_size,
        max_model_len, ...) and serve it asynchronously."""
        llm = LLM(model, config, **llm_options)
        return cls(llm.engine, owner=llm)

    async def generate(self, prompt: Prompt, sampling_params: SamplingParams | None = None,
                       request_id: str | None = None, *, add_bos: bool = False) -> AsyncIterator[RequestOutput]:
        """vLLM's AsyncLLM.generate: a prompt (text, token ids, or vLLM's {"prompt": ...} /
        {"prompt_token_ids": ...}) and its SamplingParams in, RequestOutputs out as
        sampling_params.output_kind says. All n completions are checked before any runs (bad ones
        raise RequestError); leaving the loop early (or cancellation) aborts them and frees their KV blocks."""
        params = sampling_params or SamplingParams()
        ids = prompt_token_ids(self.engine.tokenizer, prompt, add_bos)
        requests = check_choices(self.engine, ids, params)
        request_id = request_id or f"async-{next(self._ids)}"
        child_ids = [request_id] if params.n == 1 else [f"{j}_{request_id}" for j in range(params.n)]  # vLLM's
        eos_id = self.engine.tokenizer.eos_id
        builders = [CompletionBuilder(j, params, eos_id, self.engine.tokenizer) for j in range(params.n)]
        streams = [choice_stream(self, j, requests[j], child_ids[j]) for j in range(params.n)]
        if params.n > 1:
            with self._lock:
                if request_id in self._children or request_id in self._engine_ids:
                    raise NemotronError(f"request id {request_id!r} is already in use")
                self._children[request_id] = child_ids
        try:
            async with aclosing(self._outputs(prompt, ids, params, request_id, streams, builders)) as outputs:
                async for output in outputs:
                    yield output
        finally:
            if params.n > 1:
                with self._lock:
                    del self._children[request_id]
                    self._pending_aborts.difference_update(child_ids)

    async def _outputs(self, prompt: Prompt, ids: list[int], params: SamplingParams, request_id: str,
                       streams: list[AsyncIterator[tuple[int, StepOutput]]],
                       builders: list[CompletionBuilder]) -> AsyncIterator[RequestOutput]:
        kind, prompt_logprobs = params.output_kind, None
        async with aclosing(streams[0] if params.n == 1 else merge(streams)) as outputs:
            async for j, output in outputs:
                builders[j].add(output)
                if output.prompt_logprobs is not None:
                    prompt_logprobs = prompt_logprob_dicts(output.prompt_logprobs, self.engine.tokenizer)
                finished = all(b.finished for b in builders)
                if kind is RequestOutputKind.FINAL_ONLY:
                    if not finished:
                        continue
                    completions = [b.output() for b in builders]
                else:
                    completions = [builders[j].output(kind)]
                yield RequestOutput(request_id, prompt_text(prompt), ids, prompt_logprobs, completions, finished,
                                    num_cached_tokens=output.num_cached_tokens)
                if kind is RequestOutputKind.DELTA:
                    prompt_logprobs = None  # as vLLM: a delta stream carries them once

    async def stream(self, prompt: list[int] | EngineRequest, params: SamplingParams | None = None,
                     request_id: str | None = None) -> AsyncIterator[StepOutput]:
        """Stream what each engine step adds to one request: prompt token ids with their params, or an
        EngineRequest the engine already checked (servers check every choice up front, to answer 400
        before streaming). Leaving the loop early (or cancellation) aborts the request and frees its
        KV blocks. Bad requests raise RequestError before anything is queued. The outputs' request_id
        is the engine's: the id given here with a serial number ("id#7")."""
        if self._closed:
            raise EngineDeadError("the engine is shut down")
        request = prompt if isinstance(prompt, EngineRequest) else self.engine.check_request(prompt, params)
        request_id = request_id or f"async-{next(self._ids)}"
        engine_id = f"{request_id}#{next(self._serials)}"
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            if request_id in self._engine_ids or request_id in self._children:
                raise NemotronError(f"request id {request_id!r} is already in use")
            aborted = request_id in self._pending_aborts
            if aborted:  # one of n completions whose generate() was aborted before this stream began
                self._pending_aborts.discard(request_id)
            else:
                self._engine_ids[request_id] = engine_id
                self._streams[engine_id] = (asyncio.get_running_loop(), queue)
                self._inbox.append((engine_id, request))
        if aborted:
            yield aborted_output(engine_id, None, len(request.prompt_ids))
            return
        self._wake.set()
        finished, last = False, None
        try:
            while True:
                item = await queue.get()
                if item is _ABORT:
                    item = aborted_output(engine_id, last, len(request.prompt_ids))
                elif isinstance(item, BaseException):
                    raise item
                finished, last = item.finished, item
                yield item
                if finished:
                    return
        finally:
            with self._lock:
                self._streams.pop(engine_id, None)
                del self._engine_ids[request_id]
                if not finished:
                    self._aborts.append(engine_id)
            self._wake.set()

    async def abort(self, request_id: str | Iterable[str]) -> None:
        """Stop requests by the ids given to generate() or stream() (unknown or finished ones are
        ignored, as in vLLM): each stream ends with a finished output saying finish_reason "abort",
        and the engine frees their KV blocks."""
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        with self._lock:
            for rid in ids:
                children = self._children.get(rid)
                for stream_id in children or [rid]:
                    engine_id = self._engine_ids.get(stream_id)
                    if engine_id is None:  # a completion not streaming yet ends as soon as it starts
                        if children is not None:
                            self._pending_aborts.add(stream_id)
                        continue
                    self._aborts.append(engine_id)
                    loop, queue = self._streams[engine_id]
                    loop.call_soon_threadsafe(queue.put_nowait, _ABORT)
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=1 if self._failed else 10)  # after fail() a step may never return
        if self._owner is not None:
            self._owner.close()

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
        torch.get_num_threads()  # fixes this thread's OpenMP count now, not inside another thread's OneThread
        while not self._closed:
            with self._lock:
                inbox, self._inbox = self._inbox, []
                aborts, self._aborts = self._aborts, []
            for engine_id, request in inbox:  # first: an abort may follow its request at once
                try:
                    self.engine.add_request(request, engine_id)
                except Exception as err:  # noqa: BLE001 (that request fails; the engine and the others go on)
                    if not isinstance(err, NemotronError):
                        log.exception("a request could not be added")
                        err = RequestError(f"the request could not be added: {err!r}")
                    self._deliver(engine_id, err)
            for engine_id in aborts:
                self.engine.abort(engine_id)
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


def aborted_output(engine_id: str, last: StepOutput | None, num_prompt_tokens: int) -> StepOutput:
    """The last output of a stream stopped by abort(): nothing new, finish_reason "abort", the counts so far."""
    if last is None:
        return StepOutput(engine_id, "", [], finished=True, finish_reason=ABORTED, num_prompt_tokens=num_prompt_tokens)
    return StepOutput(engine_id, "", [], finished=True, finish_reason=ABORTED, num_prompt_tokens=last.num_prompt_tokens,
                      num_output_tokens=last.num_output_tokens, num_cached_tokens=last.num_cached_tokens)


async def choice_stream(llm: AsyncLLM, index: int, request: EngineRequest,
                        request_id: str | None = None) -> AsyncIterator[tuple[int, StepOutput]]:
    """One choice (a request the engine checked) as (index, what each step added). Leaving early (or
    cancelling) aborts it."""
    async with aclosing(llm.stream(request, request_id=request_id)) as outputs:
        async for output in outputs:
            yield index, output


async def merge(streams: list[AsyncIterator[T]]) -> AsyncIterator[T]:
    """The items of several streams in the order they come. An error in one ends the merged stream;
    closing the merged stream cancels (and so aborts) all of them."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(stream: AsyncIterator[T]) -> None:
        try:
            async with aclosing(stream):
                async for item in stream:
                    queue.put_nowait(item)
        except Exception as err:  # handed to the consumer, which raises it
            queue.put_nowait(err)
        finally:
            queue.put_nowait(done)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is done:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
