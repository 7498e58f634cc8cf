from __future__ import annotations

import math

import pytest
import torch

from nemotron.engine.sampling import (
    SamplingParams,
    SamplingParamsError,
    SamplingTensors,
    derive_seed,
    apply_repetition_penalty,
    apply_temperature,
    block_eos_before_min_tokens,
    draw,
    log_probs,
    make_generator,
    row_argmax,
    sample,
    top_k_filter,
    top_p_filter,
)

INF = float("inf")


def _kept(logits: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(torch.isfinite(row)).flatten().tolist() for row in logits]


# --- each step on hand-computed examples ---------------------------------------------------------


def test_top_k_keeps_ties_with_kth_value_and_zero_is_off():
    logits = torch.tensor([[3.0, 2.0, 2.0, 1.0, 0.0], [3.0, 2.0, 2.0, 1.0, 0.0], [0.5, 0.4, 0.3, 0.2, 0.1]])
    out = top_k_filter(logits, torch.tensor([2, 1, 0]))
    assert _kept(out) == [[0, 1, 2], [0], [0, 1, 2, 3, 4]]
    assert torch.equal(out[0, :3], logits[0, :3])  # survivors unchanged


def test_top_k_larger_than_vocab_keeps_everything():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(top_k_filter(logits, torch.tensor([10])), logits)


def test_top_p_keeps_the_token_that_crosses_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(4, 1)
    out = top_p_filter(logits, torch.tensor([0.4, 0.7, 0.85, 1.0]))
    # cumulative: 0.5, 0.8, 0.95, 1.0
    assert _kept(out) == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]


def test_top_p_works_in_original_token_order_and_keeps_boundary_ties():
    logits = torch.tensor([[0.0, 2.0, 1.0, 1.0, -1.0]])
    probs = logits.softmax(-1)[0]
    p = float(probs[1] + 0.5 * probs[2])  # crossing happens at the first of the two tied tokens
    assert _kept(top_p_filter(logits, torch.tensor([p]))) == [[1, 2, 3]]


def test_top_p_candidate_search_matches_full_sort():
    torch.manual_seed(0)
    peaked = torch.randn(3, 64) * 8  # nuclei of a few tokens: found among 4 candidates
    flat = torch.randn(2, 64) * 0.1  # nuclei past 4 candidates: full sort
    top_p = torch.tensor([0.5, 0.9, 1.0, 0.9, 0.3])
    for logits in (peaked.clone(), torch.cat([peaked, flat])):
        p = top_p[: len(logits)]
        assert torch.equal(top_p_filter(logits, p, candidates=4), top_p_filter(logits, p, candidates=64))
    assert len(_kept(top_p_filter(flat, top_p[3:], candidates=4))[0]) > 4


def test_top_p_renormalises_over_top_k_survivors():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).log_softmax(-1)
    after_k = top_k_filter(logits, torch.tensor([2]))
    # Over the two survivors the first holds e/(e+1) ≈ 0.731 of the mass (0.644 of the full
    # distribution), so p=0.70 already stops after it while p=0.74 keeps both.
    assert _kept(top_p_filter(after_k, torch.tensor([0.70]))) == [[0]]
    assert _kept(top_p_filter(after_k, torch.tensor([0.74]))) == [[0, 1]]


def test_repetition_penalty_moves_negative_logits_down():
    logits = torch.tensor([[2.0, -2.0, 0.0, 4.0], [2.0, -2.0, 0.0, 4.0]])
    seen = torch.tensor([[True, True, True, False], [False, False, False, False]])
    out = apply_repetition_penalty(logits, torch.tensor([2.0, 2.0]), seen)
    assert out.tolist() == [[1.0, -4.0, 0.0, 4.0], [2.0, -2.0, 0.0, 4.0]]


def test_temperature_divides_per_row():
    logits = torch.tensor([[2.0, -1.0], [2.0, -1.0]])
    assert apply_temperature(logits, torch.tensor([2.0, 0.5])).tolist() == [[1.0, -0.5], [4.0, -2.0]]
    assert torch.isfinite(apply_temperature(torch.tensor([[1e30, 0.0]]), torch.tensor([1e-30]))).all()


