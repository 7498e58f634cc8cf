"""mimalloc as the process's malloc on Linux, for the CLI and the benchmarks that measure it.

A batch-1 CPU decode step makes hundreds of small allocations: every PyTorch op's output
(`posix_memalign`), and oneDNN's per-call descriptors and execution contexts. Under glibc's
allocator they took ~5% of the main thread's time in a bf16 decode of the 140M shape (`perf`:
`_int_malloc`, `_int_free`, `malloc_consolidate`, `_mid_memalign`), about 0.35 ms a step, half of it
gone with mimalloc (README, CPU path). PyTorch's CPU allocator and oneDNN's allocations cannot be
redirected from Python, so the library is preloaded: `nemotron` re-executes itself once with
`LD_PRELOAD` naming it, as vLLM's CPU guide and PyTorch's own `torch.backends.xeon.run_cpu` launcher
do with tcmalloc / jemalloc. mimalloc comes from the `cmeel-mimalloc` wheel (a dependency on Linux).

`NEMOTRON_ALLOCATOR=system` keeps glibc's. Library users preload it themselves:
`LD_PRELOAD=$(python -m nemotron.allocator) python app.py`.
"""
from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Mapping
from pathlib import Path

SWITCH = "NEMOTRON_ALLOCATOR"  # "system": glibc's malloc, no re-execution
DISTRIBUTION = "cmeel-mimalloc"


def library_path() -> Path | None:
    """The installed libmimalloc.so (the wheel's versioned file), or None where there is none."""
    try:
        files = importlib.metadata.distribution(DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [f for f in files if f.name.startswith("libmimalloc.so")]
    for file in sorted(found, key=lambda f: len(f.name)):  # libmimalloc.so before .so.3, .so.3.4
        path = Path(file.locate()).resolve()
        if path.is_file():
            return path
    return None


def switched_off(env: Mapping[str, str]) -> bool:
    return env.get(SWITCH, "").lower() == "system"


def preload_env(env: Mapping[str, str], platform: str = sys.platform) -> dict[str, str] | None:
    """`env` with mimalloc added to LD_PRELOAD, or None when nothing is to change: not Linux, switched
    off, not installed, or preloaded already (so a re-executed process does not re-execute again)."""
    preloaded = env.get("LD_PRELOAD", "")
    if not platform.startswith("linux") or switched_off(env) or "mimalloc" in preloaded:
        return None
    library = library_path()  # (reads the wheel's file list: only when it may be needed)
    if library is None:
        return None
    # Freed memory is purged by resetting its pages (MADV_DONTNEED: they leave the RSS all the same), not by
    # decommitting the range: the KV pool (2 GiB on a CPU), zeroed right after loading freed the checkpoint's
    # buffers, re-committed them chunk by chunk, and the engine took 1.8-3.4 s to build against glibc's 0.6-0.8
    # (140M shape; 0.6-1.0 s so). Not `arena_reserve=0`: it sent blocks to the OS at every step and a batch-1
    # bf16 decode fell 12% below glibc's. A setting of yours wins.
    return {"MIMALLOC_PURGE_DECOMMITS": "0", **env, "LD_PRELOAD": f"{library} {preloaded}".strip()}


def reexec_with_mimalloc() -> None:
    """Replace this process by itself under mimalloc (same interpreter, options and arguments), when
    `preload_env` says to. Call before anything heavy is imported: the first run costs only Python's start."""
    env = preload_env(os.environ)
    if env is None or not sys.orig_argv or not sys.executable:
        return
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:  # the allocator is a speed-up: without it the command runs as it is
        return


def in_use() -> str:
    """The allocator this process runs on, as `nemotron info` shows it."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "the platform's"
    if "libmimalloc" in maps:
        return "mimalloc"
    if not sys.platform.startswith("linux"):
        return "the platform's"
    why = f"{SWITCH}=system" if switched_off(os.environ) else \
        f"{DISTRIBUTION} not installed" if library_path() is None else "not preloaded"
    return f"glibc ({why})"


if __name__ == "__main__":  # LD_PRELOAD=$(python -m nemotron.allocator) ...
    path = library_path()
    if path is None:
        sys.exit(f"{DISTRIBUTION} is not installed")
    print(path)
