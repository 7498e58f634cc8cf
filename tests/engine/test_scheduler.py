"""Scheduler and block manager in isolation: budgets, ordering, sharing, eviction."""
from __future__ import annotations

from nemotron.engine.block_manager import BlockManager
from nemotron.engine.sampling import SamplingParams
from nemotron.engine.scheduler import Scheduler, SchedulerConfig
from nemotron.engine.sequence import Sequence


def seq(name: str, length: int, first: int = 10) -> Sequence:
    return Sequence(name, list(range(first, first + length)), SamplingParams(max_tokens=8))


def run_step(scheduler: Scheduler, sample: bool = True) -> list[tuple[str, int, int]]:
    chunks = scheduler.schedule()
    for chunk in chunks:
        chunk.seq.num_computed = chunk.start + chunk.num_tokens
        scheduler.register_computed_blocks(chunk.seq)
        if sample and chunk.samples:
            chunk.seq.token_ids.append(7)
    return [(c.seq.request_id, c.start, c.num_tokens) for c in chunks]


def test_long_prompt_is_chunked_and_decodes_keep_flowing():
    scheduler = Scheduler(SchedulerConfig(max_num_batched_tokens=8), BlockManager(64, 4))
    scheduler.add(seq("short", 3))
    assert run_step(scheduler) == [("short", 0, 3)]
    scheduler.add(seq("long", 20, first=100))
    assert run_step(scheduler) == [("short", 3, 1), ("long", 0, 7)]
    assert run_step(scheduler) == [("short", 4, 1), ("long", 7, 7)]
    assert run_step(scheduler) == [("short", 5, 1), ("long", 14, 6)]
    assert run_step(scheduler) == [("short", 6, 1), ("long", 20, 1)]


def test_newest_unscheduled_sequence_is_preempted_and_requeued_first():
    blocks = BlockManager(4, 4)  # 16 slots
    scheduler = Scheduler(SchedulerConfig(), blocks)
    scheduler.add(seq("a", 7))
    scheduler.add(seq("b", 7, first=50))
    assert run_step(scheduler) == [("a", 0, 7), ("b", 0, 7)]  # 2 blocks each: pool full
    assert run_step(scheduler) == [("a", 7, 1), ("b", 7, 1)]  # 8 tokens: still 2 blocks each
    assert run_step(scheduler) == [("a", 8, 1)]  # a 9th token needs a third block: "b" gives way
    assert [s.request_id for s in scheduler.running] == ["a"]
    assert [s.request_id for s in scheduler.waiting] == ["b"]
    assert scheduler.num_preemptions == 1 and scheduler.waiting[0].num_computed == 0


def test_prefix_blocks_are_shared_and_at_least_one_token_is_computed():
    blocks = BlockManager(16, 4)
    scheduler = Scheduler(SchedulerConfig(max_num_seqs=1), blocks)
    first, second = seq("first", 8), seq("second", 8)  # identical prompts
    scheduler.add(first)
    run_step(scheduler)
    scheduler.finish(first)
    scheduler.add(second)
    # Both full blocks are cached, but the last token must be computed again for its logits.
    assert run_step(scheduler) == [("second", 4, 4)]
    assert second.num_cached_prompt_tokens == 4


def test_freed_cached_blocks_are_evicted_least_recently_freed_first():
    blocks = BlockManager(3, 2)
    a = [blocks.allocate() for _ in range(3)]
    for i, block_id in enumerate(a):
        blocks.register_full_block(block_id, (i, i), previous_hash=-1)
    blocks.free([a[2]])
    blocks.free([a[0]])
    assert blocks.cached_prefix([0, 0, 9]) == [a[0]]
    fresh = blocks.allocate()  # evicts a[2], freed before a[0]
    assert fresh == a[2] and blocks.cached_prefix([2, 2, 9]) == []
    assert blocks.cached_prefix([0, 0, 9]) == [a[0]]


def test_scored_prompt_positions_per_step_stay_within_their_budget():
    """Prompt log-probabilities need a row of logits per prompt position: at most max_scored_tokens
    of them a step, shared by every scoring sequence; others are not held back."""
    scheduler = Scheduler(SchedulerConfig(max_num_batched_tokens=16, max_scored_tokens=5), BlockManager(64, 4))
    scored = [Sequence(name, list(range(first, first + 9)), SamplingParams(max_tokens=2, prompt_logprobs=0))
              for name, first in (("s1", 10), ("s2", 40))]
    scheduler.add(scored[0])
    scheduler.add(seq("plain", 6, first=100))
    scheduler.add(scored[1])
    assert run_step(scheduler) == [("s1", 0, 5), ("plain", 0, 6)]  # s2 waits: the scoring budget is spent
    assert run_step(scheduler) == [("plain", 6, 1), ("s1", 5, 4), ("s2", 0, 1)]
    assert run_step(scheduler) == [("s1", 9, 1), ("plain", 7, 1), ("s2", 1, 5)]
    assert run_step(scheduler) == [("s1", 10, 1), ("plain", 8, 1), ("s2", 6, 3)]