def test_eos_blocked_only_before_min_tokens():
    logits = torch.zeros(3, 4)
    stop = torch.tensor([[False, False, True, False]] * 3)
    out = block_eos_before_min_tokens(logits, torch.tensor([0, 2, 3]), torch.tensor([3, 3, 3]), stop)
    assert out[:, 2].tolist() == [-INF, -INF, 0.0]
    assert (out[:, [0, 1, 3]] == 0).all()


def test_min_new_tokens_through_sample_and_record():
    eos = 3
    logits = torch.tensor([[0.0, 1.0, 0.0, 5.0]])
    params = [SamplingParams(temperature=0, min_tokens=2, max_tokens=8)]
    tensors = SamplingTensors.from_params(params, 4, eos_id=eos)
    picks = []
    for _ in range(3):
        ids, _ = sample(logits, tensors, [None])
        picks.append(int(ids))
        tensors.record(ids)
    assert picks == [1, 1, eos]
    ignoring = SamplingTensors.from_params([SamplingParams(temperature=0, min_tokens=2, ignore_eos=True)], 4, eos_id=eos)
    assert int(sample(logits, ignoring, [None])[0]) == eos


def test_min_new_tokens_also_blocks_stop_token_ids():
    logits = torch.tensor([[0.0, 9.0, 1.0, 5.0]])
    params = [SamplingParams(temperature=0, min_tokens=1, stop_token_ids=[1])]
    tensors = SamplingTensors.from_params(params, 4, eos_id=3)
    assert int(sample(logits, tensors, [None])[0]) == 2


def test_greedy_ignores_the_filters_and_keeps_the_penalty():
    logits = torch.tensor([[1.0, 3.0, 2.9, -5.0]])
    params = SamplingParams(temperature=0, top_k=1, top_p=0.01, min_p=0.99)
    tensors = SamplingTensors.from_params([params], 4)
    for seed in range(5):
        ids, lp = sample(logits, tensors, [make_generator(seed)])
        assert int(ids) == 1
        assert torch.allclose(lp, logits.log_softmax(-1)[:, 1])
    # vLLM's greedy: the repetition penalty applies before the argmax (NeMo's greedy sends none).
    tensors = SamplingTensors.from_params([SamplingParams(temperature=0, repetition_penalty=10.0)], 4,
                                          token_ids=[[1, 1]])
    ids, lp = sample(logits, tensors, [None])
    assert int(ids) == 2 and torch.allclose(lp, logits.log_softmax(-1)[:, 2])  # of the unprocessed distribution


def test_greedy_and_sampled_rows_mix():
    logits = torch.tensor([[0.0, 5.0, 4.0], [0.0, 5.0, 4.0], [0.0, 5.0, 4.0]])
    params = [SamplingParams(temperature=0), SamplingParams(top_k=1, repetition_penalty=100.0),
              SamplingParams(temperature=0, repetition_penalty=100.0)]
    tensors = SamplingTensors.from_params(params, 3, token_ids=[[1], [1], [1]])
    ids, _ = sample(logits, tensors, [None, None, None])
    assert ids.tolist() == [1, 2, 2]  # each row's own penalty, greedy or not


