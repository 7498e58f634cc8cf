"""Triton kernels compiled to sm_90 binaries on machines without a GPU: what Triton's CPU interpreter
cannot check (bfloat16, the compiler's own limits). The build runs in a fresh process, because the
interpreter the CPU tests use patches triton.language for the rest of theirs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

try:
    import triton

    PTXAS: Path | None = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
except ImportError:
    PTXAS = None

needs_ptxas = pytest.mark.skipif(torch.cuda.is_available() or PTXAS is None or not PTXAS.is_file(),
                                 reason="GPUs run the kernels themselves; the build needs Triton's ptxas")


def build_for_hopper(script: str) -> None:
    """Run `script` (which calls triton.compile for GPUTarget("cuda", 90, 32)) and expect success."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", script], env={**env, "TRITON_DEFAULT_FP_FUSION": "1"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
