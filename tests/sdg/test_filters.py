"""Reward thresholds (per attribute and the weighted scalar) and length filters."""
from __future__ import annotations

import pytest

from nemotron.model.config import REWARD_ATTRIBUTES
from nemotron.sdg.filters import (
    REWARD_WEIGHTS,
    FilterResult,
    LengthFilter,
    RewardFilter,
    first_rejection,
    reward_scalar,
)

SCORES = dict(zip(REWARD_ATTRIBUTES, [3.0, 0.1, 0.5, 1.0, 3.5, 3.2, 3.8, 1.9, 1.2]))


def test_weights_follow_the_attribute_order():
    assert len(REWARD_WEIGHTS) == len(REWARD_ATTRIBUTES) == 9
    weights = dict(zip(REWARD_ATTRIBUTES, REWARD_WEIGHTS))
    assert weights["helpfulness"] == 0.3 and weights["correctness"] == 0.74
    assert weights["verbosity"] == -0.33 and weights["toxicity"] == 0.0


def test_reward_scalar_by_hand():
    expected = 0.3 * 3.5 + 0.74 * 3.2 + 0.46 * 3.8 + 0.47 * 1.9 - 0.33 * 1.2
    assert reward_scalar(SCORES) == pytest.approx(expected)
    assert reward_scalar([SCORES[a] for a in REWARD_ATTRIBUTES]) == pytest.approx(expected)
    # zero-weight attributes may be absent
    partial = {a: v for a, v in SCORES.items() if a in ("helpfulness", "correctness", "coherence",
                                                        "complexity", "verbosity")}
    assert reward_scalar(partial) == pytest.approx(expected)
    with pytest.raises(ValueError, match="needs attributes"):
        reward_scalar({"helpfulness": 1.0})
    with pytest.raises(ValueError, match="expected 9"):
        reward_scalar([1.0, 2.0])


def test_reward_filter_per_attribute_and_scalar():
    assert RewardFilter({"helpfulness": 3.0, "coherence": 3.5})(SCORES) == FilterResult(True, None)
    dropped = RewardFilter({"correctness": 3.3})(SCORES)
    assert not dropped.kept and dropped.reason == "reward correctness 3.200 < min 3.3"
    scalar = reward_scalar(SCORES)
    assert RewardFilter(min_scalar=scalar - 0.01)(SCORES).kept
    result = RewardFilter(min_scalar=scalar + 0.01)(SCORES)
    assert not result.kept and result.reason.startswith("reward scalar")


def test_reward_filter_rejects_bad_configs():
    with pytest.raises(ValueError, match="unknown reward attributes"):
        RewardFilter({"helpfullness": 1.0})
    with pytest.raises(ValueError, match="lack attribute"):
        RewardFilter({"humor": 1.0})({"helpfulness": 2.0})


def test_length_filters():
    text = "one two three four five"
    assert LengthFilter("words", min_len=5, max_len=5)(text).kept
    assert LengthFilter("words", min_len=6)(text) == FilterResult(False, "too short: 5 words < min 6")
    assert LengthFilter("chars", max_len=10)(text) == FilterResult(False, "too long: 23 chars > max 10")
    by_list = LengthFilter("tokens", max_len=4, tokenizer=lambda s: list(s.replace(" ", "")))
    assert not by_list(text).kept and "tokens" in by_list(text).reason
    assert LengthFilter("tokens", min_len=2, tokenizer=lambda s: 2)(text).kept
    with pytest.raises(ValueError, match="tokenizer"):
        LengthFilter("tokens")
    with pytest.raises(ValueError, match="unit"):
        LengthFilter("lines")
    with pytest.raises(ValueError, match="min_len"):
        LengthFilter(min_len=5, max_len=2)


def test_first_rejection_is_lazy():
    calls = []

    def results():
        for r in (FilterResult(True), FilterResult(False, "first"), FilterResult(False, "second")):
            calls.append(r)
            yield r

    assert first_rejection(results()).reason == "first"
    assert len(calls) == 2
    assert first_rejection([FilterResult(True)]) == FilterResult(True, None)
