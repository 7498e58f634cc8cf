"""Model backends for the pipeline: OpenAI-compatible HTTP endpoints and the in-process engine."""
from __future__ import annotations

from typing import TYPE_CHECKING

from nemotron.errors import NemotronError
from nemotron.sdg.backends.base import (BackendError, BackendStats, ChatBackend, ChatResult, Messages,
                                        RewardBackend, Sampling)
from nemotron.sdg.backends.cached import CachedChat, CachedReward
from nemotron.sdg.backends.limiter import AdaptiveLimiter, ConcurrencyConfig

if TYPE_CHECKING:
    from nemotron.sdg.config import ModelSpec


def open_backend(spec: ModelSpec, api_key: str | None = None, seed: int = 0) -> ChatBackend | RewardBackend:
    """The backend a config's model entry describes (HTTP endpoint or in-process engine)."""
    concurrency = ConcurrencyConfig(max_concurrency=spec.max_concurrency, adaptive=spec.adaptive)
    if spec.endpoint:
        from nemotron.sdg.backends.http import HttpClient, OpenAIChat, OpenAIReward, RetryConfig

        try:
            client = HttpClient(spec.endpoint, api_key, concurrency,
                                RetryConfig(max_attempts=spec.max_attempts, timeout=spec.timeout), seed=seed)
        except ValueError as err:
            raise NemotronError(f"models.{spec.name}: {err}") from None
        return (OpenAIChat if spec.kind == "chat" else OpenAIReward)(client, spec.model)
    if spec.engine:
        from nemotron.engine.llm_engine import EngineConfig
        from nemotron.sdg.backends.engine import EngineChat, EngineReward

        if spec.kind == "chat":
            return EngineChat.load(spec.engine, EngineConfig(max_num_seqs=spec.max_concurrency), dtype=spec.dtype,
                                   device=spec.device, model=spec.model, concurrency=concurrency)
        return EngineReward.load(spec.engine, dtype=spec.dtype, device=spec.device, model=spec.model,
                                 concurrency=concurrency)
    raise NemotronError(f"model {spec.name!r} has neither an endpoint nor an engine: set models.{spec.name}.endpoint "
                        f"(or pass --endpoint for the generator, --reward-endpoint for the reward model)")


__all__ = ["AdaptiveLimiter", "BackendError", "BackendStats", "CachedChat", "CachedReward", "ChatBackend",
           "ChatResult", "ConcurrencyConfig", "Messages", "RewardBackend", "Sampling", "open_backend"]
