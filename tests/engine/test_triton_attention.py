"""The Triton paged decode kernel against plain attention over gathered keys (Triton's CPU interpreter
here; the same kernel runs compiled on GPUs). Skipped where triton is not installed."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton sees the kernel: run it on the CPU
triton = pytest.importorskip("triton")

from nemotron.engine.triton_attention import paged_decode_attention, store_kv  # noqa: E402
from tests.hopper_build import build_for_hopper, needs_ptxas  # noqa: E402


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
@pytest.mark.parametrize("splits", [1, 3, 8])  # 8: more splits than any row has blocks (empty parts)
@pytest.mark.parametrize("block_size, context_lens", [
    (4, [1, 7, 16, 0, 13]),  # 0: a padding row of a graph bucket; one 64-key step takes 16 blocks
    (16, [1, 70, 200, 0, 129]),  # several steps of 4 blocks, the last one part empty
])
def test_kernel_matches_attention_over_gathered_blocks(heads, kv_heads, head_dim, dtype, splits, block_size,
                                                       context_lens):
    gen = torch.Generator().manual_seed(0)
    lens = torch.tensor(context_lens, dtype=torch.int32)
    width = -(-max(context_lens) // block_size)
    num_blocks = 2 * width + 10
    tables = torch.stack([torch.randperm(num_blocks, generator=gen)[:width] for _ in lens]).to(torch.int32)
    keys = torch.randn(num_blocks * block_size, kv_heads, head_dim, generator=gen).to(dtype)
    values = torch.randn(num_blocks * block_size, kv_heads, head_dim, generator=gen).to(dtype)
    q = torch.randn(len(lens), heads, head_dim, generator=gen).to(dtype)
    out = paged_decode_attention(q.to(DEVICE), keys.to(DEVICE), values.to(DEVICE), tables.to(DEVICE),
                                 lens.to(DEVICE), block_size, splits).cpu()
    expected = reference(q.float(), keys.float(), values.float(), tables.long(), lens, block_size)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-3
    assert torch.allclose(out.float(), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("kv_heads, head_dim", [(2, 16), (3, 8)])  # a row of 32; of 24, padded to 32
def test_store_kv_writes_the_new_rows_like_index_copy(kv_heads, head_dim):
    """From the fused projection's strided k / v views, both into the pool in one kernel; padding rows
    share the scratch slot, whose content is then one of theirs."""
    gen = torch.Generator().manual_seed(kv_heads)
    tokens, heads, scratch = 5, 4, 0
    qkv = torch.randn(1, tokens, heads + 2 * kv_heads, head_dim, generator=gen).to(torch.float16).to(DEVICE)
    k, v = qkv[0, :, heads:heads + kv_heads], qkv[0, :, heads + kv_heads:]
    keys = torch.randn(40, kv_heads, head_dim, generator=gen).to(torch.float16).to(DEVICE)
    values = torch.randn(40, kv_heads, head_dim, generator=gen).to(torch.float16).to(DEVICE)
    slots = torch.tensor([17, 3, 39, scratch, scratch], device=DEVICE)
    expected_keys, expected_values = keys.clone(), values.clone()
    expected_keys.index_copy_(0, slots[:3], k[:3])
    expected_values.index_copy_(0, slots[:3], v[:3])
    store_kv(keys, values, slots, k, v)
    assert torch.equal(keys[1:], expected_keys[1:]) and torch.equal(values[1:], expected_values[1:])
    assert any(torch.equal(keys[scratch], k[i]) and torch.equal(values[scratch], v[i]) for i in (3, 4))


def test_decode_splits_fill_the_processors_for_small_batches_only():
    from nemotron.engine.triton_attention import decode_splits

    cpu = torch.device("cpu")  # counted as 4 processors: 32 programs wanted
    assert decode_splits(1, 2, 100, cpu) == 16
    assert decode_splits(1, 2, 5, cpu) == 5  # no more splits than the table has blocks
    assert decode_splits(64, 8, 100, cpu) == 1


def test_engine_with_kernel_and_static_decode_buffers_matches_the_torch_path(tiny_model_dir):
    from nemotron.checkpoint.load import load_model
    from nemotron.engine.cuda_graphs import DecodeGraphs
    from nemotron.engine.llm import LLM
    from nemotron.engine.llm_engine import EngineConfig
    from nemotron.engine.sampling import SamplingParams
    from tests.engine.test_engine import prompts

    loaded = load_model(tiny_model_dir, dtype="float32", device=DEVICE)
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


def test_steps_with_prompt_chunks_attend_their_decode_rows_in_one_kernel_call(tiny_model_dir, monkeypatch):
    """Sequences keep decoding while others' prompts go through in chunks: the one-token rows of such
    a step go to the kernel together (on an H200 they went one SDPA call each, ~130 calls a layer at
    64 sequences, and serving 256 requests ran at 640 tokens/s); only prompt chunks attend alone."""
    from nemotron.checkpoint.load import load_model
    from nemotron.engine import paged_cache, triton_attention
    from nemotron.engine.llm import LLM
    from nemotron.engine.llm_engine import EngineConfig
    from nemotron.engine.sampling import SamplingParams
    from tests.engine.test_engine import prompts

    loaded = load_model(tiny_model_dir, dtype="float32", device=DEVICE)
    requests = prompts(5, seed=21, low=3, high=30)
    params = [SamplingParams(max_tokens=3 + 2 * i, seed=i, top_k=30, ignore_eos=True) for i in range(5)]
    expected = LLM(loaded, EngineConfig(attention_backend="torch", cuda_graphs=False)).generate(requests, params)

    steps, prompt_queries = [], []
    attend, causal = paged_cache.PagedKVCache.attend, paged_cache.causal_attention
    kernel = triton_attention.paged_decode_attention

    def spy_attend(cache, layer_idx, q, k, v):
        steps.append((cache.layout.decode_rows, cache.layout.all_decode, []))
        return attend(cache, layer_idx, q, k, v)

    def spy_kernel(q, *args, **kwargs):
        steps[-1][2].append(q.shape[0])
        return kernel(q, *args, **kwargs)

    def spy_causal(q, *args, **kwargs):
        prompt_queries.append(q.shape[1])
        return causal(q, *args, **kwargs)

    monkeypatch.setattr(paged_cache.PagedKVCache, "attend", spy_attend)
    monkeypatch.setattr(triton_attention, "paged_decode_attention", spy_kernel)
    monkeypatch.setattr(paged_cache, "causal_attention", spy_causal)
    config = EngineConfig(attention_backend="triton", block_size=4, max_num_seqs=3, max_num_batched_tokens=16,
                          cuda_graphs=False)
    llm = LLM(loaded, config)
    results = llm.generate(requests, params)
    assert [r.outputs for r in results] == [r.outputs for r in expected]
    mixed = [(rows, calls) for rows, all_decode, calls in steps if rows and not all_decode]
    assert mixed and all(calls == [rows] for rows, calls in mixed)  # one launch for all of a step's decode rows
    assert prompt_queries and min(prompt_queries) > 1
    assert llm.engine.blocks.num_free_blocks == llm.engine.blocks.num_blocks


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs are captured on GPUs only")
def test_engine_kernel_with_captured_cuda_graphs_matches_the_torch_path_on_cuda(tiny_model_dir):
    """The GPU default (Triton kernel, decode steps replayed from captured CUDA graphs) against the
    PyTorch path without graphs, on the same weights: same tokens, greedy and seeded sampling."""
    from nemotron.checkpoint.load import load_model
    from nemotron.engine.llm import LLM
    from nemotron.engine.llm_engine import EngineConfig
    from nemotron.engine.sampling import SamplingParams
    from tests.engine.test_engine import prompts

    loaded = load_model(tiny_model_dir, dtype="float32", device="cuda")
    requests = prompts(7, seed=5, low=3, high=40)
    params = [SamplingParams(max_tokens=12 + 2 * i, seed=i, top_k=20 if i % 2 else 0, temperature=0 if i < 3 else 0.8,
                             ignore_eos=True, logprobs=2) for i in range(7)]
    expected = LLM(loaded, EngineConfig(attention_backend="torch", cuda_graphs=False)).generate(requests, params)
    llm = LLM(loaded, EngineConfig())
    assert llm.engine.kv_cache.backend == "triton" and llm.engine.runner.graphs is not None
    results = llm.generate(requests, params)
    assert [[o.token_ids for o in r.outputs] for r in results] == [[o.token_ids for o in r.outputs] for r in expected]
    for got, want in zip(results, expected):
        assert got.outputs[0].cumulative_logprob == pytest.approx(want.outputs[0].cumulative_logprob, abs=1e-3)
    assert llm.engine.blocks.num_free_blocks == llm.engine.blocks.num_blocks


COMPILE_FOR_HOPPER = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from nemotron.engine import triton_attention as ta

target, options = GPUTarget("cuda", 90, 32), {"num_warps": 4, "num_stages": 2}
for dtype, write_parts in (("bf16", False), ("bf16", True), ("fp32", True)):
    part = "*fp32" if write_parts else "*" + dtype  # one split: the output tensor stands in, never written
    signature = {"q_ptr": "*" + dtype, "k_ptr": "*" + dtype, "v_ptr": "*" + dtype, "out_ptr": "*" + dtype,
                 "block_tables_ptr": "*i32", "context_lens_ptr": "*i32", "part_max_ptr": part, "part_sum_ptr": part,
                 "part_acc_ptr": part, "scale": "fp32", "splits": "i32", **dict.fromkeys(["stride_qb", "stride_qh",
                 "stride_kslot", "stride_kh", "stride_ob", "stride_oh", "stride_bt"], "i32")}
    meta = {"GROUP": 6, "GROUP_PAD": 16, "HEAD_DIM": 128, "DIM_PAD": 128, "BLOCK_SIZE": 16,
            "BLOCKS_PER_STEP": 4 if dtype == "bf16" else 2, "WRITE_PARTS": write_parts,
            "PRECISION": "tf32" if dtype == "bf16" else "ieee"}
    signature.update(dict.fromkeys(meta, "constexpr"))
    source = ASTSource(ta._paged_decode_kernel, signature, constexprs=meta)
    kernel = triton.compile(source, target=target, options={**options, "num_warps": 4 if dtype == "bf16" else 8})
    assert kernel.asm["cubin"]
    assert "mma.sync" in kernel.asm["ptx"] or dtype == "fp32"  # both products on the matrix units
signature = {"part_max_ptr": "*fp32", "part_sum_ptr": "*fp32", "part_acc_ptr": "*fp32", "out_ptr": "*bf16",
             "stride_ob": "i32", "stride_oh": "i32", "splits": "i32"}
meta = {"SPLITS_PAD": 64, "HEAD_DIM": 128, "DIM_PAD": 128}
signature.update(dict.fromkeys(meta, "constexpr"))
source = ASTSource(ta._merge_splits_kernel, signature, constexprs=meta)
assert triton.compile(source, target=target, options=options).asm["cubin"]
signature = {"k_ptr": "*bf16", "v_ptr": "*bf16", "keys_ptr": "*bf16", "values_ptr": "*bf16", "slots_ptr": "*i64",
             "stride_kt": "i32", "stride_vt": "i32", "ROW": "constexpr", "ROW_PAD": "constexpr"}
source = ASTSource(ta._store_kv_kernel, signature, constexprs={"ROW": 1024, "ROW_PAD": 1024})
assert triton.compile(source, target=target, options=options).asm["cubin"]
"""


@needs_ptxas
def test_decode_kernels_compile_for_hopper_in_bfloat16():
    """bfloat16 K/V compiled to an sm_90 binary (no GPU needed), both ways of ending a split, fp32, and
    the merge. In a fresh process: the interpreter patches triton.language for the rest of this one."""
    build_for_hopper(COMPILE_FOR_HOPPER)
