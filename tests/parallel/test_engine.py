"""The engine across gloo ranks (LLM spawns them) gives the single-process engine's tokens.

One batch per layout exercises what rank 0 does alone on top of the replicated forward: greedy and
seeded sampling, prompt log-probabilities, chunked prefill (a 16-token step budget), prefix caching
(a shared prompt) and preemption (a KV pool too small for the whole batch)."""
from __future__ import annotations

import pytest

from nemotron.engine.llm import LLM
from nemotron.engine.llm_engine import EngineConfig
from nemotron.engine.sampling import SamplingParams
from nemotron.errors import ConfigError, NemotronError
from nemotron.parallel.runtime import ParallelConfig

LAYOUTS = [(2, 1), (4, 1), (1, 2), (2, 2)]  # TINY_CONFIG: 4 heads, 2 KV heads (TP 4 replicates them), 2 layers
CONFIG = EngineConfig(num_blocks=14, block_size=4, max_num_batched_tokens=16, max_num_seqs=8,
                      parallel=ParallelConfig(timeout_s=60))


def _requests() -> tuple[list[list[int]], list[SamplingParams]]:
    shared = [7, 8, 9, 10, 11, 12, 13, 14, 15]
    prompts = [shared + [20], shared + [21, 22], list(range(30, 52)), [5, 6], [40, 41, 42]]
    params = [SamplingParams(max_tokens=10, temperature=0, ignore_eos=True),
              SamplingParams(max_tokens=10, temperature=0, ignore_eos=True, logprobs=2),
              SamplingParams(max_tokens=6, temperature=0, ignore_eos=True, prompt_logprobs=0),
              SamplingParams(max_tokens=12, temperature=0.8, top_p=0.9, seed=11, ignore_eos=True),
              SamplingParams(max_tokens=12, temperature=1.2, top_k=20, seed=12, ignore_eos=True)]
    return prompts, params


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    llm = LLM(str(tiny_model_dir), CONFIG, dtype="float32", device="cpu")
    prompts, params = _requests()
    return llm.generate(prompts, params), llm.engine.scheduler.num_preemptions


@pytest.mark.parametrize(("tp", "pp"), LAYOUTS)
def test_tokens_match_one_process(tiny_model_dir, reference, tp, pp):
    expected, preemptions = reference
    prompts, params = _requests()
    with LLM(str(tiny_model_dir), CONFIG, dtype="float32", device="cpu", tensor_parallel_size=tp,
             pipeline_parallel_size=pp) as llm:
        got = llm.generate(prompts, params)
        assert llm.engine.blocks.prefix_hits > 0 and llm.engine.scheduler.num_preemptions == preemptions
    assert preemptions > 0  # the small pool really preempted
    for want, have in zip(expected, got):
        want, have = want.outputs[0], have.outputs[0]
        assert have.token_ids == want.token_ids
        if want.logprobs is not None:
            assert have.cumulative_logprob == pytest.approx(want.cumulative_logprob, abs=1e-3)
            assert [list(entry) for entry in have.logprobs] == [list(entry) for entry in want.logprobs]
            assert ([lp.logprob for e in have.logprobs for lp in e.values()] ==
                    pytest.approx([lp.logprob for e in want.logprobs for lp in e.values()], abs=1e-4))
    chosen = [[e[t].logprob for t, e in zip(r.prompt_token_ids[1:], r.prompt_logprobs[1:])] for r in (got[2], expected[2])]
    assert chosen[0] == pytest.approx(chosen[1], abs=1e-4)


def test_a_layout_the_model_cannot_take_is_refused(tiny_model_dir):
    with pytest.raises(ConfigError, match="tensor parallel size 3 must divide"):
        LLM(str(tiny_model_dir), CONFIG, device="cpu", tensor_parallel_size=3)


def test_a_model_in_memory_cannot_be_split(tiny_model_dir):
    from nemotron.checkpoint.load import load_model

    with pytest.raises(NemotronError, match="needs its ranks started first"):
        LLM(load_model(tiny_model_dir), CONFIG, tensor_parallel_size=2)


def test_a_dead_rank_fails_generate_and_a_new_run_can_start(tiny_model_dir):
    from nemotron.errors import EngineDeadError

    prompts, params = _requests()
    llm = LLM(str(tiny_model_dir), CONFIG, dtype="float32", device="cpu", tensor_parallel_size=2)
    try:
        llm.ranks.processes[0].kill()
        with pytest.raises(EngineDeadError, match="ranks failed"):
            llm.generate(prompts, params)
        with pytest.raises(EngineDeadError):  # final: no later step is tried
            llm.generate(prompts, params)
    finally:
        llm.close()
    with LLM(str(tiny_model_dir), CONFIG, dtype="float32", device="cpu", tensor_parallel_size=2) as again:
        assert again.generate(prompts[:1], params[:1])[0].outputs[0].token_ids
