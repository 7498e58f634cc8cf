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

from nemotron.model.nemotron import NemotronForCausalLM
from nemotron.server.errors import bad_request


@dataclass(slots=True)
class SequenceLogprobs:
    """Row i is the distribution of token i + 1 given tokens 0..i."""

    chosen: list[float]  # log-probability of each token after the first
    top: list[list[tuple[int, float]]]  # its `top_n` most likely alternatives, when asked for
    full: list[list[float]]  # every token's log-probability, when asked for


class SequenceScorer:
    def __init__(self, model: NemotronForCausalLM, rows_per_chunk: int = 64, split: bool = False) -> None:
        self.model = model
        self.split = split  # split over ranks (--tp/--pp): only the engine's steps may run it
        self.rows_per_chunk = rows_per_chunk
        self.vocab_size = model.config.vocab_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nemotron-scoring")

    async def logprobs(self, ids: list[int], top_n: int = 0, full: bool = False) -> SequenceLogprobs:
        if self.split:
            raise bad_request("full distributions (all_probs, echo with top logprobs) are not available when the "
                              "model is split over ranks (--tp / --pp)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._compute, list(ids), top_n, full)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    @torch.inference_mode()
    def _compute(self, ids: list[int], top_n: int, full: bool) -> SequenceLogprobs:
        result = SequenceLogprobs([], [], [])
        if len(ids) < 2:
            return result
        device = self.model.lm_head.weight.device
        tokens = torch.tensor([ids], device=device)
        hidden = self.model.model(tokens)[0, :-1]  # (T-1, H)
        targets = tokens[0, 1:]  # (T-1,)
        for start in range(0, hidden.shape[0], self.rows_per_chunk):
            rows = slice(start, start + self.rows_per_chunk)
            logp = self.model.lm_head(hidden[rows]).float()[:, :self.vocab_size].log_softmax(-1)  # (C, V)
            result.chosen += logp.gather(1, targets[rows, None]).squeeze(1).tolist()
            if top_n:
                values, top_ids = logp.topk(min(top_n, self.vocab_size), dim=-1)  # (C, n)
                result.top += [list(zip(i, v)) for i, v in zip(top_ids.tolist(), values.tolist())]
            if full:
                result.full += logp.tolist()
        return result
