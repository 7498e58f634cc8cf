"""Every knob of the server in one place; the CLI fills it from flags (and the API key's env var)."""
from __future__ import annotations

from dataclasses import dataclass, field

from nemotron.engine.llm_engine import EngineConfig
from nemotron.engine.reward_scorer import ScorerConfig


@dataclass(slots=True, frozen=True)
class ServerConfig:
    model_name: str = "nemotron"  # the id /v1/models lists and responses report
    api_key: str | None = None  # None: no authentication
    max_body_bytes: int = 16 * 1024**2
    request_timeout_s: float = 600.0  # a request still running after this is cancelled (HTTP 408)
    max_choices: int = 128  # NeMo's limit on `sentences`; also OpenAI's prompts x n per request
    max_top_logprobs: int = 20  # OpenAI `logprobs` / `top_logprobs`
    max_full_logprob_values: int = 1 << 22  # NeMo all_probs: positions x vocabulary per response
    # A prompt of more characters is refused before it is tokenized; None: twice the context times
    # the vocabulary's longest piece (so many characters cannot fit in the context).
    max_prompt_chars: int | None = None
    shutdown_timeout_s: float = 30.0  # SIGTERM: how long running requests may finish (new ones get 503)
    # Host header names served besides IP addresses and localhost (a browser page on another name is
    # refused: DNS rebinding); "*" serves any.
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()  # origins whose pages may call the API; empty: CORS off
    engine: EngineConfig = field(default_factory=EngineConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)

    def __post_init__(self) -> None:
        if not self.model_name:
            raise ValueError("model_name must not be empty")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must be None (no authentication) or a non-empty string")
        for name in ("max_body_bytes", "max_choices", "max_top_logprobs", "max_full_logprob_values"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_prompt_chars is not None and self.max_prompt_chars < 1:
            raise ValueError(f"max_prompt_chars must be None or >= 1, got {self.max_prompt_chars}")
        for name in ("request_timeout_s", "shutdown_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("allowed_hosts", "cors_origins"):
            if isinstance(getattr(self, name), str) or not all(isinstance(h, str) and h for h in getattr(self, name)):
                raise ValueError(f"{name} must be a tuple of non-empty strings, got {getattr(self, name)!r}")
