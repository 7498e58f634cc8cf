"""The Slurm template starts as many ranks as its nemotron command's layout needs, with options the CLI takes."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from nemotron.cli.main import build_parser

TEMPLATE = Path(__file__).parents[2] / "scripts" / "slurm" / "serve_tp8_pp2.sbatch"


def test_the_template_layout_matches_its_nodes_and_parses():
    text = TEMPLATE.read_text()
    nodes = int(re.search(r"#SBATCH --nodes=(\d+)", text)[1])
    gpus = int(re.search(r"#SBATCH --gpus-per-node=(\d+)", text)[1])
    per_node = int(re.search(r"--nproc-per-node=(\d+)", text)[1])
    command = re.search(r"-m nemotron (serve [^\"]+)\"", text)[1].replace("\\\n", " ")
    args = build_parser().parse_args(shlex.split(command.replace("$PORT", "8000")))
    assert args.tp * args.pp == nodes * per_node == nodes * gpus == 16
    assert (args.tp, args.pp, args.device) == (8, 2, "cuda") and per_node == args.tp  # TP inside a node
