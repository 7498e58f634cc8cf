"""Batched scoring with a reward model, behind an asyncio server.

Concurrent `score` calls are collected for a short window, packed into right-padded batches (the
model reads each row's last real token; causal attention keeps padding after it out of the way) and
run in one forward pass on a worker thread, so the event loop never waits for the model.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import torch

from nemotron.errors import EngineDeadError, NemotronError
from nemotron.model.nemotron import NemotronForRewardModel

log = logging.getLogger(__name__)


class ScoringError(NemotronError, ValueError):
    """A conversation the reward model cannot score (empty, longer than the context)."""


class ScorerClosedError(NemotronError, RuntimeError):
    """The scorer was shut down before the request was scored."""


@dataclass(slots=True, frozen=True)
class ScorerConfig:
    max_batch_size: int = 32
    max_batch_tokens: int = 16384  # padded tokens (rows x longest row) in one forward
    window_s: float = 0.005  # how long the first request of a batch waits for company

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_batch_tokens < 1:
            raise ValueError("max_batch_size and max_batch_tokens must be >= 1")
        if self.window_s < 0:
            raise ValueError(f"window_s must be >= 0, got {self.window_s}")


@dataclass(slots=True)
class RewardBatch:
    """One forward of the reward model as every rank runs it (rank 0 broadcasts it)."""

    input_ids: torch.Tensor  # (B, T) right-padded, on the host
    lengths: torch.Tensor  # (B,)


class RewardRunner:
    """The reward model's forward on this rank's part of it (all of it on one device). With a channel
    (nemotron.parallel.runtime) every rank runs each batch; the scores come back to rank 0."""

    def __init__(self, model: NemotronForRewardModel, channel=None) -> None:
        self.model, self.channel = model, channel
        self.device = model.model.layers[0].input_layernorm.weight.device  # every stage has layers

    @torch.inference_mode()
    def execute(self, batch: RewardBatch) -> torch.Tensor | None:
        """(B, A) float32 scores on rank 0, None on the other ranks."""
        ids, lengths = batch.input_ids.to(self.device), batch.lengths.to(self.device)
        if self.channel is None:
            return self.model(ids, lengths=lengths)
        from nemotron.parallel.pipeline import MicroBatch, pipeline_forward

        positions = torch.arange(ids.shape[1], device=self.device).expand_as(ids)
        hidden = pipeline_forward(self.model, self.channel.layout, [MicroBatch(positions, ids)])[0]  # (B, T, H)
        scores = None
        if hidden is not None:  # the last stage
            scores = self.model.rm_head(hidden[torch.arange(len(ids), device=self.device), lengths - 1]).float()
        return self.channel.to_driver(scores, (len(ids), self.model.config.num_reward_attributes), torch.float32)


@dataclass(slots=True)
class _Job:
    ids: list[int]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class RewardScorer:
    def __init__(self, model: NemotronForRewardModel, config: ScorerConfig = ScorerConfig(), pad_id: int = 0,
                 channel=None) -> None:
        self.model = model
        self.config = config
        self.pad_id = pad_id
        self.context_len = model.config.max_position_embeddings
        self.runner = RewardRunner(model, channel)
        if channel is not None:
            channel.ready()
        self.num_batches = 0  # forwards run, for metrics and tests
        self._inbox: list[_Job] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="nemotron-reward", daemon=True)
        self._thread.start()

    def check(self, ids: list[int]) -> None:
        """Raise ScoringError for input the model can never score; safe from any thread."""
        if not ids:
            raise ScoringError("the conversation is empty; give at least one token")
        if len(ids) > self.context_len:
            raise ScoringError(f"the conversation has {len(ids)} tokens; the model's context is {self.context_len}")
        if min(ids) < 0 or max(ids) >= self.model.config.vocab_size:
            raise ScoringError(f"token ids must be in [0, {self.model.config.vocab_size})")

    async def score(self, ids: list[int]) -> list[float]:
        """The attribute scores of one tokenized conversation (num_reward_attributes floats)."""
        if self._closed:
            raise ScorerClosedError("the reward scorer is shut down")
        self.check(ids)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._inbox.append(_Job(list(ids), loop, future))
        self._wake.set()
        return await future  # cancelling it just drops the result when the batch finishes

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=10)

    # ---- the worker thread -------------------------------------------------------------------
    def _run(self) -> None:
        torch.get_num_threads()  # fixes this thread's count now, not inside another thread's OneThread
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            time.sleep(self.config.window_s)
            with self._lock:
                jobs, self._inbox = self._inbox, []
            for batch in self._batches(jobs):
                self._score_batch(batch)
        with self._lock:
            jobs, self._inbox = self._inbox, []
        for job in jobs:
            self._deliver(job, ScorerClosedError("the reward scorer was shut down"))

    def _batches(self, jobs: list[_Job]) -> list[list[_Job]]:
        """Split into batches within both limits; sorting by length keeps padding small."""
        batches: list[list[_Job]] = []
        current: list[_Job] = []
        for job in sorted(jobs, key=lambda j: len(j.ids)):
            longest = len(job.ids)  # sorted: the newcomer is the longest
            if current and (len(current) == self.config.max_batch_size
                            or (len(current) + 1) * longest > self.config.max_batch_tokens):
                batches.append(current)
                current = []
            current.append(job)
        return batches + ([current] if current else [])

    @torch.inference_mode()
    def _score_batch(self, batch: list[_Job]) -> None:
        batch = [job for job in batch if not job.future.cancelled()]
        if not batch:
            return
        lengths = [len(job.ids) for job in batch]
        input_ids = torch.full((len(batch), max(lengths)), self.pad_id, dtype=torch.long)
        for row, job in enumerate(batch):
            input_ids[row, :len(job.ids)] = torch.tensor(job.ids)
        batch_plan = RewardBatch(input_ids, torch.tensor(lengths))
        channel = self.runner.channel
        try:
            if channel is None:
                scores = self.runner.execute(batch_plan)
            else:
                with channel.step():
                    channel.broadcast(batch_plan)
                    scores = self.runner.execute(batch_plan)
        except EngineDeadError as err:  # a rank of a parallel run is gone: final, 503
            for job in batch:
                self._deliver(job, err)
            return
        except Exception as err:  # a bug or out of memory: fail these requests, keep serving
            log.exception("reward model forward failed")
            for job in batch:
                self._deliver(job, RuntimeError(f"the reward model failed on this batch: {err!r}"))
            return
        self.num_batches += 1
        for job, row in zip(batch, scores.cpu().tolist()):  # (B, A) float32
            self._deliver(job, row)

    @staticmethod
    def _deliver(job: _Job, result: list[float] | BaseException) -> None:
        def settle() -> None:
            if job.future.done():
                return
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # that event loop is closed
            pass
