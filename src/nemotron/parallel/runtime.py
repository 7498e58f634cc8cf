"""The engine across ranks: rank 0 schedules, serves and samples; every rank runs each step's forward.

Rank 0's model runner turns a step into a `StepPlan` (token ids, positions, block tables: plain
numbers) and broadcasts it; the other ranks wait in `serve_steps`, execute the same plan on their
shard (their KV pool holds their heads of their stage's layers) and join the forward's collectives;
the logits of the sampled rows come back to rank 0 from the last pipeline stage. Rank 0 stops the
others by broadcasting None.

Plans travel on a gloo group of their own whose timeout is unbounded (a server may sit idle for
hours); the forward's collectives use the default group's `timeout_s`, so a rank that dies or hangs
in a step fails that step on the others within it. The failure is final: the channel refuses every
later step with `RankFailure` (the server answers 503 and exits; see nemotron.parallel.launch).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from nemotron.errors import ConfigError, EngineDeadError
from nemotron.parallel.layout import ParallelLayout
from nemotron.parallel.pipeline import StageTimes, result_to_rank0

log = logging.getLogger(__name__)

FOREVER = timedelta(days=365)


@dataclass(slots=True, frozen=True)
class ParallelConfig:
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    timeout_s: float = 300.0  # a collective waiting longer fails: a dead or stuck rank ends the run
    micro_batches: int | None = None  # pipeline: micro-batches per step (None: one per stage)

    def __post_init__(self) -> None:
        for name in ("tensor_parallel_size", "pipeline_parallel_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not self.timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.micro_batches is not None and self.micro_batches < 1:
            raise ConfigError(f"micro_batches must be >= 1, got {self.micro_batches}")

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def steps_micro_batches(self) -> int:
        return self.micro_batches or self.pipeline_parallel_size


class RankFailure(EngineDeadError):
    """A rank died, hung past the collective timeout, or failed in a step; the engine cannot go on."""


class StepChannel:
    """How one step's plan and results move between rank 0 and the others (one per process)."""

    def __init__(self, layout: ParallelLayout, config: ParallelConfig, device: torch.device) -> None:
        self.layout, self.config, self.device = layout, config, device
        self.plan_group = dist.new_group(backend="gloo", timeout=FOREVER)  # collective: every rank
        self.failure: RankFailure | None = None
        self.serving = False  # set once every rank built its engine side
        self.step_started: float | None = None  # monotonic time of the step in flight (rank 0)
        self.stage_times = StageTimes()  # pipeline stages: busy vs wall time (the bubble)
        self._lock = threading.Lock()
        self._step_lock = threading.Lock()

    def broadcast(self, plan) -> None:
        """Rank 0: hand the next step's plan (None: stop) to every other rank."""
        self.check()
        with self._guard("sending a step to the other ranks"):
            dist.broadcast_object_list([plan], src=0, group=self.plan_group)

    def receive(self):
        """Other ranks: the next plan, or None when rank 0 stops."""
        box = [None]
        with self._guard("waiting for rank 0"):
            dist.broadcast_object_list(box, src=0, group=self.plan_group)
        return box[0]

    def to_driver(self, result: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor | None:
        """A last-stage result (logits, reward scores) -> rank 0; None on the other ranks."""
        return result_to_rank0(result, shape, dtype, self.layout, self.device)

    def ready(self, value: int = 0) -> int:
        """Every rank has built its side of the engine; returns the smallest of the ranks' values (the
        KV pool: every rank's must hold the block ids rank 0 hands out). After this, the other ranks
        wait for plans."""
        with self._guard("waiting for every rank to load its part of the model"):
            tensor = torch.tensor([value], dtype=torch.long)
            dist.all_reduce(tensor, op=dist.ReduceOp.MIN, group=self.plan_group)
        self.serving = True
        return int(tensor.item())

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def fail(self, message: str) -> RankFailure:
        """Record the first failure (later steps are refused with it) and return it."""
        with self._lock:
            if self.failure is None:
                self.failure = RankFailure(message)
                log.error("%s", message)
        return self.failure

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """A collective's error (a peer gone, a timeout) as this run's RankFailure."""
        try:
            yield
        except RankFailure:
            raise
        except RuntimeError as err:
            raise self.fail(f"rank {self.layout.rank}: {doing} failed: {_first_line(err)}") from err

    def wait_idle(self, timeout: float) -> bool:
        """Whether no step is in flight, waiting up to `timeout` s for one to end (rank 0). While the
        caller holds the answer True, no step can start: call `release_idle` after."""
        return self._step_lock.acquire(timeout=timeout)

    def release_idle(self) -> None:
        self._step_lock.release()

    @contextmanager
    def step(self) -> Iterator[None]:
        """Rank 0, around a whole step: the watchdog reads how long it has run, and an error anywhere
        in it is final (the ranks are out of step after it), so it becomes RankFailure."""
        with self._step_lock:  # steps never overlap, whichever thread runs them
            self.check()
            self.step_started = time.monotonic()
            try:
                yield
            except RankFailure:
                raise
            except RuntimeError as err:
                raise self.fail(f"a step across {self.layout.world_size} ranks failed (a rank died, stopped "
                                f"answering or raised): {_first_line(err)}") from err
            finally:
                self.step_started = None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def serve_steps(runner) -> None:
    """A rank other than 0: execute rank 0's plans until it says stop. `runner`: the engine's
    ModelRunner (StepPlan: an engine step), or the reward scorer's RewardRunner (RewardBatch)."""
    channel: StepChannel = runner.channel
    while (plan := channel.receive()) is not None:
        try:
            runner.execute(plan)
        except RuntimeError as err:
            raise channel.fail(f"rank {channel.layout.rank}: a step failed: {_first_line(err)}") from err


# ---- this process's rank ----------------------------------------------------------------------
_CURRENT: StepChannel | None = None


def set_current(channel: StepChannel | None) -> None:
    """Make `channel` the one this process's engine uses (one rank per process, like torch.distributed)."""
    global _CURRENT
    _CURRENT = channel


def channel_for(config: ParallelConfig) -> StepChannel | None:
    """The channel of this process's rank, for an engine built with `config`; None on one device."""
    if config.world_size == 1:
        return None
    if _CURRENT is None:
        raise ConfigError(f"tensor parallel {config.tensor_parallel_size} x pipeline parallel "
                          f"{config.pipeline_parallel_size} needs its ranks started first "
                          "(nemotron.parallel.launch: LLM(..., tensor_parallel_size=N), `nemotron serve --tp N` or torchrun)")
    layout = _CURRENT.layout
    if (layout.tp, layout.pp) != (config.tensor_parallel_size, config.pipeline_parallel_size):
        raise ConfigError(f"the ranks were started as tp {layout.tp} x pp {layout.pp}, the engine asks for "
                          f"tp {config.tensor_parallel_size} x pp {config.pipeline_parallel_size}")
    return _CURRENT
