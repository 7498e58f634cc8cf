"""The in-process engine as a backend: no HTTP, the same chat format and reward prompt as the server.

    chat = EngineChat.load("path/to/instruct", EngineConfig(...))
    reward = EngineReward.load("path/to/reward")
"""
from __future__ import annotations

from pathlib import Path

from nemotron.engine.async_llm import AsyncLLM
from nemotron.engine.llm_engine import EngineConfig, LLMEngine
from nemotron.engine.reward_scorer import RewardScorer, ScorerConfig
from nemotron.engine.sampling import RequestOutputKind, SamplingParams
from nemotron.errors import NemotronError
from nemotron.sdg.backends.base import BackendError, BackendStats, ChatResult, Messages, Sampling
from nemotron.sdg.backends.limiter import AdaptiveLimiter, ConcurrencyConfig
from nemotron.tokenizer import CHAT_STOP_STRINGS, ChatFormatError, Tokenizer, render_chat, render_reward_prompt

REPORTED = slice(4, 9)  # the five attributes the hosted reward service reports


def _load(spec: str | Path, dtype: str | None, device: str | None):
    import torch

    from nemotron.checkpoint.load import load_model

    loaded = load_model(spec, dtype=dtype, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if loaded.tokenizer is None:
        raise NemotronError(f"{spec} comes without a tokenizer")
    return loaded


def cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """The text before the earliest stop string (the engine stops after one, and keeps it)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


class _InProcess:
    """What both engine backends share: the tokenizer, the model's name, stats and a concurrency window."""

    def __init__(self, tokenizer: Tokenizer, model: str, concurrency: ConcurrencyConfig) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.stats = BackendStats()
        self.limiter = AdaptiveLimiter(concurrency)

    @property
    def in_flight(self) -> int:
        return self.limiter.in_flight

    @property
    def concurrency(self) -> int:
        return self.limiter.limit


class EngineChat(_InProcess):
    def __init__(self, llm: AsyncLLM, tokenizer: Tokenizer, model: str,
                 concurrency: ConcurrencyConfig = ConcurrencyConfig(adaptive=False)) -> None:
        super().__init__(tokenizer, model, concurrency)
        self.llm = llm

    @classmethod
    def load(cls, spec: str | Path, engine: EngineConfig = EngineConfig(), *, dtype: str | None = None,
             device: str | None = None, model: str | None = None,
             concurrency: ConcurrencyConfig = ConcurrencyConfig(adaptive=False)) -> EngineChat:
        from nemotron.model.nemotron_h import CAUSAL_LMS

        loaded = _load(spec, dtype, device)
        if not isinstance(loaded.model, CAUSAL_LMS):
            raise NemotronError(f"{spec} is a reward model; use it as the pipeline's reward model")
        llm = AsyncLLM(LLMEngine(loaded.model, loaded.tokenizer, engine))
        return cls(llm, loaded.tokenizer, model or Path(spec).name, concurrency)

    async def chat(self, messages: Messages, sampling: Sampling) -> ChatResult:
        try:
            ids = self.tokenizer.encode(render_chat(messages))
        except ChatFormatError as err:
            self.stats.failures += 1
            raise BackendError(str(err)) from None
        stops = (*CHAT_STOP_STRINGS, *sampling.stop)
        params = SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature,  # 0: greedy
                                top_p=sampling.top_p, seed=sampling.seed, stop=list(stops),
                                output_kind=RequestOutputKind.FINAL_ONLY)
        text, produced, reason = "", 0, None
        async with self.limiter.slot():
            self.stats.requests += 1
            try:
                async for result in self.llm.generate(ids, params):
                    completion = result.outputs[0]
                    text, produced, reason = completion.text, len(completion.token_ids), completion.finish_reason
            except NemotronError as err:  # a prompt too long, an engine shut down
                self.stats.failures += 1
                raise BackendError(str(err)) from None
        self.stats.completed += 1
        self.stats.prompt_tokens += len(ids)
        self.stats.completion_tokens += produced
        return ChatResult(cut_at_stop(text, stops), len(ids), produced, reason)

    async def aclose(self) -> None:
        self.llm.close()


class EngineReward(_InProcess):
    def __init__(self, scorer: RewardScorer, tokenizer: Tokenizer, model: str,
                 concurrency: ConcurrencyConfig = ConcurrencyConfig(adaptive=False)) -> None:
        super().__init__(tokenizer, model, concurrency)
        self.scorer = scorer

    @classmethod
    def load(cls, spec: str | Path, scorer: ScorerConfig = ScorerConfig(), *, dtype: str | None = None,
             device: str | None = None, model: str | None = None,
             concurrency: ConcurrencyConfig = ConcurrencyConfig(adaptive=False)) -> EngineReward:
        from nemotron.model.nemotron_h import CAUSAL_LMS

        loaded = _load(spec, dtype, device)
        if isinstance(loaded.model, CAUSAL_LMS):
            raise NemotronError(f"{spec} is a language model, not a reward model")
        return cls(RewardScorer(loaded.model, scorer, pad_id=loaded.tokenizer.pad_id or 0), loaded.tokenizer,
                   model or Path(spec).name, concurrency)

    async def score(self, messages: Messages) -> dict[str, float]:
        from nemotron.model.config import REWARD_ATTRIBUTES

        async with self.limiter.slot():
            self.stats.requests += 1
            try:
                ids = self.tokenizer.encode(render_reward_prompt(messages))
                self.scorer.check(ids)
                scores = await self.scorer.score(ids)
            except NemotronError as err:
                self.stats.failures += 1
                raise BackendError(str(err)) from None
        self.stats.completed += 1
        self.stats.prompt_tokens += len(ids)
        if len(scores) == len(REWARD_ATTRIBUTES):
            return dict(list(zip(REWARD_ATTRIBUTES, scores))[REPORTED])
        return {f"attribute_{i}": s for i, s in enumerate(scores)}

    async def aclose(self) -> None:
        self.scorer.close()
