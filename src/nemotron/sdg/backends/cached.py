"""Backends that answer from the call cache first and record every new answer in it."""
from __future__ import annotations

from nemotron.sdg.backends.base import ChatBackend, ChatResult, Messages, RewardBackend, Sampling
from nemotron.sdg.cache import CallCache, call_key


class _Cached:
    """What both wrappers share: the wrapped backend's identity, stats and window."""

    def __init__(self, backend: ChatBackend | RewardBackend, cache: CallCache) -> None:
        self.backend = backend
        self.cache = cache
        self.model = backend.model
        self.stats = backend.stats

    @property
    def in_flight(self) -> int:
        return self.backend.in_flight

    @property
    def concurrency(self) -> int:
        return self.backend.concurrency

    async def aclose(self) -> None:
        await self.backend.aclose()


class CachedChat(_Cached):
    async def chat(self, messages: Messages, sampling: Sampling) -> ChatResult:
        key = call_key("chat", self.model, {"messages": messages, **sampling.payload()})
        hit = self.cache.get(key)
        if hit is not None:
            return ChatResult.from_dict(hit, cached=True)
        result = await self.backend.chat(messages, sampling)
        self.cache.put(key, result.to_dict())
        return result


class CachedReward(_Cached):
    async def score(self, messages: Messages) -> dict[str, float]:
        key = call_key("reward", self.model, {"messages": messages})
        hit = self.cache.get(key)
        if hit is not None:
            return hit["scores"]
        scores = await self.backend.score(messages)
        self.cache.put(key, {"scores": scores})
        return scores
