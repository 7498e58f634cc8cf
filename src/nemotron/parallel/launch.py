"""Starting the ranks of a tensor x pipeline parallel run, and stopping them.

Two ways in, one process per rank either way:
- on one machine, the process that serves (or runs `LLM`) becomes rank 0 and spawns ranks 1..N-1
  (`start_local`); they find each other over a TCP store on 127.0.0.1;
- across machines, `torchrun` starts every rank and sets RANK / WORLD_SIZE / LOCAL_RANK /
  MASTER_ADDR (`from_torchrun`, called at the CLI edge); rank 0 serves, the others run `worker_main`.
GPUs: NCCL, one device per rank (cuda:LOCAL_RANK); CPUs: gloo.

Rank 0 keeps a `Ranks` handle: `watch()` starts a thread that turns a rank that exits, a failed
step, or a step stuck past the collective timeout into one call of `on_failure`, and `close()`
tells the others to stop and waits for them.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nemotron.checkpoint.load import LoadedModel
from nemotron.engine.llm_engine import EngineConfig
from nemotron.errors import ConfigError, NemotronError
from nemotron.parallel.layout import ParallelLayout
from nemotron.parallel.runtime import ParallelConfig, RankFailure, StepChannel, serve_steps, set_current

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.2
JOIN_TIMEOUT_S = 30.0


@dataclass(slots=True, frozen=True)
class RankOptions:
    """How every rank loads its part of the model."""

    spec: str
    engine: EngineConfig  # the same on every rank: its KV pool is sized from it
    dtype: str | None = None
    device: str = "cpu"  # "cpu" or "cuda" (each rank takes cuda:LOCAL_RANK)
    trust_pickle: bool = False
    threads: int | None = None  # torch CPU threads per rank (default: the cores shared among the ranks)

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"a parallel run places ranks on 'cpu' or 'cuda' (one GPU per rank), not {self.device!r}")

    @property
    def parallel(self) -> ParallelConfig:
        return self.engine.parallel

    @property
    def backend(self) -> str:
        return "nccl" if self.device == "cuda" else "gloo"


@dataclass(slots=True)
class Ranks:
    """Rank 0's view of the run: its channel, the ranks it spawned (none under torchrun)."""

    channel: StepChannel
    processes: list = field(default_factory=list)  # mp.Process of ranks 1..N-1, when spawned here
    failure: RankFailure | None = None
    _closed: bool = False
    _watcher: threading.Thread | None = None

    def watch(self, on_failure: Callable[[RankFailure], None]) -> None:
        """Call on_failure once (from a thread) when a rank exits, a step fails, or a step has waited
        longer than the collective timeout."""
        def loop() -> None:
            while not self._closed:
                failure = self._check()
                if failure is not None:
                    self.failure = failure
                    on_failure(failure)
                    return
                time.sleep(WATCH_INTERVAL_S)

        self._watcher = threading.Thread(target=loop, name="nemotron-ranks", daemon=True)
        self._watcher.start()

    def _check(self) -> RankFailure | None:
        channel = self.channel
        if channel.failure is not None:
            return channel.failure
        for rank, process in enumerate(self.processes, start=1):
            if process.exitcode is not None:
                return channel.fail(f"rank {rank} of {channel.layout.world_size} exited (code {process.exitcode}); "
                                    "the model cannot run without it")
        started, limit = channel.step_started, channel.config.timeout_s
        if started is not None and time.monotonic() - started > limit + 5:
            return channel.fail(f"a step has waited more than {limit:g} s for the other ranks; one is stuck")
        return None

    def close(self) -> None:
        """Stop the other ranks (a clean stop when the run is healthy) and leave the process group."""
        if self._closed:
            return
        self._closed = True
        healthy = self.channel.failure is None and all(p.exitcode is None for p in self.processes)
        if healthy:
            try:
                self.channel.broadcast(None)
            except RankFailure:
                healthy = False
        deadline = time.monotonic() + (JOIN_TIMEOUT_S if healthy else 2.0)
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        set_current(None)
        if healthy:
            dist.destroy_process_group()


