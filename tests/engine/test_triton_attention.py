"""The Triton paged decode kernel against plain attention over gathered keys (Triton's CPU interpreter
here; the same kernel runs compiled on GPUs). Skipped where triton is not installed."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton sees the kernel: run it on the CPU
pytest.importorskip("triton")

from nemotron.engine.triton_attention import paged_decode_attention  # noqa: E402


def reference(q, keys, values, tables, lens, block_size):
    outs = []
    for b in range(q.shape[0]):
        n = int(lens[b])
        if n == 0:
            outs.append(torch.zeros_like(q[b]))
            continue
        slots = (tables[b][:, None] * block_size + torch.arange(block_size)).flatten()[:n]
        k, v = keys[slots].transpose(0, 1), values[slots].transpose(0, 1)  # (Hkv, n, D)
        out = torch.nn.functional.scaled_dot_product_attention(q[b][:, None], k, v, enable_gqa=True)
        outs.append(out[:, 0])
    return torch.stack(outs)


@pytest.mark.parametrize("heads, kv_heads, head_dim, dtype", [
    (6, 2, 12, torch.float32),  # group of 3 and head_dim 12: both padded inside the kernel
    (8, 8, 16, torch.float32),
    (4, 1, 32, torch.float16),
])
def test_kernel_matches_attention_over_gathered_blocks(heads, kv_heads, head_dim, dtype):
    gen = torch.Generator().manual_seed(0)
    block_size, num_blocks = 4, 24
    lens = torch.tensor([1, 7, 16, 0, 13], dtype=torch.int32)  # 0: a padding row of a graph bucket
    width = 5
    tables = torch.stack([torch.randperm(num_blocks, generator=gen)[:width] for _ in lens]).to(torch.int32)
    keys = torch.randn(num_blocks * block_size, kv_heads, head_dim, generator=gen).to(dtype)
    values = torch.randn(num_blocks * block_size, kv_heads, head_dim, generator=gen).to(dtype)
    q = torch.randn(len(lens), heads, head_dim, generator=gen).to(dtype)
    out = paged_decode_attention(q.to(DEVICE), keys.to(DEVICE), values.to(DEVICE), tables.to(DEVICE),
                                 lens.to(DEVICE), block_size).cpu()
    expected = reference(q.float(), keys.float(), values.float(), tables.long(), lens, block_size)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-3
    assert torch.allclose(out.float(), expected, atol=tolerance, rtol=tolerance)


def test_engine_with_kernel_and_static_decode_buffers_matches_the_torch_path(tiny_model_dir):
    from nemotron.checkpoint.load import load_model
    from nemotron.engine.cuda_graphs import DecodeGraphs
    from nemotron.engine.llm import LLM
    from nemotron.engine.llm_engine import EngineConfig
    from nemotron.engine.sampling import SamplingParams
    from tests.engine.test_engine import prompts

    loaded = load_model(tiny_model_dir, dtype="float32")
    requests = prompts(5, seed=13, low=3, high=30)
    params = [SamplingParams(max_tokens=6 + 3 * i, seed=i, top_k=30, ignore_eos=True) for i in range(5)]
    expected = LLM(loaded, EngineConfig(attention_backend="torch")).generate(requests, params)

    llm = LLM(loaded, EngineConfig(attention_backend="triton", block_size=4))
    engine = llm.engine
    # Buckets 1, 2, 4, 6: batches of 3 and 5 run padded, exercising the scratch slot.
    engine.runner.graphs = DecodeGraphs(engine.model, engine.kv_cache, max_batch=6, max_blocks=16, capture=False)
    results = llm.generate(requests, params)
    assert [r.outputs for r in results] == [r.outputs for r in expected]
    assert engine.blocks.num_free_blocks == engine.blocks.num_blocks
