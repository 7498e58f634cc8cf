"""The batched reward scorer: concurrent requests share forwards and score as if alone."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest
import torch

from nemotron.engine.reward_scorer import RewardScorer, ScorerClosedError, ScorerConfig, ScoringError
from nemotron.model.nemotron import build_model, init_random_weights
from tests.conftest import TINY_CONFIG
from tests.engine.test_engine import prompts


@pytest.fixture(scope="module")
def reward_model():
    model = build_model(dataclasses.replace(TINY_CONFIG, num_reward_attributes=9))
    init_random_weights(model, seed=5, std=0.1)
    return model.eval()


def score_all(scorer: RewardScorer, conversations: list[list[int]]) -> list[list[float]]:
    async def main():
        return await asyncio.gather(*(scorer.score(ids) for ids in conversations))
    return asyncio.run(main())


@torch.no_grad()
def test_concurrent_scores_equal_single_forwards(reward_model):
    conversations = prompts(24, seed=21, low=1, high=80)
    scorer = RewardScorer(reward_model, ScorerConfig(max_batch_size=8, max_batch_tokens=600, window_s=0.02))
    try:
        scores = score_all(scorer, conversations)
    finally:
        scorer.close()
    for ids, row in zip(conversations, scores):
        alone = reward_model(torch.tensor([ids]))[0]  # (9,)
        torch.testing.assert_close(torch.tensor(row), alone, atol=1e-5, rtol=1e-5)
    assert 24 / 8 <= scorer.num_batches < 24  # batched, within max_batch_size


def test_batches_respect_both_limits(reward_model):
    scorer = RewardScorer(reward_model, ScorerConfig(max_batch_size=4, max_batch_tokens=100))
    try:
        jobs = [type("Job", (), {"ids": [5] * n})() for n in (10, 60, 20, 30, 5, 5, 5, 5, 5)]
        batches = scorer._batches(jobs)
    finally:
        scorer.close()
    assert sorted(len(j.ids) for b in batches for j in b) == sorted(len(j.ids) for j in jobs)
    for batch in batches:
        assert len(batch) <= 4 and len(batch) * max(len(j.ids) for j in batch) <= 100


def test_unscorable_input_is_refused_with_a_reason(reward_model):
    scorer = RewardScorer(reward_model)
    try:
        with pytest.raises(ScoringError, match="empty"):
            score_all(scorer, [[]])
        with pytest.raises(ScoringError, match="context is 256"):
            score_all(scorer, [[5] * 257])
        with pytest.raises(ScoringError, match=r"\[0, 320\)"):
            score_all(scorer, [[5, 320]])
    finally:
        scorer.close()
    with pytest.raises(ScorerClosedError):
        score_all(scorer, [[5, 6]])