# ---- starting -----------------------------------------------------------------------------------
def start_local(options: RankOptions) -> tuple[Ranks, LoadedModel]:
    """This process becomes rank 0 of options.parallel.world_size ranks on this machine; it spawns the
    others, and every rank loads its shard. Returns rank 0's handle and its part of the model."""
    world = options.parallel.world_size
    if options.device == "cuda" and torch.cuda.device_count() < world:
        raise ConfigError(f"tp {options.parallel.tensor_parallel_size} x pp {options.parallel.pipeline_parallel_size} "
                          f"needs {world} GPUs on this machine (one per rank); it has {torch.cuda.device_count()}")
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    context = mp.get_context("spawn")
    processes = [context.Process(target=worker_main, args=(options, rank, world, rank, init_method),
                                 name=f"nemotron-rank{rank}", daemon=True) for rank in range(1, world)]
    for process in processes:
        process.start()
    try:
        _init(options, 0, world, 0, init_method)
        ranks = Ranks(_channel(options, 0), processes)
        return ranks, _load(options, ranks.channel)
    except BaseException:
        for process in processes:
            process.kill()
        _leave()
        raise


def from_torchrun(options: RankOptions) -> tuple[Ranks, LoadedModel] | None:
    """Under torchrun (RANK and WORLD_SIZE set): join the run. Rank 0 gets its handle and model back;
    any other rank serves steps here until rank 0 stops, then returns None."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world != options.parallel.world_size:
        raise ConfigError(f"torchrun started {world} processes; tp {options.parallel.tensor_parallel_size} x "
                          f"pp {options.parallel.pipeline_parallel_size} needs {options.parallel.world_size}")
    if rank != 0:
        worker_main(options, rank, world, local_rank, "env://")
        return None
    _init(options, 0, world, local_rank, "env://")
    ranks = Ranks(_channel(options, local_rank))
    return ranks, _load(options, ranks.channel)


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def worker_main(options: RankOptions, rank: int, world: int, local_rank: int, init_method: str) -> None:
    """A rank other than 0, from start to stop: join, load the shard, execute rank 0's steps."""
    from nemotron.engine.llm_engine import make_runner
    from nemotron.model.nemotron import fuse_qkv

    try:
        _init(options, rank, world, local_rank, init_method)
        channel = _channel(options, local_rank)
        loaded = _load(options, channel)
        eos_id = loaded.tokenizer.eos_id if loaded.tokenizer is not None else 0
        runner = make_runner(fuse_qkv(loaded.model), options.engine, eos_id, channel)
        serve_steps(runner)
    except (NemotronError, RuntimeError) as err:
        log.error("rank %d stops: %s", rank, err)
        raise SystemExit(1) from None
    _leave()


def _init(options: RankOptions, rank: int, world: int, local_rank: int, init_method: str) -> None:
    torch.set_num_threads(options.threads or max(1, (os.cpu_count() or 1) // world))
    if options.device == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(options.backend, init_method=init_method, rank=rank, world_size=world,
                            timeout=timedelta(seconds=options.parallel.timeout_s))


def _channel(options: RankOptions, local_rank: int) -> StepChannel:
    config = options.parallel
    layout = ParallelLayout.from_world(config.tensor_parallel_size, config.pipeline_parallel_size)
    device = torch.device(f"cuda:{local_rank}" if options.device == "cuda" else "cpu")
    channel = StepChannel(layout, config, device)
    set_current(channel)
    return channel


def _load(options: RankOptions, channel: StepChannel) -> LoadedModel:
    from nemotron.parallel.shard_load import load_sharded

    return load_sharded(options.spec, channel.layout, dtype=options.dtype, device=channel.device,
                        trust_pickle=options.trust_pickle)


def _leave() -> None:
    set_current(None)
    if dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
