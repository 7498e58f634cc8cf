"""Tensor/pipeline-parallel forward passes on gloo ranks give the single-process logits (fp32, 1e-5).

Each rank loads its shard straight from the Hugging Face files of a tiny random model (load_sharded);
the reference is the same directory loaded whole by load_model, in the same process."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from nemotron.checkpoint.load import load_model
from nemotron.engine.paged_cache import BatchLayout, PagedKVCache
from nemotron.model.nemotron import build_model, fuse_qkv, init_random_weights
from nemotron.parallel import (MicroBatch, ParallelLayout, StageTimes, bubble_fraction, load_sharded, pipeline_forward,
                               pipeline_stage, result_to_rank0, tensor_parallel)
from tests.conftest import TINY_CONFIG, random_model_dir
from tests.parallel.launch import run_ranks

LAYOUTS = [(2, 1), (4, 1), (1, 2), (2, 2)]  # TINY_CONFIG has 2 KV heads: TP 4 replicates them


def _inputs(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, vocab, (2, 9), generator=torch.Generator().manual_seed(5))
    return ids, torch.arange(9).expand(2, 9)


def _causal_lm_logits(rank, world, path, tp, pp):
    layout = ParallelLayout.from_world(tp, pp)
    model = load_sharded(path, layout).model
    ids, positions = _inputs(model.config.vocab_size)
    times = StageTimes()
    halves = [MicroBatch(positions[i:i + 1], ids[i:i + 1]) for i in range(2)]  # two micro-batches in flight
    hidden = pipeline_forward(model, layout, halves, times)
    logits = None
    if layout.is_last_stage:
        with torch.no_grad():
            logits = model.lm_head(torch.cat(hidden))  # gathered over the TP group
    logits = result_to_rank0(logits if layout.tp_rank == 0 else None, (2, 9, model.config.vocab_size),
                             torch.float32, layout)
    return {"logits": logits, "bubble": times.bubble}


@pytest.mark.parametrize(("tp", "pp"), LAYOUTS)
def test_causal_lm_logits_match_one_process(tmp_path, tiny_model_dir, tp, pp):
    results = run_ranks(_causal_lm_logits, tp * pp, tmp_path / "run", str(tiny_model_dir), tp, pp)
    reference = load_model(tiny_model_dir).model
    ids, positions = _inputs(TINY_CONFIG.vocab_size)
    with torch.no_grad():
        expected = reference(ids, positions)
    assert (results[0]["logits"] - expected).abs().max().item() <= 1e-5
    assert all(r["logits"] is None for r in results[1:])
    assert all(0 <= r["bubble"] < 1 for r in results)
    assert bubble_fraction(pp, 2) == (pp - 1) / (pp + 1)


def test_vocabulary_not_divisible_by_tp(tmp_path, tmp_path_factory, sp_tokenizer_file):
    """321 rows over 2 ranks: the last rank's embedding and head partitions are padded, the padding
    logits dropped after the gather."""
    config = dataclasses.replace(TINY_CONFIG, vocab_size=321)
    path = random_model_dir(tmp_path_factory, sp_tokenizer_file, config, "vocab321", seed=6)
    results = run_ranks(_causal_lm_logits, 2, tmp_path / "run", str(path), 2, 1)
    ids, positions = _inputs(321)
    with torch.no_grad():
        expected = load_model(path).model(ids, positions)
    assert results[0]["logits"].shape == expected.shape
    assert (results[0]["logits"] - expected).abs().max().item() <= 1e-5


def _reward_scores(rank, world, path, tp, pp):
    layout = ParallelLayout.from_world(tp, pp)
    model = load_sharded(path, layout).model
    ids, positions = _inputs(model.config.vocab_size)
    lengths = torch.tensor([9, 6])
    hidden = pipeline_forward(model, layout, [MicroBatch(positions, ids)])[0]
    scores = None
    if layout.is_last_stage and layout.tp_rank == 0:
        with torch.no_grad():
            scores = model.rm_head(hidden[torch.arange(2), lengths - 1]).float()
    return result_to_rank0(scores, (2, 9), torch.float32, layout)


def test_reward_model_scores_match_one_process(tmp_path, tmp_path_factory, sp_tokenizer_file):
    # A vocabulary the TP size does not divide: the last rank's embedding partition is padded.
    config = dataclasses.replace(TINY_CONFIG, vocab_size=321, num_reward_attributes=9)
    path = random_model_dir(tmp_path_factory, sp_tokenizer_file, config, "reward321", seed=4)
    results = run_ranks(_reward_scores, 4, tmp_path / "run", str(path), 2, 2)
    reference = load_model(path).model
    ids, positions = _inputs(321)
    with torch.no_grad():
        expected = reference(ids, positions, lengths=torch.tensor([9, 6]))
    assert (results[0] - expected).abs().max().item() <= 1e-5


def _greedy_with_paged_cache(rank, world, path, tp, pp, steps):
    """Prefill then decode through each rank's own paged KV pool (its layers, its KV heads)."""
    layout = ParallelLayout.from_world(tp, pp)
    loaded = load_sharded(path, layout)
    model, config = fuse_qkv(loaded.model), loaded.config  # as the engine does: one matmul of the local q/k/v
    cache = PagedKVCache(layout.local_config(config), num_blocks=8, block_size=4, dtype=torch.float32, device="cpu")
    tokens = [5, 17, 42, 7, 99]
    block_table = list(range(8))
    start = 0
    for _ in range(steps):
        new = tokens[start:]
        positions = torch.arange(start, len(tokens))
        batch = BatchLayout.build([block_table], [start], [len(new)], positions, cache.block_size)
        step = MicroBatch(positions[None], torch.tensor([new]), cache, lambda b=batch: cache.use(b))
        hidden = pipeline_forward(model, layout, [step])[0]
        logits = model.lm_head(hidden[0, -1:]) if layout.is_last_stage else None
        logits = result_to_rank0(logits if layout.tp_rank == 0 else None, (1, config.vocab_size), torch.float32,
                                 layout)
        next_token = torch.zeros(1, dtype=torch.long)
        if rank == 0:
            next_token[0] = logits.argmax(-1)
        torch.distributed.broadcast(next_token, src=0)  # the runtime broadcasts the step plan likewise
        start = len(tokens)
        tokens.append(int(next_token))
    return tokens


