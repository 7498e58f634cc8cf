"""One model step over a flattened batch of scheduled chunks: inputs, forward, sampling."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from nemotron.engine.cuda_graphs import DecodeGraphs
from nemotron.engine.decode_workspace import LanePlan
from nemotron.engine.paged_cache import BatchLayout, PagedKVCache
from nemotron.engine.sampling import SamplingTensors, sample, top_logprobs
from nemotron.engine.scheduler import ScheduledChunk
from nemotron.engine.sequence import Sequence
from nemotron.model.nemotron import NemotronForCausalLM


@dataclass(slots=True)
class SampledToken:
    chunk: ScheduledChunk
    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # the most likely alternatives, when asked for


class ModelRunner:
    def __init__(self, model: NemotronForCausalLM, kv_cache: PagedKVCache, eos_id: int) -> None:
        self.model = model
        self.kv_cache = kv_cache
        self.eos_id = eos_id
        self.device = model.lm_head.weight.device
        self.vocab_size = model.config.vocab_size
        self._last_batch: list[Sequence] = []
        self._last_counts: list[int] = []
        self._last_tensors: SamplingTensors | None = None
        self.graphs: DecodeGraphs | None = None  # set by the engine on GPUs

    @torch.inference_mode()
    def run(self, chunks: list[ScheduledChunk]) -> list[SampledToken]:
        if self.graphs is not None and self._graph_step(chunks):
            logits = self.graphs.run([c.seq.token_ids[c.start] for c in chunks], [c.start for c in chunks],
                                     [c.seq.block_table for c in chunks])
            return self._sample(chunks, logits)
        chunks, lanes = self._order_for_lanes(chunks)
        ids, positions = [], []
        for chunk in chunks:
            ids += chunk.seq.token_ids[chunk.start:chunk.start + chunk.num_tokens]
            positions += range(chunk.start, chunk.start + chunk.num_tokens)
        position_ids = torch.tensor(positions, device=self.device)
        layout = BatchLayout.build([c.seq.block_table for c in chunks], [c.start for c in chunks],
                                   [c.num_tokens for c in chunks], position_ids, self.kv_cache.block_size)
        layout.lanes = lanes
        self.kv_cache.use(layout)
        input_ids = torch.tensor([ids], device=self.device)
        hidden = self.model.model(input_ids, position_ids[None], self.kv_cache)[0]  # (T, H)

        ends = [end - 1 for end in itertools.accumulate(c.num_tokens for c in chunks)]  # last row of each chunk
        self._record_prompt_logprobs(chunks, hidden, ends)
        sampling = [c for c in chunks if c.samples]
        if not sampling:
            return []
        rows = torch.tensor([end for end, c in zip(ends, chunks) if c.samples], device=self.device)
        logits = self.model.lm_head(hidden[rows])  # (S, V)
        return self._sample(sampling, logits)

    def _order_for_lanes(self, chunks: list[ScheduledChunk]) -> tuple[list[ScheduledChunk], LanePlan | None]:
        """With a decode workspace: one-token rows first, in lane order, and their lane plan."""
        if self.kv_cache.workspace is None:
            return chunks, None
        single = [c for c in chunks if c.num_tokens == 1]
        lanes = self.kv_cache.plan_lanes([c.seq for c in single], [c.start + 1 for c in single])
        if lanes is None:
            return chunks, None
        single.sort(key=lambda c: self.kv_cache.workspace.lane(c.seq))
        return single + [c for c in chunks if c.num_tokens != 1], lanes

    def _graph_step(self, chunks: list[ScheduledChunk]) -> bool:
        """A step the decode graphs can replay: one new token per sequence, all sampling."""
        return (all(c.num_tokens == 1 and c.samples for c in chunks)
                and self.graphs.fits(len(chunks), max(len(c.seq.block_table) for c in chunks)))

    def _sampling_tensors(self, seqs: list[Sequence]) -> SamplingTensors:
        """Packed knobs for this batch; reused while the same sequences decode step after step."""
        counts = [s.num_output_tokens for s in seqs]
        if self._last_batch == seqs and self._last_counts == counts:
            return self._last_tensors
        params = [s.params for s in seqs]
        needs_history = any(p.repetition_penalty > 1 and not p.greedy for p in params)
        return SamplingTensors.from_params(
            params, self.vocab_size, self.device, eos_id=self.eos_id,
            token_ids=[s.token_ids for s in seqs] if needs_history else None, generated_counts=counts)

    def _sample(self, chunks: list[ScheduledChunk], logits: Tensor) -> list[SampledToken]:
        seqs = [c.seq for c in chunks]
        tensors = self._sampling_tensors(seqs)
        token_ids, logprobs = sample(logits, tensors, [s.generator for s in seqs])
        tensors.record(token_ids)  # counts and seen tokens now match the sequences after this step
        self._last_batch, self._last_tensors = seqs, tensors
        self._last_counts = [s.num_output_tokens + 1 for s in seqs]
        tops: list[list[tuple[int, float]]] = [[] for _ in seqs]
        if tensors.max_logprobs > 0:
            values, ids = top_logprobs(logits[:, :self.vocab_size].float().log_softmax(-1), tensors.max_logprobs)
            for i, seq in enumerate(seqs):
                n = seq.params.logprobs if seq.params.return_logprobs else 0
                tops[i] = list(zip(ids[i, :n].tolist(), values[i, :n].tolist()))
        return [SampledToken(c, t, lp, top) for c, t, lp, top in
                zip(chunks, token_ids.tolist(), logprobs.tolist(), tops)]

    def _record_prompt_logprobs(self, chunks: list[ScheduledChunk], hidden: Tensor, ends: list[int]) -> None:
        """Log-probability of each prompt token given the tokens before it (for scoring / echo)."""
        for i, chunk in enumerate(chunks):
            seq = chunk.seq
            if not seq.params.prompt_logprobs or chunk.start >= seq.num_prompt_tokens:
                continue
            if seq.prompt_logprobs is None:
                seq.prompt_logprobs = [None]  # the first token has no context to be predicted from
            # Row j predicts token start + j + 1; keep predictions of prompt tokens only.
            last = min(chunk.start + chunk.num_tokens, seq.num_prompt_tokens - 1)
            count = last - chunk.start
            if count <= 0:
                continue
            first_row = ends[i] - chunk.num_tokens + 1
            logits = self.model.lm_head(hidden[first_row:first_row + count]).float()[:, :self.vocab_size]
            targets = torch.tensor(seq.token_ids[chunk.start + 1:chunk.start + 1 + count], device=self.device)
            chosen = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
            seq.prompt_logprobs += chosen.tolist()
