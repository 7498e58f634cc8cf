"""Continuous batching: which sequences compute how many tokens in the next model step.

Each step has a token budget. Running sequences go first, decodes (one token each) before
unfinished prefills (which continue with their next chunk), then waiting ones are admitted first-come-first-served,
their prompts split into chunks so that long prefills never stall running decodes for long. When
the KV pool runs out, the most recently arrived running sequence is preempted: its blocks are
freed and it waits to be recomputed (its prefix blocks usually still sit in the cache).
A hybrid model's sequences also hold a Mamba state slot from admission to finish or preemption.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nemotron.engine.block_manager import BlockManager
from nemotron.engine.sequence import Sequence, SequenceStatus
from nemotron.memory.planner import SCORED_TOKENS

if TYPE_CHECKING:
    from nemotron.engine.mamba_state import StateSlots


@dataclass(slots=True, frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 256  # sequences in one step
    max_num_batched_tokens: int = 2048  # tokens computed in one step (prefill chunk budget)
    # Prompt tokens scored (prompt log-probabilities) in one step: each needs a row of logits.
    max_scored_tokens: int = SCORED_TOKENS

    def __post_init__(self) -> None:
        if min(self.max_num_seqs, self.max_num_batched_tokens, self.max_scored_tokens) < 1:
            raise ValueError("max_num_seqs, max_num_batched_tokens and max_scored_tokens must be >= 1")


@dataclass(slots=True)
class ScheduledChunk:
    seq: Sequence
    start: int  # first token position computed in this step
    num_tokens: int

    @property
    def samples(self) -> bool:
        """Whether this step reaches the end of the sequence's known tokens, so a new token is drawn
        (never for scoring-only requests with max_tokens 0)."""
        return self.start + self.num_tokens == self.seq.num_tokens and self.seq.params.max_tokens != 0


class Scheduler:
    def __init__(self, config: SchedulerConfig, blocks: BlockManager, slots: StateSlots | None = None) -> None:
        self.config = config
        self.blocks = blocks
        self.slots = slots  # hybrid models: one Mamba state slot per running sequence
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[ScheduledChunk]:
        budget = self.config.max_num_batched_tokens
        scoring = self.config.max_scored_tokens  # logits rows left for prompt log-probabilities
        chunks: list[ScheduledChunk] = []
        preempted = False
        # Decodes first (one token each), then unfinished prefills: a long prompt never stalls decoding.
        decoding = [s for s in self.running if s.num_tokens - s.num_computed == 1]
        prefilling = [s for s in self.running if s.num_tokens - s.num_computed > 1]
        scheduled: set[Sequence] = set()
        for seq in decoding + prefilling:
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:  # preempted earlier in this loop
                continue
            num_tokens = min(seq.num_tokens - seq.num_computed, budget, scoring if _scores(seq) else budget)
            if num_tokens == 0:
                continue
            while not self._reserve(seq, seq.num_computed + num_tokens):
                # The newest sequence not yet given work this step makes room (possibly seq itself).
                victim = next(s for s in reversed(self.running) if s not in scheduled)
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            if seq.status is SequenceStatus.RUNNING:
                scoring -= num_tokens if _scores(seq) else 0
                chunks.append(ScheduledChunk(seq, seq.num_computed, num_tokens))
                scheduled.add(seq)
                budget -= num_tokens
        # Admit new work only when nothing had to make room: otherwise they would evict each other.
        while self.waiting and budget > 0 and not preempted and len(self.running) < self.config.max_num_seqs:
            scores = _scores(self.waiting[0])
            chunk = self._admit(self.waiting[0], min(budget, scoring) if scores else budget)
            if chunk is None:
                break
            scoring -= chunk.num_tokens if scores else 0
            self.waiting.popleft()
            self.running.append(chunk.seq)
            chunks.append(chunk)
            budget -= chunk.num_tokens
        return chunks

    def finish(self, seq: Sequence) -> None:
        """Release a finished or aborted sequence wherever it is."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free(seq.block_table)
        seq.block_table = []
        self._free_slot(seq)
        seq.status = SequenceStatus.FINISHED

    def register_computed_blocks(self, seq: Sequence) -> None:
        """After a step: make newly filled blocks findable for prefix sharing."""
        size = self.blocks.block_size
        while seq.num_hashed_blocks < seq.num_computed // size:
            i = seq.num_hashed_blocks
            tokens = tuple(seq.token_ids[i * size:(i + 1) * size])
            seq.last_block_hash = self.blocks.register_full_block(seq.block_table[i], tokens, seq.last_block_hash)
            seq.num_hashed_blocks += 1

    # ---- internals ---------------------------------------------------------------------------
    def _admit(self, seq: Sequence, budget: int) -> ScheduledChunk | None:
        if budget == 0:
            return None
        # Prompt log-probabilities need logits at every prompt position, so nothing may be skipped.
        needs_all_logits = seq.params.prompt_logprobs is not None and seq.prompt_logprobs is None
        cached = [] if needs_all_logits else self.blocks.cached_prefix(seq.token_ids)
        num_cached = len(cached) * self.blocks.block_size
        num_tokens = min(seq.num_tokens - num_cached, budget)
        needed = self.blocks.blocks_needed(num_cached + num_tokens) - len(cached)
        if not self.blocks.can_allocate(needed, cached) or (self.slots is not None and self.slots.num_free == 0):
            return None
        if self.slots is not None:
            seq.state_slot = self.slots.allocate()
        self.blocks.share(cached)
        self.blocks.record_lookup(seq.num_tokens, num_cached)
        seq.block_table = list(cached)
        seq.block_table += [self.blocks.allocate() for _ in range(needed)]
        seq.num_computed = num_cached
        seq.num_hashed_blocks = len(cached)
        seq.last_block_hash = self.blocks.hash_of(cached[-1]) if cached else -1
        if seq.num_preemptions == 0:
            seq.num_cached_prompt_tokens = num_cached
        seq.status = SequenceStatus.RUNNING
        return ScheduledChunk(seq, num_cached, num_tokens)

    def _reserve(self, seq: Sequence, num_tokens: int) -> bool:
        """Grow seq's block table to hold num_tokens tokens; False when the pool is out of blocks."""
        needed = self.blocks.blocks_needed(num_tokens) - len(seq.block_table)
        if needed <= 0:
            return True
        if not self.blocks.can_allocate(needed):
            return False
        seq.block_table += [self.blocks.allocate() for _ in range(needed)]
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq.block_table)
        seq.block_table = []
        self._free_slot(seq)  # recompute rebuilds the state from the first token, like the K/V
        seq.num_computed = 0
        seq.num_hashed_blocks = 0
        seq.last_block_hash = -1
        if seq.prompt_logprobs is not None and len(seq.prompt_logprobs) < seq.num_prompt_tokens:
            seq.prompt_logprobs = None  # recomputed from the start, like the K/V
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def _free_slot(self, seq: Sequence) -> None:
        if seq.state_slot is not None:
            self.slots.free(seq.state_slot)
            seq.state_slot = None


def _scores(seq: Sequence) -> bool:
    """Whether the sequence's next tokens include prompt positions to score (prompt log-probabilities)."""
    return seq.scores_prompt and seq.num_computed < seq.num_prompt_tokens - 1