def test_greedy_decode_through_paged_kv_pools(tmp_path, tiny_model_dir):
    results = run_ranks(_greedy_with_paged_cache, 4, tmp_path / "run", str(tiny_model_dir), 2, 2, 6)
    reference = load_model(tiny_model_dir).model
    tokens = [5, 17, 42, 7, 99]
    with torch.no_grad():
        for _ in range(6):
            tokens.append(int(reference(torch.tensor([tokens]))[0, -1].argmax()))
    assert all(r == tokens for r in results)


def _preset_logits(rank, world):
    layout = ParallelLayout.from_world(world)
    model = load_sharded("tiny", layout).model
    with torch.no_grad():
        return model(torch.tensor([[5, 6, 7, 8]]))


def test_preset_random_weights_are_the_same_model_at_any_tp(tmp_path):
    """A preset's random weights are made per tensor from (seed, name), so TP ranks agree with one process."""
    one = load_sharded("tiny", ParallelLayout()).model
    with torch.no_grad():
        expected = one(torch.tensor([[5, 6, 7, 8]]))
    results = run_ranks(_preset_logits, 2, tmp_path / "run")
    assert (results[0] - expected).abs().max().item() <= 1e-5 and torch.equal(results[0], results[1])


def _llm_greedy(rank, world, path, prompts):
    from nemotron.engine.llm import LLM
    from nemotron.engine.llm_engine import EngineConfig
    from nemotron.engine.sampling import SamplingParams

    layout = ParallelLayout.from_world(world)
    loaded = load_sharded(path, layout)
    # The sharded model's config is this rank's view, so the engine sizes a pool of its KV heads.
    assert loaded.model.config.num_kv_heads == len(layout.kv_heads(loaded.config))
    llm = LLM(loaded, EngineConfig(num_blocks=16, block_size=4, max_num_batched_tokens=8))  # chunked prefill
    params = SamplingParams(max_tokens=6, temperature=0)
    return [r.outputs[0].token_ids for r in llm.generate(prompts, params)]


@pytest.mark.parametrize("tp", [2, 4])
def test_engine_runs_unchanged_on_tensor_parallel_ranks(tmp_path, tiny_model_dir, tp):
    """Every rank steps the same engine over the same requests (the runtime broadcasts each step's plan
    instead); greedy tokens equal one process."""
    from nemotron.engine.llm import LLM
    from nemotron.engine.llm_engine import EngineConfig
    from nemotron.engine.sampling import SamplingParams

    prompts = [[2, 10, 11, 12, 13, 14, 15, 16, 17, 18], [2, 40, 41]]
    results = run_ranks(_llm_greedy, tp, tmp_path / "run", str(tiny_model_dir), prompts)
    llm = LLM(load_model(tiny_model_dir), EngineConfig(num_blocks=16, block_size=4))
    expected = [r.outputs[0].token_ids for r in llm.generate(prompts, SamplingParams(max_tokens=6, temperature=0))]
    assert all(r == expected for r in results)


def _gather_to_first(rank, world, path):
    layout = ParallelLayout.from_world(world)
    model = load_sharded(path, layout).model
    model.lm_head.dst = 0  # gather the logits on the sampling rank only
    ids, positions = _inputs(model.config.vocab_size)
    with torch.no_grad():
        return model(ids, positions)


def test_head_gathers_on_one_rank(tmp_path, tiny_model_dir):
    results = run_ranks(_gather_to_first, 2, tmp_path / "run", str(tiny_model_dir))
    ids, positions = _inputs(TINY_CONFIG.vocab_size)
    with torch.no_grad():
        expected = load_model(tiny_model_dir).model(ids, positions)
    assert (results[0] - expected).abs().max().item() <= 1e-5 and results[1] is None


def _in_memory(rank, world, tp, pp):
    """A whole model already in memory (q/k/v fused first), split by the two transforms."""
    model = build_model(TINY_CONFIG).eval()
    init_random_weights(model, seed=9, std=0.1)
    fuse_qkv(model)
    layout = ParallelLayout.from_world(tp, pp)
    tensor_parallel(pipeline_stage(model, layout), layout)
    ids, positions = _inputs(TINY_CONFIG.vocab_size)
    hidden = pipeline_forward(model, layout, [MicroBatch(positions, ids)])[0]
    logits = model.lm_head(hidden) if layout.is_last_stage else None
    return result_to_rank0(logits if layout.tp_rank == 0 else None, (2, 9, TINY_CONFIG.vocab_size), torch.float32,
                           layout)


def test_transforms_split_a_model_in_memory(tmp_path):
    results = run_ranks(_in_memory, 4, tmp_path / "run", 2, 2)
    model = build_model(TINY_CONFIG).eval()
    init_random_weights(model, seed=9, std=0.1)
    ids, positions = _inputs(TINY_CONFIG.vocab_size)
    with torch.no_grad():
        expected = model(ids, positions)
    assert (results[0] - expected).abs().max().item() <= 1e-5
