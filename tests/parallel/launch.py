"""Run a function on N gloo ranks, with a hard timeout (a hang fails, never blocks CI).

Ranks fork from a fork server that imported torch once (fast to start, and free of the threads the
test process may have started)."""
from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist


def _entry(fn, rank: int, world: int, workdir: Path, args: tuple) -> None:
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"file://{workdir / 'store'}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=60))
        result = fn(rank, world, *args)
        torch.save(result, workdir / f"result{rank}.pt")
        dist.destroy_process_group()
    except BaseException:
        (workdir / f"error{rank}.txt").write_text(traceback.format_exc())
        os._exit(1)
    os._exit(0)


def run_ranks(fn, world: int, workdir: Path, *args, timeout: float = 90.0) -> list:
    """fn(rank, world, *args) on `world` ranks -> the ranks' return values (torch.save-able)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("forkserver")
    # meta-device init imports torch._dynamo: once in the server, not in every rank
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "nemotron.parallel", "nemotron.engine.llm",
                                "nemotron.checkpoint.megatron_slices", "nemotron.quant.checkpoint", "tests.conftest",
                                "tests.checkpoint.test_nemo", "tests.parallel.launch"])
    procs = [ctx.Process(target=_entry, args=(fn, rank, world, workdir, args), daemon=True) for rank in range(world)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    errors = [(workdir / f"error{r}.txt").read_text() for r in range(world) if (workdir / f"error{r}.txt").exists()]
    if errors:
        raise AssertionError("a rank failed:\n" + errors[0])
    codes = [p.exitcode for p in procs]
    if any(code != 0 for code in codes):
        raise AssertionError(f"ranks did not finish within {timeout}s (exit codes {codes})")
    return [torch.load(workdir / f"result{r}.pt", weights_only=False) for r in range(world)]
