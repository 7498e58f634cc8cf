"""`nemotron quantize SRC DST --scheme int8|int4|fp8`: a quantized checkpoint that loads directly."""
from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Quantize the linear layers of the decoder layers (q/k/v/o, up, down) of a Hugging Face directory,
.nemo or GGUF checkpoint, and the LM head to int8 whatever the scheme (one scale per vocabulary row;
--keep-head leaves it as it is); embeddings, norms and a reward head keep their dtype. A Hugging
Face source streams through tensor by tensor, so it never has to fit in memory. DST loads with every
command that takes a model.

  int8  weight-only, one scale per output channel            (~2x smaller than bf16)
  int4  weight-only, one scale per 128 input channels, packed (~3.9x smaller)
  fp8   e4m3 weights, one scale per output channel; activations quantized per token at run time
        (GPUs of compute capability 8.9+: Ada, Hopper; CPUs run a slow reference)"""


def register(commands) -> None:
    parser = commands.add_parser("quantize", help="write an int8 / int4 / fp8 copy of a checkpoint",
                                 description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--scheme", required=True, choices=["int8", "int4", "fp8"])
    parser.add_argument("--keep-head", action="store_true",
                        help="leave the LM head unquantized (by default it is int8 under every scheme)")
    parser.add_argument("--shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB, 500MB")
    parser.add_argument("--trust-pickle", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from nemotron.cli.convert import parse_size
    from nemotron.quant.checkpoint import quantize_checkpoint

    def progress(layer: int, num_layers: int) -> None:
        print(f"\rquantizing layer {layer + 1}/{num_layers}", end="", file=sys.stderr, flush=True)

    out = quantize_checkpoint(args.src, args.dst, args.scheme, head=not args.keep_head, trust_pickle=args.trust_pickle,
                              max_shard_bytes=parse_size(args.shard_size), progress=progress)
    print(f"\nwrote {out}", file=sys.stderr)
