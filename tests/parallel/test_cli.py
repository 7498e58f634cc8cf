"""`nemotron generate --tp/--pp`, with ranks spawned by the command or started by torchrun, prints
what one process prints."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.server.test_serve_command import free_port

ARGS = ["generate", "The cat sees a bird", "-n", "12", "--greedy", "--device", "cpu", "--dtype", "float32"]


def _generate(*prefix: str, options: list[str], model) -> str:
    result = subprocess.run([sys.executable, *prefix, "-m", "nemotron", *ARGS[:1], str(model), *ARGS[1:], *options],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_generate_over_spawned_ranks_and_under_torchrun_prints_the_one_process_text(tiny_model_dir):
    one = _generate(options=[], model=tiny_model_dir)
    assert one.strip()
    assert _generate(options=["--pp", "2"], model=tiny_model_dir) == one
    torchrun = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    assert _generate(*torchrun, options=["--tp", "2"], model=tiny_model_dir) == one


def test_a_torchrun_world_that_does_not_match_the_layout_is_refused(tiny_model_dir):
    torchrun = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    result = subprocess.run([sys.executable, *torchrun, "-m", "nemotron", *ARGS[:1], str(tiny_model_dir), *ARGS[1:],
                             "--tp", "4"], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode != 0
    assert "torchrun started 2 processes; tp 4 x pp 1 needs 4" in result.stderr
