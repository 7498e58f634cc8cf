"""One model step over a flattened batch of scheduled chunks: inputs, forward, sampling.

A step is split in two so that it can run on several ranks (tensor / pipeline parallelism):
`plan()` turns the scheduler's chunks into a `StepPlan` of plain numbers, `execute(plan)` runs the
forward on this rank's shard and returns the logits the sampler needs (on rank 0). Rank 0 plans,
hands the plan to the other ranks through `channel` (nemotron.parallel.runtime) and samples; the
other ranks only execute. On one device there is no channel and the same code runs.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from nemotron.engine.cpu_trace import TracedDecode
from nemotron.engine.cuda_graphs import DecodeGraphs
from nemotron.engine.decode_workspace import LanePlan
from nemotron.engine.output import Token
from nemotron.engine.paged_cache import BatchLayout, OneThread, PagedKVCache
from nemotron.engine.sampling import SamplingTensors, log_probs, sample
from nemotron.engine.scheduler import ScheduledChunk
from nemotron.engine.sequence import Sequence
from nemotron.memory.planner import SCORED_CHUNK_ROWS
from nemotron.model.nemotron import NemotronForCausalLM


@dataclass(slots=True)
class SampledToken:
    chunk: ScheduledChunk
    token: Token


@dataclass(slots=True)
class StepPlan:
    """One step as every rank runs it: plain numbers, so rank 0 can broadcast it. Per chunk:"""

    keys: list[int]  # the sequence's identity; its decode lane follows it from step to step
    starts: list[int]  # first position computed
    num_tokens: list[int]
    block_tables: list[list[int]]
    prompt_rows: list[int]  # leading rows whose logits score the prompt (prompt log-probabilities)
    samples: list[bool]  # whether the last row's logits draw a token
    token_ids: list[int]  # the chunks' new tokens, concatenated
    state_slots: list[int | None]  # hybrid models: the sequence's Mamba state slot (else None)

    def logit_rows(self, order: list[int]) -> list[int]:
        """Rows of the hidden states (chunks laid out in `order`) whose logits the driver reads:
        every chunk's prompt rows, then every sampling chunk's last row, chunks in plan order."""
        first = [0] * len(order)
        for row, i in zip(itertools.accumulate([0] + [self.num_tokens[i] for i in order]), order):
            first[i] = row
        prompt = [first[i] + j for i, n in enumerate(self.prompt_rows) for j in range(n)]
        return prompt + [first[i] + self.num_tokens[i] - 1 for i, s in enumerate(self.samples) if s]


class _LaneKey:
    """Stands for a sequence in the decode workspace, which keys lanes by object and reads block tables."""

    __slots__ = ("block_table",)

    def __init__(self) -> None:
        self.block_table: list[int] = []


# Prompt attention on CUDA without cuDNN's SDPA kernel, which torch 2.11 chose on an H200: cuDNN
# builds an execution plan on the host for each new shape, and chunked prefill of mixed-length
# prompts meets new (query, key) lengths all the time. There, the 8B shape's fresh prefill of
# 64 x 128 tokens took ~2.5 s of wall time for well under 0.2 s of GPU work, with cuDNN's kernel in
# the profile (gpu_suite.sh, profile-engine). That cuDNN's plans are the cause is a suspicion until
# gpu_profile.py's prefill comparison runs; flash and memory-efficient attention need no plan.
_PROMPT_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention_backends(device: torch.device) -> contextlib.AbstractContextManager:
    """The SDPA kernels a step's forward may use on `device` (every kernel torch has, off CUDA)."""
    return sdpa_kernel(_PROMPT_ATTENTION) if device.type == "cuda" else contextlib.nullcontext()


