"""What the server holds: the model (loaded on a background thread) and the machinery serving it."""
from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from nemotron.checkpoint.load import LoadedModel
from nemotron.engine.async_llm import AsyncLLM
from nemotron.engine.llm_engine import LLMEngine
from nemotron.engine.reward_scorer import RewardScorer
from nemotron.errors import NemotronError
from nemotron.model.nemotron_h import CAUSAL_LMS
from nemotron.parallel.runtime import channel_for
from nemotron.server.config import ServerConfig
from nemotron.server.drain import Drain
from nemotron.server.errors import APIError, bad_request
from nemotron.server.metrics import Metrics, engine_gauges
from nemotron.tokenizer import Tokenizer

log = logging.getLogger(__name__)

ModelSource = LoadedModel | Callable[[], LoadedModel]
T = TypeVar("T")


@dataclass(slots=True)
class ServedModel:
    name: str
    loaded: LoadedModel
    tokenizer: Tokenizer
    context_len: int
    created: int
    max_prompt_chars: int  # a longer text is refused before tokenizing (it cannot fit the context)
    llm: AsyncLLM | None = None  # a language model ...
    reward: RewardScorer | None = None  # ... or a reward model

    @classmethod
    def build(cls, loaded: LoadedModel, config: ServerConfig) -> ServedModel:
        loaded.require_tokenizer("--tokenizer FILE")
        if loaded.tokenizer.vocab_size > loaded.config.vocab_size:
            raise NemotronError(f"the tokenizer has {loaded.tokenizer.vocab_size} pieces but the model only "
                                f"{loaded.config.vocab_size} embeddings")
        context = config.engine.max_model_len or loaded.config.max_position_embeddings  # (the engine checks it)
        # A token covers at most its piece's characters (control pieces written in text included), so
        # a text longer than context x the longest piece has more tokens than the context, unless the
        # tokenizer's normalisation drops or composes characters (runs of spaces, combining marks):
        # twice that leaves room for it.
        longest = max(len(loaded.tokenizer.id_to_piece(i)) for i in range(loaded.tokenizer.vocab_size))
        served = cls(config.model_name, loaded, loaded.tokenizer, context, int(time.time()),
                     config.max_prompt_chars or 2 * context * max(longest, 1))
        if isinstance(loaded.model, CAUSAL_LMS):
            engine = LLMEngine(loaded.model, loaded.tokenizer, config.engine)
            served.llm = AsyncLLM(engine)
        else:
            served.reward = RewardScorer(loaded.model, config.scorer, pad_id=loaded.tokenizer.pad_id or 0,
                                         channel=channel_for(config.engine.parallel))
        return served

    def encode(self, text: str, field: str, add_bos: bool = False) -> list[int]:
        """Tokenize a prompt (on a worker thread: this is the slow part of a large request), refusing
        without tokenizing one that is too long to fit however it tokenizes."""
        if len(text) > self.max_prompt_chars:
            raise bad_request(f"{field} has {len(text)} characters; at most {self.max_prompt_chars} can fit the "
                              f"model's context of {self.context_len} tokens", field)
        return self.tokenizer.encode(text, add_bos=add_bos)

    def gauges(self) -> dict[str, float]:
        if self.llm is not None:
            return engine_gauges(self.llm.engine.stats())
        return {"reward_batches_total": self.reward.num_batches}

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
        if self.reward is not None:
            self.reward.close()


class ServerState:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.drain = Drain()
        # Request CPU work off the event loop (parsing, tokenizing, rendering large answers), so that
        # /health and streams keep answering while a large request is prepared.
        self._cpu = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nemotron-request")
        self.model: ServedModel | None = None
        self.load_error: str | None = None
        self._settled: asyncio.Event | None = None
        self._loader: threading.Thread | None = None
        self._built: list[ServedModel] = []  # what the loader built, even if the loop never took it

    @property
    def ready(self) -> bool:
        return self.model is not None

    def start_loading(self, source: ModelSource, on_error: Callable[[BaseException], None] | None) -> None:
        """Load (and build the engine) on a thread; the event loop keeps answering /health."""
        loop = asyncio.get_running_loop()
        self._settled = asyncio.Event()

        def load() -> None:
            try:
                served = ServedModel.build(source() if callable(source) else source, self.config)
            except Exception as err:  # reported by /health and to on_error; the server cannot serve
                if isinstance(err, NemotronError):
                    log.error("loading the model failed: %s", err)
                else:
                    log.exception("loading the model failed")
                _call_soon(loop, self._failed, err, on_error)
            else:
                self._built.append(served)
                _call_soon(loop, self._loaded, served)

        self._loader = threading.Thread(target=load, name="nemotron-load", daemon=True)
        self._loader.start()

    def _loaded(self, served: ServedModel) -> None:
        self.model = served
        self._settled.set()
        log.info("model %s is ready", served.name)
        reason = served.llm.engine.prefix_caching_off_reason if served.llm is not None else None
        if reason:
            log.info("%s", reason)

    def _failed(self, err: BaseException, on_error: Callable[[BaseException], None] | None) -> None:
        self.load_error = str(err) or type(err).__name__
        self._settled.set()
        if on_error is not None:
            on_error(err)

    async def run_cpu(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._cpu, functools.partial(fn, *args, **kwargs))

    async def served(self) -> ServedModel:
        """The model; a request arriving while it loads waits (up to the request timeout)."""
        if self._settled is not None and not self._settled.is_set():
            try:
                await asyncio.wait_for(self._settled.wait(), self.config.request_timeout_s)
            except asyncio.TimeoutError:
                raise APIError(503, "the model is still loading; try again later", code="loading",
                               headers={"Retry-After": "10"}) from None
        if self.model is None:
            raise APIError(503, f"the model failed to load: {self.load_error}", code="load_failed")
        return self.model

    def close(self) -> None:
        """Stop serving. A load still under way is waited for: torch must not be torn down under it."""
        if self._loader is not None:
            self._loader.join()
        for served in self._built:
            served.close()
        self._built.clear()
        self.model = None
        self._cpu.shutdown(wait=False, cancel_futures=True)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable, *args: object) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop is closed; close() cleans up
        pass