@pytest.mark.parametrize("vocab", [5, 512, 1000, 4096, 32000, 32003])
def test_row_argmax_equals_torch_argmax_including_ties_and_nan(vocab):
    generator = torch.Generator().manual_seed(vocab)
    logits = torch.randint(-3, 4, (9, vocab), generator=generator).float()  # many ties per row
    logits[1] = 0.0  # all tied: index 0
    logits[2, -1] = 10.0  # the maximum in the tail (past the last whole block)
    logits[3, vocab // 3] = float("nan")  # NaN ranks above everything, as torch.argmax has it
    logits[4, -1] = float("nan")
    logits[5, :] = -INF
    logits[6, vocab // 2] = logits[6, -1] = 10.0  # tie between a block and the tail: the earlier wins
    assert row_argmax(logits).tolist() == logits.argmax(dim=-1).tolist()
    view = torch.randn(3, vocab + 7, generator=generator)[:, :vocab]  # padded rows, as sample() slices them
    assert row_argmax(view).tolist() == view.argmax(dim=-1).tolist()


def test_draw_inverts_the_cdf():
    probs = torch.tensor([[0.25, 0.0, 0.5, 0.25]]).repeat(4, 1)
    assert draw(probs, torch.tensor([0.0, 0.24, 0.26, 0.99])).tolist() == [0, 0, 2, 3]


# --- log-probabilities --------------------------------------------------------------------------


def test_logprobs_are_of_the_unprocessed_distribution():
    torch.manual_seed(0)
    logits = torch.randn(3, 10)
    params = [SamplingParams(temperature=0.3, top_k=3, top_p=0.5, repetition_penalty=1.5, seed=1)] * 3
    tensors = SamplingTensors.from_params(params, 10, token_ids=[[0, 1]] * 3)
    ids, lp = sample(logits, tensors, [make_generator(s) for s in range(3)])
    assert lp.dtype == torch.float32
    assert torch.allclose(lp, log_probs(logits).gather(1, ids[:, None]).squeeze(1))


def test_given_log_probs_are_the_ones_read():
    """A caller that needs the whole rows (reported alternatives) passes them in: the chosen tokens'
    log-probabilities are read from them, not from a second log_softmax."""
    torch.manual_seed(0)
    logits = torch.randn(2, 10)
    tensors = SamplingTensors.from_params([SamplingParams(temperature=0)] * 2, 10)
    ids, lp = sample(logits, tensors, [None, None])
    shifted = log_probs(logits) - 1.0  # not a log-softmax of these logits: tells which rows were read
    ids_given, lp_given = sample(logits, tensors, [None, None], shifted)
    assert torch.equal(ids_given, ids) and torch.equal(lp_given, lp - 1.0)


def test_padded_vocab_columns_are_never_sampled_nor_counted():
    logits = torch.tensor([[0.0, 1.0, 100.0]])
    tensors = SamplingTensors.from_params([SamplingParams()], 2)
    ids, lp = sample(logits, tensors, [make_generator(0)])
    assert int(ids) in (0, 1)
    assert torch.allclose(lp, logits[:, :2].log_softmax(-1)[0, ids])


def test_bf16_logits():
    torch.manual_seed(1)
    logits = torch.randn(2, 50).bfloat16()
    params = [SamplingParams(top_k=5, top_p=0.9, seed=3), SamplingParams(temperature=0)]
    tensors = SamplingTensors.from_params(params, 50)
    ids, lp = sample(logits, tensors, [make_generator(3), None])
    ids32, lp32 = sample(logits.float(), tensors, [make_generator(3), None])
    assert lp.dtype == torch.float32 and torch.equal(ids, ids32) and torch.equal(lp, lp32)
    assert int(ids[1]) == int(logits[1].float().argmax())


# --- randomness ---------------------------------------------------------------------------------


def _generate(logit_steps: torch.Tensor, params: list[SamplingParams], rows: list[int]) -> list[list[int]]:
    """Run len(logit_steps) steps on a batch whose row b sees logit_steps[:, rows[b]]."""
    tensors = SamplingTensors.from_params(params, logit_steps.shape[-1], eos_id=0, token_ids=[[5, 6]] * len(params))
    generators = [make_generator(p.seed) for p in params]
    out: list[list[int]] = [[] for _ in params]
    for step in logit_steps:
        ids, _ = sample(step[rows], tensors, generators)
        tensors.record(ids)
        for b, t in enumerate(ids.tolist()):
            out[b].append(t)
    return out


def test_seeded_row_is_independent_of_batch_composition():
    torch.manual_seed(0)
    steps = torch.randn(12, 6, 64)  # (steps, candidate rows, V)
    me = SamplingParams(temperature=1.3, top_k=20, top_p=0.95, repetition_penalty=1.2, min_tokens=3, seed=1234)
    alone = _generate(steps, [me], [0])[0]
    others = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=0.5, seed=7),
        SamplingParams(top_p=0.3),
        SamplingParams(top_k=2, repetition_penalty=2.0, seed=99),
    ]
    batch = _generate(steps, others[:2] + [me] + others[2:], [1, 2, 0, 3, 4])
    assert batch[2] == alone
    assert _generate(steps, [me], [0])[0] == alone  # and reproducible
    assert _generate(steps, [SamplingParams(temperature=1.3, top_k=20, seed=4321)], [0])[0] != alone


