"""The KV pool on a GPU leaves room for the logits of the prompt tokens a step scores and for the
sampling of max_num_seqs rows, and that room is what a step really materialises."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from nemotron.checkpoint.load import load_model
from nemotron.engine.llm import LLM
from nemotron.engine.llm_engine import EngineConfig, _blocks_from_memory, _step_workspace
from nemotron.engine.paged_cache import PagedKVCache
from nemotron.engine.sampling import SamplingParams
from nemotron.memory.planner import SCORED_CHUNK_ROWS, SCORED_TOKENS
from nemotron.model.presets import get_preset
from tests.conftest import TINY_CONFIG, random_model_dir

CUDA = torch.device("cuda")
GIB = 2**30


@pytest.fixture()
def free_gpu_memory(monkeypatch):
    """A GPU with 20 GiB free, as torch.cuda reports it (nothing is allocated: only the sizing runs)."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (20 * GIB, 80 * GIB))


@pytest.mark.parametrize(("dtype", "batched", "rows"), [(torch.bfloat16, 2048, 512), (torch.float32, 2048, 512),
                                                        (torch.bfloat16, 256, 256)])
def test_gpu_pool_shrinks_by_the_prompt_logprobs_workspace(free_gpu_memory, dtype, batched, rows):
    model = get_preset("nemotron-4-15b")  # vocabulary 256,000
    config = EngineConfig(gpu_memory_fraction=0.5, max_num_seqs=64, max_num_batched_tokens=batched)
    # By hand: `rows` rows of logits in the model's dtype, and 64 of them as fp32 twice (copy + log-softmax);
    # then 64 sampled rows: logits, six fp32 copies, 7 bytes of penalty state.
    workspace = rows * 256_000 * dtype.itemsize + 2 * 64 * 256_000 * 4 + 64 * 256_000 * (dtype.itemsize + 24 + 7)
    assert _step_workspace(model.vocab_size, config, CUDA, dtype) == workspace
    per_block = PagedKVCache.bytes_per_block(model, config.block_size, dtype)
    assert _blocks_from_memory(model, config, CUDA, dtype) == 10 * GIB // per_block
    assert _blocks_from_memory(model, config, CUDA, dtype, workspace) == (10 * GIB - workspace) // per_block
    assert 10 * GIB // per_block - (10 * GIB - workspace) // per_block >= workspace // per_block > 0


ROWS, VOCAB = 16, 32_000


def sample_with_every_knob(logits: torch.Tensor) -> None:
    """Every knob at once (penalties, filters, log-probabilities with alternatives), as a step samples."""
    from nemotron.engine.sampling import SamplingTensors, log_probs, sample

    params = [SamplingParams(temperature=0.8, top_p=0.9, top_k=50, min_p=0.05, repetition_penalty=1.2,
                             presence_penalty=0.5, frequency_penalty=0.3, logprobs=5, min_tokens=4, seed=i)
              for i in range(ROWS)]
    tensors = SamplingTensors.from_params(params, VOCAB, logits.device, eos_id=3, token_ids=[[5, 6, 7]] * ROWS,
                                          generated_counts=[0] * ROWS)
    sample(logits, tensors, [None] * ROWS, log_probs(logits, VOCAB))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="measures the GPU allocator's peak")
def test_sampling_stays_within_its_workspace():
    """The sampler's peak allocation, plus the logits it was given, within sampling_workspace_bytes."""
    from nemotron.memory.planner import sampling_workspace_bytes

    logits = torch.randn(ROWS, VOCAB, device=CUDA, dtype=torch.bfloat16)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    sample_with_every_knob(logits)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before + logits.numel() * logits.element_size()
    assert peak <= sampling_workspace_bytes(VOCAB, logits.element_size(), ROWS)


def test_sampling_stays_within_its_workspace_on_the_cpu_allocator():
    """The same count on any machine: the CPU allocator's allocations and frees, as the profiler
    records them, in order. The sampler runs the same ops on either device; on an H200 its peak
    was 34 bytes per logit against 33 budgeted until the repetition penalty wrote in place."""
    from torch.profiler import ProfilerActivity, profile

    from nemotron.memory.planner import sampling_workspace_bytes

    logits = torch.randn(ROWS, VOCAB, dtype=torch.bfloat16)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        sample_with_every_knob(logits)
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    assert peak > 6 * ROWS * VOCAB * 4  # the float32 copies are all seen
    assert peak + logits.numel() * logits.element_size() <= sampling_workspace_bytes(VOCAB, 2, ROWS)


def test_cpu_pool_is_the_configured_size():
    config = EngineConfig(cpu_kv_cache_bytes=GIB)
    assert _step_workspace(256_000, config, torch.device("cpu"), torch.bfloat16) == 0


def test_planner_constants_are_the_engines():
    from nemotron.engine.model_runner import PROMPT_ROWS

    assert (SCORED_TOKENS, SCORED_CHUNK_ROWS) == (EngineConfig().scheduler.max_scored_tokens, PROMPT_ROWS)


def test_a_step_materialises_at_most_the_counted_rows_of_logits(tmp_path_factory, sp_tokenizer_file):
    """A 1,200-token prompt scored: no step computes logits for more than 512 prompt rows (+ its
    sampled rows), in the model's dtype, which is what the workspace counts."""
    config = dataclasses.replace(TINY_CONFIG, max_position_embeddings=2048)
    loaded = load_model(random_model_dir(tmp_path_factory, sp_tokenizer_file, config, "long", seed=3), dtype="float32")
    llm = LLM(loaded, EngineConfig(max_num_seqs=4))
    shapes = []
    loaded.model.lm_head.register_forward_hook(lambda module, args, out: shapes.append((out.shape[0], out.dtype)))
    prompt = [4 + (7 * i) % 300 for i in range(1200)]
    [result] = llm.generate([prompt, prompt[:300]], [SamplingParams(max_tokens=2, prompt_logprobs=1),
                                                     SamplingParams(max_tokens=3)])[:1]
    assert len(result.prompt_logprobs) == 1200
    assert max(rows for rows, _ in shapes) <= SCORED_TOKENS + 2 and {dtype for _, dtype in shapes} == {torch.float32}
    assert sum(rows for rows, _ in shapes) >= 1199  # every prompt row was scored, in several steps
    assert sum(rows >= SCORED_TOKENS for rows, _ in shapes) == 2  # 512 + 512 + 175
