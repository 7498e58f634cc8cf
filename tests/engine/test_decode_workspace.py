"""Decode lanes (torch backend): same tokens as gathering blocks, lanes always mirror the pool."""
from __future__ import annotations

import pytest
import torch

from nemotron.checkpoint.load import load_model
from nemotron.engine.decode_workspace import DecodeWorkspace, context_slots
from nemotron.engine.llm import LLM
from nemotron.engine.llm_engine import EngineConfig
from nemotron.engine.sampling import SamplingParams
from tests.engine.test_engine import prompts


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(tiny_model_dir, dtype="float32")


def mixed_params(count: int) -> list[SamplingParams]:
    return [SamplingParams(max_tokens=5 + (7 * i) % 30, seed=i, temperature=0.9, top_k=30, ignore_eos=True)
            if i % 3 else SamplingParams(max_tokens=3 + (5 * i) % 37, temperature=0, ignore_eos=True)
            for i in range(count)]


def run(loaded, requests, params, max_bytes: int | None = None, **config):
    llm = LLM(loaded, EngineConfig(attention_backend="torch", **config))
    if max_bytes is not None:
        llm.engine.kv_cache.workspace.max_bytes = max_bytes
    results = llm.generate(requests, params)
    assert llm.engine.blocks.num_free_blocks == llm.engine.blocks.num_blocks
    return [r.outputs[0].token_ids for r in results], llm


@pytest.mark.parametrize("config", [
    {"max_num_seqs": 5},  # sequences come and go: lanes are released, compacted and refilled
    {"max_num_seqs": 16, "max_num_batched_tokens": 7},  # chunked prefill: lane rows beside prefill rows
    {"max_num_seqs": 16, "num_blocks": 12},  # preemption: recomputed sequences refill their lanes
])
def test_lanes_give_the_tokens_of_block_gathers(loaded, config):
    shared = prompts(1, seed=20, low=40, high=40)[0]
    requests = prompts(10, seed=21) + [shared + tail for tail in prompts(6, seed=22, low=1, high=6)]
    params = mixed_params(len(requests))
    gathered, _ = run(loaded, requests, params, decode_workspace=False, **config)
    laned, llm = run(loaded, requests, params, **config)
    assert laned == gathered
    assert llm.engine.kv_cache.workspace.keys is not None  # the lanes were really used


def test_steps_over_the_memory_bound_fall_back_to_gathers(loaded):
    requests, params = prompts(8, seed=23), mixed_params(8)
    gathered, _ = run(loaded, requests, params, decode_workspace=False)
    config = loaded.config
    one_lane_of_64 = 2 * config.num_layers * config.num_kv_heads * 64 * config.head_dim * 4
    laned, llm = run(loaded, requests, params, max_bytes=3 * one_lane_of_64)  # too small for most steps
    assert laned == gathered
    workspace = llm.engine.kv_cache.workspace
    assert workspace.keys is None or workspace.keys.numel() * 8 <= 3 * one_lane_of_64


def test_lanes_mirror_the_pool_while_decoding(loaded):
    llm = LLM(loaded, EngineConfig(attention_backend="torch", max_num_seqs=4))
    engine = llm.engine
    for prompt, p in zip(prompts(7, seed=24), mixed_params(7)):
        engine.add_request(engine.check_request(prompt, p))
    cache, workspace = engine.kv_cache, engine.kv_cache.workspace
    checked = 0
    while engine.has_unfinished():
        engine.step()
        runner = engine.runner  # lanes belong to the runner's stand-ins for the running sequences
        for seq in engine.scheduler.running:
            lane = workspace.lane_of.get(runner._lane_keys.get(runner._seq_keys.get(seq)))
            n = 0 if lane is None else workspace.lane_len[lane]
            if n == 0:
                continue
            slots = context_slots(seq.block_table, n, cache.block_size)
            assert torch.equal(workspace.keys[:, lane, :, :n], cache.keys[:, slots].transpose(1, 2))
            assert torch.equal(workspace.values[:, lane, :, :n], cache.values[:, slots].transpose(1, 2))
            checked += 1
        assert sorted(workspace.lane_of.values()) == list(range(len(workspace.lane_of)))  # dense
    assert checked > 20


def test_a_lane_left_by_a_finished_request_is_refilled_for_the_next(loaded):
    # A finished request leaves its lane holding n tokens; a new request whose context reaches the
    # same n must not take those stale keys as its own.
    first, params = prompts(1, seed=25, low=10, high=10)[0], SamplingParams(max_tokens=6, temperature=0,
                                                                           ignore_eos=True)
    reused = LLM(loaded, EngineConfig(attention_backend="torch"))
    for length in range(10, 20):
        second = prompts(1, seed=26 + length, low=length, high=length)[0]
        reused.generate([first], params)
        fresh = LLM(loaded, EngineConfig(attention_backend="torch", decode_workspace=False))
        assert reused.generate([second], params)[0].outputs == fresh.generate([second], params)[0].outputs


def test_growth_keeps_lanes_and_respects_the_memory_bound():
    from nemotron.engine.sequence import Sequence

    layers, heads, dim, block = 2, 2, 4, 4
    pool_keys = torch.randn(layers, 64 * block, heads, dim)
    pool_values = torch.randn(layers, 64 * block, heads, dim)
    per_token_lane = 2 * layers * heads * dim * 4  # bytes of one token in one lane (keys + values)
    workspace = DecodeWorkspace(layers, heads, dim, torch.float32, "cpu", block, max_bytes=per_token_lane * 6 * 40)
    seqs = [Sequence(f"s{i}", [5] * 3, SamplingParams()) for i in range(6)]
    for i, seq in enumerate(seqs):
        seq.block_table = list(range(10 * i, 10 * i + 10))

    def mirrors(seq, n):
        lane = workspace.lane(seq)
        slots = context_slots(seq.block_table, n, block)
        return torch.equal(workspace.keys[:, lane, :, :n], pool_keys[:, slots].transpose(1, 2))

    contexts = {seq: 3 for seq in seqs}
    for batch in (1, 2, 3, 5, 6, 4):  # lanes grow, then sequences leave and the rest are compacted
        active = seqs[:batch]
        for _ in range(4):  # a few decode steps: contexts grow, lengths grow past the capacity
            plan = workspace.plan(active, [contexts[s] for s in active], pool_keys, pool_values)
            assert plan is not None and plan.num_lanes == batch
            assert sorted(workspace.lane(s) for s in active) == list(range(batch))
            # row i's mask: 0 over its lane's context, -inf over the padding up to the step's width
            lane_contexts = torch.tensor([contexts[s] for s in sorted(active, key=workspace.lane)])
            hidden = torch.arange(plan.width)[None, :] >= lane_contexts[:, None]
            expected = torch.zeros(batch, plan.width).masked_fill_(hidden, float("-inf"))
            assert torch.equal(plan.mask, expected[:, None, None, :])
            assert plan.width >= max(contexts[s] for s in active) and plan.width % block == 0
            for seq in active:
                lane = workspace.lane(seq)
                n = contexts[seq]
                # what attention's write adds for the new token; then everything before it must mirror the pool
                slot = context_slots(seq.block_table, n, block)[-1]
                workspace.keys[:, lane, :, n - 1] = pool_keys[:, slot]
                assert mirrors(seq, n)
                contexts[seq] += 1
    assert workspace._bytes(*workspace.capacity) <= workspace.max_bytes
    # a step needing more than the bound is refused (the caller gathers instead) and frees the lanes
    assert workspace.plan(seqs, [41] * 6, pool_keys, pool_values) is None
    assert not workspace.lane_of
