"""Log-probabilities over a whole token sequence, computed beside the engine.

The engine reports the chosen token's log-probability at every position; two requests need more:
NeMo's `all_probs` (the full distribution at every position) and OpenAI's `echo` with `logprobs`
(the most likely alternatives at every prompt position, which evaluation harnesses compare the
chosen token against). One plain forward pass per request answers both, on a worker thread of its
own, applying the output layer to a few positions at a time so a 256k vocabulary never
materialises for a whole sequence.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from nemotron.engine.model_runner import ModelRunner, ScorePlan


@dataclass(slots=True)
class SequenceLogprobs:
    """Row i is the distribution of token i + 1 given tokens 0..i."""

    chosen: list[float]  # log-probability of each token after the first
    top: list[list[tuple[int, float]]]  # its `top_n` most likely alternatives, when asked for
    full: list[list[float]]  # every token's log-probability, when asked for


class SequenceScorer:
    def __init__(self, runner: ModelRunner, rows_per_chunk: int = 64) -> None:
        self.runner = runner  # the engine's: its model, and its channel when the model is split over ranks
        self.rows_per_chunk = rows_per_chunk
        self.vocab_size = runner.vocab_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nemotron-scoring")

    async def logprobs(self, ids: list[int], top_n: int = 0, full: bool = False) -> SequenceLogprobs:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._compute, list(ids), top_n, full)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _compute(self, ids: list[int], top_n: int, full: bool) -> SequenceLogprobs:
        result = SequenceLogprobs([], [], [])
        if len(ids) < 2:
            return result
        plan = ScorePlan(ids, self.rows_per_chunk)
        channel = self.runner.channel
        if channel is None:
            self._collect(plan, top_n, full, result)
            return result
        with channel.step():  # every rank runs the forward; the engine's steps wait their turn
            channel.broadcast(plan)
            self._collect(plan, top_n, full, result)
        return result

    @torch.inference_mode()
    def _collect(self, plan: ScorePlan, top_n: int, full: bool, result: SequenceLogprobs) -> None:
        targets = torch.tensor(plan.token_ids[1:], device=self.runner.device)  # (T-1,)
        start = 0
        for logits in self.runner.sequence_logits(plan):
            logp = logits.float()[:, :self.vocab_size].log_softmax(-1)  # (C, V)
            rows = slice(start, start + logp.shape[0])
            result.chosen += logp.gather(1, targets[rows, None]).squeeze(1).tolist()
            if top_n:
                values, top_ids = logp.topk(min(top_n, self.vocab_size), dim=-1)  # (C, n)
                result.top += [list(zip(i, v)) for i, v in zip(top_ids.tolist(), values.tolist())]
            if full:
                result.full += logp.tolist()
            start = rows.stop
