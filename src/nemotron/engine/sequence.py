"""One request as the engine tracks it: its tokens, how many have their K/V cached, and its blocks."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum

import torch

from nemotron.engine.sampling import SamplingParams, make_generator


class SequenceStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False, slots=True)
class Sequence:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    arrival: float = field(default_factory=time.monotonic)
    token_ids: list[int] = field(default_factory=list)  # prompt + output
    status: SequenceStatus = SequenceStatus.WAITING
    num_computed: int = 0  # leading tokens whose K/V are in the cache
    block_table: list[int] = field(default_factory=list)
    state_slot: int | None = None  # hybrid models: its Mamba state slot while running (engine/mamba_state.py)
    num_hashed_blocks: int = 0  # leading blocks registered for prefix sharing
    last_block_hash: int = -1  # hash of block num_hashed_blocks - 1 (chain input of the next)
    num_cached_prompt_tokens: int = 0  # served by prefix caching, for usage reports
    output_logprobs: list[float] = field(default_factory=list)
    output_top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    prompt_logprobs: list[float | None] | None = None  # filled when params ask for them
    finish_reason: str | None = None
    stop: str | int | None = None
    generator: torch.Generator | None = None
    num_preemptions: int = 0

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_ids)
        if self.generator is None:
            self.generator = make_generator(self.params.seed)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_ids):]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_ids)

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED
