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
IDLE_WAIT_S = 5.0  # for a step in flight to fail out once the other ranks are gone


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
    _closed: bool = False

    def watch(self, on_failure: Callable[[RankFailure], None]) -> None:
        """Call on_failure once (from a thread) when a rank exits, a step fails, or a step has waited
        longer than the collective timeout."""
        def loop() -> None:
            while not self._closed:
                failure = self._check()
                if failure is not None:
                    on_failure(failure)
                    return
                time.sleep(WATCH_INTERVAL_S)

        threading.Thread(target=loop, name="nemotron-ranks", daemon=True).start()

    def _check(self) -> RankFailure | None:
        channel = self.channel
        if channel.failure is not None:
            return channel.failure
        for rank, process in enumerate(self.processes, start=1):
            if process.exitcode is not None:
                return channel.fail(f"rank {rank} of {channel.layout.world_size} exited (code {process.exitcode}); "
                                    "the model cannot run without it")
        started, limit = channel.step_started, channel.config.timeout_s
        if started is not None and time.monotonic() - started > limit + 1:
            return channel.fail(f"a step has waited more than {limit:g} s for the other ranks; one is stuck")
        return None

    def close(self) -> None:
        """Stop the other ranks (a clean stop when the run is healthy) and leave the process group."""
        if self._closed:
            return
        self._closed = True
        # Before the engines are built (loading failed on rank 0) the others wait elsewhere: only a kill stops them.
        healthy = (self.channel.failure is None and self.channel.serving
                   and all(p.exitcode is None for p in self.processes))
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
        if not healthy:
            log.warning("stopped the other ranks without a clean shutdown")
        if not (healthy or dist.get_backend() == "gloo"):  # NCCL may block tearing down a broken communicator
            return
        # The engine thread may still be inside a collective with a rank just killed: tearing the group
        # down under it aborts the process, so wait for the step to fail out (the peer's sockets are
        # closed now) and leave the group to the process's exit if it does not.
        if not self.channel.wait_idle(timeout=IDLE_WAIT_S):
            log.warning("a step is still waiting on the other ranks; leaving the process group as it is")
            return
        try:
            dist.destroy_process_group()
        finally:
            self.channel.release_idle()


# ---- starting -----------------------------------------------------------------------------------
def start_local(options: RankOptions) -> tuple[Ranks, LoadedModel]:
    """This process becomes rank 0 of options.parallel.world_size ranks on this machine; it spawns the
    others, and every rank loads its shard. Returns rank 0's handle and its part of the model."""
    check_fits(options)
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
    check_fits(options)
    _init(options, 0, world, local_rank, "env://")
    ranks = Ranks(_channel(options, local_rank))
    return ranks, _load(options, ranks.channel)


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def worker_main(options: RankOptions, rank: int, world: int, local_rank: int, init_method: str) -> None:
    """A rank other than 0, from start to stop: join, load the shard, execute rank 0's steps."""
    from nemotron.engine.llm_engine import make_runner
    from nemotron.engine.reward_scorer import RewardRunner
    from nemotron.model.nemotron import NemotronForCausalLM

    try:
        _init(options, rank, world, local_rank, init_method)
        channel = _channel(options, local_rank)
        loaded = _load(options, channel)
        if isinstance(loaded.model, NemotronForCausalLM):
            eos_id = loaded.tokenizer.eos_id if loaded.tokenizer is not None else 0
            runner = make_runner(loaded.model, options.engine, eos_id, channel)
        else:  # a reward model: the scorer's batches
            runner = RewardRunner(loaded.model, channel)
            channel.ready()
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
    layout = ParallelLayout.from_world(config.tensor_parallel_size, config.pipeline_parallel_size,
                                       timedelta(seconds=config.timeout_s))
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


class Launch:
    """A command's ranks, as the CLI drives them: `start()` on rank 0 (spawned here, or joined under
    torchrun) gives its part of the model; a torchrun rank other than 0 calls `serve_steps()`."""

    def __init__(self, options: RankOptions) -> None:
        self.options = options
        self.ranks: Ranks | None = None

    @property
    def is_worker(self) -> bool:
        return under_torchrun() and int(os.environ["RANK"]) != 0

    def serve_steps(self) -> None:
        from_torchrun(self.options)

    def start(self) -> LoadedModel:
        self.ranks, loaded = from_torchrun(self.options) if under_torchrun() else start_local(self.options)
        return loaded

    def close(self) -> None:
        if self.ranks is not None:
            self.ranks.close()

    def describe(self) -> str:
        config = self.options.parallel
        where = "GPUs" if self.options.device == "cuda" else "CPU processes"
        how = "torchrun" if under_torchrun() else "spawned here"
        return (f"tensor parallel {config.tensor_parallel_size} x pipeline parallel {config.pipeline_parallel_size} "
                f"over {config.world_size} {where} ({how})")


# ---- will it fit --------------------------------------------------------------------------------
def check_fits(options: RankOptions) -> None:
    """Refuse a layout the model cannot be cut into, or (GPUs) whose busiest GPU would need more memory
    than this machine's GPUs have, quoting the memory planner's per-GPU figures."""
    from nemotron.checkpoint import hf
    from nemotron.checkpoint.load import SourceKind, load_config, resolve
    from nemotron.memory import Precision, WeightBytes, plan

    if resolve(options.spec).kind is SourceKind.GGUF:
        raise ConfigError("GGUF files load on one device; for --tp / --pp convert to a Hugging Face directory first "
                          "(nemotron convert MODEL.gguf OUT)")
    config = load_config(options.spec, trust_pickle=options.trust_pickle)
    tp, pp = options.parallel.tensor_parallel_size, options.parallel.pipeline_parallel_size
    ParallelLayout(tp, pp).check(config)
    if options.device != "cuda" or not torch.cuda.is_available():
        return
    source = resolve(options.spec)
    dtype = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[options.dtype or config.torch_dtype]
    stored = source.kind is SourceKind.HF_DIR and options.dtype is None and all(
        f.suffix == ".safetensors" for f in hf.weight_files(source.path))
    weights = (WeightBytes.from_checkpoint(source.path, config) if stored
               else WeightBytes.from_config(config, Precision(dtype, config.quantization, config.quantized_lm_head)))
    need = plan(config, weights, tp=tp, pp=pp).per_gpu
    count = min(torch.cuda.device_count(), tp * pp)
    have = min(torch.cuda.get_device_properties(i).total_memory for i in range(count))
    if need.total > have:
        gb = lambda n: f"{n / 1e9:.1f} GB"  # noqa: E731
        raise ConfigError(
            f"tp {tp} x pp {pp} does not fit: the busiest GPU needs {gb(need.total)} (weights {gb(need.weights)}, "
            f"KV cache of one {config.max_position_embeddings}-token sequence {gb(need.kv_cache)}, activations "
            f"{gb(need.activations)}, overhead {gb(need.overhead)}) and these GPUs have {gb(have)}; use more "
            f"GPUs (larger --tp / --pp) or a quantized checkpoint (see `nemotron memory`)")
