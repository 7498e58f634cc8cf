"""What a pipeline asks of a model, whatever serves it: chat replies and reward scores.

Two small contracts (`ChatBackend`, `RewardBackend`) with two implementations each: an
OpenAI-compatible HTTP endpoint (`http.py`) and the in-process engine (`engine.py`). `cached.py`
wraps either with the call cache.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from nemotron.errors import NemotronError

Messages = list[dict[str, str]]  # [{"role": "user", "content": "..."}, ...]


class Pausable(Protocol):
    """What runs the current unit of work (the pipeline's scheduler): told when the unit waits."""

    def pause(self) -> None: ...

    async def resume(self) -> None: ...


# Set by the pipeline in each unit's task; backends read it around backoff sleeps.
CURRENT_UNIT: ContextVar[Pausable | None] = ContextVar("current_unit", default=None)


@asynccontextmanager
async def waiting() -> AsyncIterator[None]:
    """A backoff sleep: the unit gives its place in the pipeline's window to another unit meanwhile,
    and takes one again (waiting for it) before its next attempt."""
    unit = CURRENT_UNIT.get()
    if unit is None:
        yield
        return
    unit.pause()
    yield  # cancelled here, the unit ends paused (the scheduler counts it out either way)
    await unit.resume()


class BackendError(NemotronError):
    """A call that failed for good: a refused request, or a transient failure that outlived its
    retries. Pipelines count it against the record and go on."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Sampling:
    """Generation settings of one call. `seed` makes a call reproducible on servers that honour it
    (ours does); the pipeline derives one per record and call."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 1024
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 100.0:
            raise ValueError(f"temperature must be in [0, 100], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if isinstance(self.stop, (str, list)):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must hold non-empty strings, got {self.stop!r}")

    def payload(self) -> dict:
        """OpenAI request fields."""
        body: dict = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}
        if self.stop:
            body["stop"] = list(self.stop)
        if self.seed is not None:
            body["seed"] = self.seed
        return body


@dataclass(slots=True)
class ChatResult:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    cached: bool = False  # answered from the call cache, not by the model

    def to_dict(self) -> dict:
        return {"text": self.text, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "finish_reason": self.finish_reason}

    @classmethod
    def from_dict(cls, data: dict, cached: bool = False) -> ChatResult:
        return cls(data["text"], data["prompt_tokens"], data["completion_tokens"], data["finish_reason"], cached)


@dataclass(slots=True)
class BackendStats:
    """Counters a progress bar and the run summary read."""

    requests: int = 0  # sent over the wire (attempts, retries included)
    completed: int = 0
    retries: int = 0
    failures: int = 0  # calls that raised BackendError
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # "429", "timeout", ... -> count

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class ChatBackend(Protocol):
    model: str  # the model's name, part of every cache key
    stats: BackendStats

    @property
    def in_flight(self) -> int: ...

    @property
    def concurrency(self) -> int: ...  # the current limit on calls in flight

    async def chat(self, messages: Messages, sampling: Sampling) -> ChatResult: ...

    async def aclose(self) -> None: ...


class RewardBackend(Protocol):
    model: str
    stats: BackendStats

    @property
    def in_flight(self) -> int: ...

    @property
    def concurrency(self) -> int: ...

    async def score(self, messages: Messages) -> dict[str, float]: ...

    async def aclose(self) -> None: ...