class ModelRunner:
    def __init__(self, model: NemotronForCausalLM, kv_cache: PagedKVCache, eos_id: int, channel=None) -> None:
        self.model = model
        self.kv_cache = kv_cache
        self.eos_id = eos_id
        self.channel = channel  # nemotron.parallel.runtime.StepChannel when the model is split over ranks
        self.device = kv_cache.keys.device
        self.vocab_size = model.config.vocab_size
        self._last_batch: list[Sequence] = []
        self._last_counts: list[int] = []
        self._last_tensors: SamplingTensors | None = None
        self._seq_keys: dict[Sequence, int] = {}  # sequences of the last step (driver)
        self._next_key: Iterator[int] = itertools.count()
        self._lane_keys: dict[int, _LaneKey] = {}  # keys of the last step (every rank)
        self.graphs: DecodeGraphs | None = None  # set by the engine on GPUs
        self.traced: TracedDecode | None = None  # set by the engine on CPUs

    # ---- rank 0: plan, execute, sample ------------------------------------------------------
    @torch.inference_mode()
    def run(self, chunks: list[ScheduledChunk]) -> list[SampledToken]:
        if self.graphs is not None and self._graph_step(chunks):
            logits = self.graphs.run([c.seq.token_ids[c.start] for c in chunks], [c.start for c in chunks],
                                     [c.seq.block_table for c in chunks])
            return self._sample(chunks, logits)
        plan = self.plan(chunks)
        if self.channel is None:
            logits = self.execute(plan)  # (prompt rows + sampling rows, V)
        else:
            with self.channel.step():
                self.channel.broadcast(plan)
                logits = self.execute(plan)
        num_prompt = sum(plan.prompt_rows)
        self._record_prompt_logprobs(chunks, plan, logits[:num_prompt])
        sampling = [c for c in chunks if c.samples]
        return self._sample(sampling, logits[num_prompt:]) if sampling else []

    def plan(self, chunks: list[ScheduledChunk]) -> StepPlan:
        keys = {c.seq: self._seq_keys.get(c.seq) for c in chunks}
        self._seq_keys = {seq: next(self._next_key) if key is None else key for seq, key in keys.items()}
        ids: list[int] = []
        for c in chunks:
            ids += c.seq.token_ids[c.start:c.start + c.num_tokens]
        return StepPlan([self._seq_keys[c.seq] for c in chunks], [c.start for c in chunks],
                        [c.num_tokens for c in chunks], [c.seq.block_table for c in chunks],
                        [_prompt_rows(c) for c in chunks], [c.samples for c in chunks], ids,
                        [c.seq.state_slot for c in chunks])

    # ---- every rank ---------------------------------------------------------------------------
    @torch.inference_mode()
    def execute(self, plan: StepPlan) -> Tensor | None:
        """This rank's part of the step; the logits of plan.logit_rows on rank 0, None elsewhere."""
        order, lanes = self._order_for_lanes(plan)
        with attention_backends(self.device):
            hidden = self._forward(plan, order, lanes)  # (T, H); None on pipeline stages before the last
        rows = plan.logit_rows(order)
        logits = None
        if hidden is not None:
            if rows and rows == list(range(rows[0], rows[0] + len(rows))):  # decoding: the last rows, a view
                picked = hidden[rows[0]:rows[0] + len(rows)]
            else:
                picked = hidden[torch.tensor(rows, dtype=torch.long, device=self.device)]
            logits = self.model.lm_head(picked)
        if self.channel is not None:
            logits = self.channel.to_driver(logits, (len(rows), self.vocab_size), self.kv_cache.keys.dtype)
        return logits

    def _forward(self, plan: StepPlan, order: list[int], lanes: LanePlan | None) -> Tensor | None:
        """Hidden states of the chunks laid out in `order`. With pipeline stages the chunks go through
        in micro-batches, several in flight, each with its own batch layout."""
        offsets = list(itertools.accumulate([0] + plan.num_tokens))
        parts = [order]
        if self.channel is not None and self.channel.layout.pp > 1:
            m = min(self.channel.config.steps_micro_batches, len(order))
            parts = [order[k * len(order) // m:(k + 1) * len(order) // m] for k in range(m)]
        batches = []
        for part in parts:
            ids, positions = [], []
            for i in part:
                ids += plan.token_ids[offsets[i]:offsets[i + 1]]
                positions += range(plan.starts[i], plan.starts[i] + plan.num_tokens[i])
            position_ids = torch.tensor(positions, device=self.device)
            layout = BatchLayout.build([plan.block_tables[i] for i in part], [plan.starts[i] for i in part],
                                       [plan.num_tokens[i] for i in part], position_ids, self.kv_cache.block_size)
            layout.lanes = lanes
            layout.state_slots = [plan.state_slots[i] for i in part]
            batches.append((torch.tensor([ids], device=self.device), position_ids[None], layout))
        if len(batches) == 1 and (self.channel is None or self.channel.layout.pp == 1):
            input_ids, positions, layout = batches[0]
            self.kv_cache.use(layout)
            if self.traced is not None and self.traced.fits(layout, input_ids.shape[1]):
                hidden = self.traced.forward(input_ids, positions)[0]
            else:
                hidden = self.model.model(input_ids, positions, self.kv_cache)[0]
            self.kv_cache.store_lane_tokens()
            return hidden
        from nemotron.parallel.pipeline import MicroBatch, pipeline_forward

        micro = [MicroBatch(positions, input_ids, self.kv_cache, functools.partial(self.kv_cache.use, layout))
                 for input_ids, positions, layout in batches]
        outputs = pipeline_forward(self.model, self.channel.layout, micro, self.channel.stage_times)
        return None if outputs[0] is None else torch.cat([h[0] for h in outputs])

    def _order_for_lanes(self, plan: StepPlan) -> tuple[list[int], LanePlan | None]:
        """Chunk order in the batch: one-token chunks first (the attention serves them in one call;
        BatchLayout.decode_rows), in lane order with a decode workspace, and their lane plan. Every
        rank computes the same order from the same plan."""
        single = [i for i, n in enumerate(plan.num_tokens) if n == 1]
        chunks = [i for i, n in enumerate(plan.num_tokens) if n != 1]
        if self.kv_cache.workspace is None:
            return single + chunks, None
        lane_keys = {key: self._lane_keys.get(key) or _LaneKey() for key in plan.keys}
        self._lane_keys = lane_keys
        for key, table in zip(plan.keys, plan.block_tables):
            lane_keys[key].block_table = table
        lanes = self.kv_cache.plan_lanes([lane_keys[plan.keys[i]] for i in single],
                                         [plan.starts[i] + 1 for i in single])
        if lanes is not None:
            single.sort(key=lambda i: self.kv_cache.workspace.lane(lane_keys[plan.keys[i]]))
        return single + chunks, lanes

    # ---- rank 0: sampling ----------------------------------------------------------------------
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
        needs_history = any(p.repetition_penalty > 1 or p.presence_penalty or p.frequency_penalty for p in params)
        return SamplingTensors.from_params(
            params, self.vocab_size, self.device, eos_id=self.eos_id,
            token_ids=[s.token_ids for s in seqs] if needs_history else None, generated_counts=counts)

    def _sample(self, chunks: list[ScheduledChunk], logits: Tensor) -> list[SampledToken]:
        seqs = [c.seq for c in chunks]
        tensors = self._sampling_tensors(seqs)
        described = tensors.max_logprobs >= 0  # some row asked for log-probabilities: ranks and alternatives
        # (B, V): the rows the chosen tokens' log-probabilities, ranks and alternatives all come from
        logp = log_probs(logits, self.vocab_size) if described else None
        if self.device.type == "cpu" and logits.numel() <= SERIAL_SAMPLING_LOGITS:  # reductions: 3 parallel regions
            with OneThread():
                token_ids, logprobs = sample(logits, tensors, [s.generator for s in seqs], logp)
        else:
            token_ids, logprobs = sample(logits, tensors, [s.generator for s in seqs], logp)
        tensors.record(token_ids)  # counts and seen tokens now match the sequences after this step
        self._last_batch, self._last_tensors = seqs, tensors
        self._last_counts = [s.num_output_tokens + 1 for s in seqs]
        tokens = [Token(t, lp) for t, lp in zip(token_ids.tolist(), logprobs.tolist())]
        if described:
            _describe(tokens, [s.params.logprobs for s in seqs], logp, (logp > logprobs[:, None]).sum(-1) + 1)
        return [SampledToken(c, t) for c, t in zip(chunks, tokens)]

    def _record_prompt_logprobs(self, chunks: list[ScheduledChunk], plan: StepPlan, logits: Tensor) -> None:
        """Each prompt token given the tokens before it (scoring, echo): log-probability, rank and the
        asked-for alternatives, computed from the same row. The rows go through the vocabulary
        PROMPT_ROWS at a time, so a long prompt never holds its float32 log-probabilities at once."""
        first = 0
        for chunk, count in zip(chunks, plan.prompt_rows):
            if count == 0:
                continue
            seq = chunk.seq
            if seq.prompt_logprobs is None:
                seq.prompt_logprobs = [None]  # the first token has no context to be predicted from
            for start in range(0, count, PROMPT_ROWS):
                n = min(PROMPT_ROWS, count - start)
                # Row j predicts token chunk.start + j + 1.
                ids = seq.token_ids[chunk.start + start + 1:chunk.start + start + 1 + n]
                targets = torch.tensor(ids, device=logits.device)[:, None]  # (n, 1)
                logp = log_probs(logits[first + start:first + start + n], self.vocab_size)  # (n, V)
                chosen = logp.gather(1, targets)  # (n, 1)
                tokens = [Token(t, lp) for t, lp in zip(ids, chosen[:, 0].tolist())]
                _describe(tokens, [seq.params.prompt_logprobs] * n, logp, (logp > chosen).sum(-1) + 1)
                seq.prompt_logprobs += tokens
            first += count


SERIAL_SAMPLING_LOGITS = 1 << 16  # CPU sampling over at most this many logits (B x V) runs on one thread
PROMPT_ROWS = SCORED_CHUNK_ROWS  # prompt positions whose float32 log-probabilities are materialised at once


def _describe(tokens: list[Token], wanted: list[int | None], logp: Tensor, ranks: Tensor) -> None:
    """Set each token's rank and its `wanted` most likely alternatives (-1: the whole vocabulary,
    in id order; None: nothing) from its row of log-probabilities (B, V)."""
    k = max((w or 0 for w in wanted if w != -1), default=0)
    values, ids = logp.topk(min(k, logp.shape[1]), dim=-1) if k else (None, None)  # (B, k), most likely first
    for i, (token, n, rank) in enumerate(zip(tokens, wanted, ranks.tolist())):
        if n is None:
            continue
        token.rank = rank
        if n == -1:
            token.top_ids, token.top_logprobs = range(logp.shape[1]), logp[i].tolist()
        elif n:
            token.top_ids, token.top_logprobs = ids[i, :n].tolist(), values[i, :n].tolist()


def _prompt_rows(chunk: ScheduledChunk) -> int:
    """Rows of this chunk that predict prompt tokens, when the request asked for prompt log-probabilities."""
    seq = chunk.seq
    if not seq.scores_prompt or chunk.start >= seq.num_prompt_tokens:
        return 0
    return max(0, min(chunk.start + chunk.num_tokens, seq.num_prompt_tokens - 1) - chunk.start)