def test_sampling_matches_the_filtered_distribution():
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
    params = SamplingParams(temperature=0.8, top_k=6, top_p=0.9)
    rows = 4000
    tensors = SamplingTensors.from_params([params] * rows, 8)
    batch = logits.repeat(rows, 1)
    torch.manual_seed(0)
    counts = torch.zeros(8)
    for _ in range(5):
        ids, _ = sample(batch, tensors, [None] * rows)
        counts += torch.bincount(ids, minlength=8)
    # Expected by hand: temperature, top-6, then nucleus over the renormalised survivors.
    scaled = logits / 0.8
    p = scaled[:6].softmax(-1)
    keep = int((p.cumsum(-1)[:-1] <= 0.9).sum()) + 1
    expected = torch.zeros(8)
    expected[:keep] = p[:keep] / p[:keep].sum()
    n = counts.sum()
    assert counts[keep:].sum() == 0
    chi2 = float(((counts[:keep] - n * expected[:keep]) ** 2 / (n * expected[:keep])).sum())
    assert chi2 < 20.5, chi2  # p ≈ 0.001 at ≤ 5 degrees of freedom


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": 100.5}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_k": -2}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.1}, "top_p"),
        ({"repetition_penalty": 0.9}, "repetition_penalty"),
        ({"min_tokens": -2}, "min_tokens"),
        ({"min_tokens": 10, "max_tokens": 5}, "min_tokens"),
        ({"stop": [""]}, "stop"),
        ({"stop": 3}, "stop"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
        ({"logprobs": -2}, "logprobs"),
        ({"logprobs": 1.0}, "logprobs"),
        ({"prompt_logprobs": -3}, "prompt_logprobs"),
        ({"ignore_eos": "yes"}, "ignore_eos"),
    ],
)
def test_invalid_params_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field} ") as info:
        SamplingParams(**kwargs)
    assert isinstance(info.value, SamplingParamsError) and "\n" not in str(info.value)  # one line for the CLI


def test_valid_edges_are_accepted():
    SamplingParams(temperature=100, top_p=1, top_k=0, max_tokens=0, seed=0)
    assert SamplingParams(temperature=0).greedy and not SamplingParams(temperature=1e-5).greedy
    assert SamplingParams(temperature=1e-6).greedy  # vLLM: below 1e-5 is greedy
    SamplingParams(logprobs=5, stop_token_ids=(3,), prompt_logprobs=0, max_tokens=None)
    # vLLM's spellings: top_k -1 is off, one stop string, -1 log-probabilities for the whole vocabulary
    params = SamplingParams(top_k=-1, stop="###", logprobs=-1)
    assert (params.top_k, params.stop, params.logprobs) == (0, ["###"], -1)


def test_from_params_rejects_inconsistent_inputs():
    with pytest.raises(ValueError, match="token_ids"):
        SamplingTensors.from_params([SamplingParams(repetition_penalty=1.1)], 10)
    with pytest.raises(ValueError, match="stop_token_ids"):
        SamplingTensors.from_params([SamplingParams(min_tokens=1, stop_token_ids=[10])], 10)
    tensors = SamplingTensors.from_params([SamplingParams()], 10)
    with pytest.raises(ValueError, match="generators"):
        sample(torch.zeros(1, 10), tensors, [None, None])


def test_derived_seeds_are_reproducible_and_distinct():
    assert derive_seed(None, 3) is None and derive_seed(7, 0) == 7
    seeds = [derive_seed(7, i) for i in range(100)]
    assert len(set(seeds)) == 100 and seeds == [derive_seed(7, i) for i in range(100)]
    assert all(0 <= s < 2**64 for s in seeds)
