"""Presence / frequency penalties and min_p (OpenAI's and vLLM's semantics) against formulas written
out here, in the sampler and through the engine; and the sampling stream with them off unchanged."""
from __future__ import annotations

import pytest
import torch

from nemotron.checkpoint.load import load_model
from nemotron.engine.llm import LLM
from nemotron.engine.llm_engine import EngineConfig
from nemotron.engine.sampling import (
    SamplingParams, SamplingParamsError, SamplingTensors, make_generator, process_logits, sample,
)
from tests.engine.test_engine import prompts


def oracle_penalised(logits: torch.Tensor, output: list[int], presence: float, frequency: float) -> torch.Tensor:
    """OpenAI's formula, one token at a time: mu[j] -= c[j] * frequency + (c[j] > 0) * presence."""
    out = logits.clone()
    for j in set(output):
        count = output.count(j)
        out[j] -= count * frequency + presence
    return out


def oracle_min_p(logits: torch.Tensor, min_p: float) -> set[int]:
    """vLLM's min_p on probabilities: keep j when p_j >= min_p * max_j p_j."""
    probs = logits.softmax(-1)
    return set(torch.nonzero(probs >= min_p * probs.max()).flatten().tolist())


def test_penalties_match_the_formula_and_skip_the_prompt():
    torch.manual_seed(0)
    logits = torch.randn(3, 12)
    prompt, output = [1, 2, 2, 9], [2, 5, 5, 5, 7]
    params = [SamplingParams(temperature=0, presence_penalty=0.5, frequency_penalty=0.25),  # greedy: applies too
              SamplingParams(temperature=0.5, presence_penalty=-1.0, frequency_penalty=1.5, seed=1),
              SamplingParams(temperature=0.7, seed=2)]  # no penalty: untouched in a penalised batch
    tensors = SamplingTensors.from_params(params, 12, token_ids=[prompt + output] * 3, generated_counts=[5] * 3)
    got = process_logits(logits, tensors)
    assert torch.allclose(got[0], oracle_penalised(logits[0], output, 0.5, 0.25))
    assert torch.allclose(got[1], oracle_penalised(logits[1], output, -1.0, 1.5) / 0.5)  # before temperature
    assert torch.equal(got[2], logits[2] / 0.7)
    assert got[0, 1] == logits[0, 1] and got[0, 9] == logits[0, 9]  # prompt-only tokens are not penalised


def test_record_counts_each_new_token():
    logits = torch.zeros(1, 6)
    params = [SamplingParams(temperature=0, frequency_penalty=1.0, presence_penalty=0.5)]
    tensors = SamplingTensors.from_params(params, 6, token_ids=[[3]])
    chosen = []
    for _ in range(6):  # flat logits: each step takes the least penalised, lowest id
        ids, _ = sample(logits, tensors, [None])
        tensors.record(ids)
        chosen.append(int(ids))
    assert chosen == [0, 1, 2, 3, 4, 5]  # the prompt's 3 does not count
    assert tensors.output_penalty.tolist() == [[1.5] * 6]  # one occurrence each: 1 × 1.0 + 0.5
    # A favourite repeats until its penalty (count × 1.0 + 0.5) outweighs its lead of 3.2.
    logits = torch.tensor([[3.2, 0.0, -1.0]])
    tensors = SamplingTensors.from_params(params, 3, token_ids=[[0, 0]])
    chosen = []
    for _ in range(5):
        ids, _ = sample(logits, tensors, [None])
        tensors.record(ids)
        chosen.append(int(ids))
    assert chosen == [0, 0, 0, 1, 0]  # 3.2 → 1.7 → 0.7 → -0.3 < 0: token 1; then 0 (-0.3) beats 1 (-1.5)
    assert tensors.output_penalty.tolist() == [[4 * 1.0 + 0.5, 1.5, 0.0]]


def test_greedy_argmax_comes_after_the_penalties():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0]])
    for params, expected in ((SamplingParams(temperature=0, frequency_penalty=2.0), 2),
                             (SamplingParams(temperature=0, repetition_penalty=2.0), 2),
                             (SamplingParams(temperature=0, presence_penalty=-2.0), 1),
                             (SamplingParams(temperature=0), 1)):
        tensors = SamplingTensors.from_params([params], 4, token_ids=[[1]], generated_counts=[1])
        assert int(sample(logits, tensors, [None])[0]) == expected


@pytest.mark.parametrize("min_p", [0.0, 0.05, 0.2, 0.6, 1.0])
def test_min_p_keeps_what_the_probability_rule_keeps(min_p):
    torch.manual_seed(1)
    logits = torch.randn(4, 40) * 2
    params = [SamplingParams(temperature=t, min_p=min_p, seed=i) for i, t in enumerate((0.5, 1.0, 1.7, 3.0))]
    got = process_logits(logits, SamplingTensors.from_params(params, 40))
    for row, t in enumerate((0.5, 1.0, 1.7, 3.0)):  # after temperature, as vLLM
        assert set(torch.nonzero(torch.isfinite(got[row])).flatten().tolist()) == oracle_min_p(logits[row] / t, min_p)


def test_min_p_comes_before_top_p():
    # p = (0.4, 0.3, 0.2, 0.1): min_p 0.3 drops the last (0.1 < 0.12); over the three left, top-p 0.7
    # stops at the second (0.4/0.9 + 0.3/0.9 = 0.78), where top-p first would keep three.
    logits = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()
    got = process_logits(logits, SamplingTensors.from_params([SamplingParams(min_p=0.3, top_p=0.7)], 4))
    assert torch.isfinite(got).tolist() == [[True, True, False, False]]


def test_sampling_stream_with_the_features_off_is_unchanged():
    """Tokens recorded before presence / frequency / min_p existed (the same seeds, a mixed batch)."""
    generator = torch.Generator().manual_seed(2026)
    steps = torch.randn(24, 6, 300, generator=generator) * 3
    params = [SamplingParams(temperature=0, min_tokens=2),
              SamplingParams(temperature=0.7, top_k=5, seed=1),
              SamplingParams(top_p=0.8, repetition_penalty=1.2, seed=2),
              SamplingParams(temperature=1.5, min_tokens=3, seed=3),
              SamplingParams(temperature=0.9, top_k=50, top_p=0.95, repetition_penalty=1.1, seed=2**63 + 5),
              SamplingParams(temperature=1.2)]
    tensors = SamplingTensors.from_params(params, 300, eos_id=7, token_ids=[[7, 8, 9]] * 6)
    assert tensors.output_penalty is tensors.presence_penalty is tensors.min_p is None  # off: no extra work
    generators = [make_generator(p.seed) for p in params]
    torch.manual_seed(77)
    out: list[list[int]] = [[] for _ in params]
    for step in steps:
        ids, _ = sample(step, tensors, generators)
        tensors.record(ids)
        for b, t in enumerate(ids.tolist()):
            out[b].append(t)
    assert out == [
        [167, 108, 20, 149, 21, 285, 43, 129, 156, 67, 178, 150, 0, 126, 271, 114, 67, 285, 204, 22, 205, 243, 71, 62],
        [252, 241, 30, 186, 4, 265, 176, 198, 266, 113, 148, 116, 148, 169, 223, 92, 264, 120, 149, 67, 81, 95, 128,
         229],
        [160, 123, 247, 221, 205, 237, 225, 245, 156, 87, 145, 149, 63, 246, 239, 180, 75, 14, 124, 297, 27, 152, 83,
         230],
        [3, 43, 89, 17, 119, 11, 215, 127, 184, 267, 163, 196, 55, 175, 30, 164, 68, 294, 249, 270, 188, 74, 262, 7],
        [210, 36, 228, 226, 242, 158, 101, 104, 3, 261, 2, 14, 49, 215, 112, 120, 272, 200, 46, 214, 245, 108, 22,
         274],
        [81, 195, 226, 248, 284, 135, 61, 194, 242, 109, 282, 78, 70, 208, 270, 256, 260, 294, 225, 274, 216, 189, 208,
         5],
    ]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"presence_penalty": 2.5}, "presence_penalty"), ({"frequency_penalty": -2.01}, "frequency_penalty"),
    ({"frequency_penalty": float("nan")}, "frequency_penalty"), ({"min_p": 1.5}, "min_p"), ({"min_p": -0.1}, "min_p"),
    ({"best_of": 3}, "best_of"), ({"use_beam_search": True}, "use_beam_search"), ({"output_kind": 7}, "output_kind"),
])
def test_out_of_range_is_one_line_naming_the_field(kwargs, field):
    with pytest.raises(SamplingParamsError, match=f"^{field}") as info:
        SamplingParams(**kwargs)
    assert "\n" not in str(info.value)


def test_best_of_equal_to_n_is_accepted():
    assert SamplingParams(n=2, best_of=2).best_of == 2


@torch.no_grad()
def recompute_penalised_greedy(model, prompt: list[int], steps: int, presence: float, frequency: float) -> list[int]:
    """The oracle: the whole sequence run again for every token, the formula applied by hand."""
    tokens = list(prompt)
    for _ in range(steps):
        logits = model(torch.tensor([tokens]))[0, -1].float()
        tokens.append(int(oracle_penalised(logits, tokens[len(prompt):], presence, frequency).argmax()))
    return tokens[len(prompt):]


def test_engine_applies_penalties_over_its_batches_and_preemptions(tiny_model_dir):
    loaded = load_model(tiny_model_dir, dtype="float32")
    requests = prompts(6, seed=31)
    settings = [(0.0, 2.0), (1.5, 0.0), (-0.5, 0.8), (0.3, 0.3), (0.0, 0.0), (2.0, -1.0)]
    params = [SamplingParams(temperature=0, max_tokens=20, ignore_eos=True, presence_penalty=p, frequency_penalty=f)
              for p, f in settings]
    # A pool too small for all six at once: sequences are preempted and recomputed mid-way.
    llm = LLM(loaded, EngineConfig(num_blocks=10, block_size=8, max_num_seqs=6))
    results = llm.generate(requests, params)
    assert llm.engine.scheduler.num_preemptions > 0
    assert results[0].outputs[0].token_ids != recompute_penalised_greedy(loaded.model, requests[0], 20, 0.0, 0.0)
    for prompt, (p, f), result in zip(requests, settings, results):
        assert result.outputs[0].token_ids == recompute_penalised_greedy(loaded.model, prompt, 20, p, f)
