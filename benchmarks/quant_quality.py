"""Quality of int8 / fp8 / int4 models against the unquantized fp32 model: greedy agreement over 64-token
continuations of a fixed prompt set, and logits error on the reference's own continuations.

Candidates compute in --dtype (default bfloat16: on a CPU, the engine then runs them through the
CPU kernels of nemotron.quant.cpu, as users get them); scheme `none` is the unquantized model in
that dtype. The issue's bar: bf16 and int8 keep >= 95% of fp32's greedy tokens (to first divergence).

Agreement only means something next to how decisive the reference is, so each block starts with the
reference's profile (median top-1 probability, share of steps where it is below 0.5). The default
model is the planted-map test model (nemotron.quant.quality.planted_map_model) at several strengths:
weaker maps give less decisive models and lower agreement for every scheme.

    python benchmarks/quant_quality.py                                   # planted-map sweep, CPU, bf16
    python benchmarks/quant_quality.py --dtype float32                   # quantized weights, fp32 activations
    python benchmarks/quant_quality.py --model src/nemotron/assets/demo  # a trained checkpoint
    python benchmarks/quant_quality.py --batch-1 --schemes none int8     # batch-1 decoding (CPU one-row int8)
    python benchmarks/quant_quality.py --schemes int8 int8:keep-head     # the LM head int8 (default) or kept
"""
from __future__ import annotations

import argparse
import random
import time

import torch

from nemotron.checkpoint.load import load_model
from nemotron.quant import quantize
from nemotron.quant.quality import QualityProbe, planted_map_model

# Fixed prompts for checkpoints with a tokenizer.
TEXT_PROMPTS = [
    "Once upon a time, there was a little girl named", "The sun was setting over the river when",
    "Tom and his dog went to the park. They", "In the morning, the old man opened the door and",
    "The capital of France is", "Water boils at a temperature of", "A cat is an animal that",
    "The best way to learn to read is", "She looked at the sky and said,", "My favourite book is about",
    "The children were happy because", "Every night before bed, the boy", "The bird sang a song about",
    "When it started to rain, everyone", "The big red ball rolled down the hill and", "Lily wanted to find",
]


def in_dtype(loaded, scheme: str, dtype: str):
    """Quantized from the fp32 weights (unless `none`), then the remaining parameters cast to `dtype`.
    `scheme:keep-head` leaves the LM head unquantized (`nemotron quantize --keep-head`)."""
    scheme, _, option = scheme.partition(":")
    if option not in ("", "keep-head"):
        raise SystemExit(f"unknown scheme option {option!r}: the one option is keep-head (e.g. int8:keep-head)")
    if scheme != "none":
        quantize(loaded.model, scheme, head=option != "keep-head")
    for param in loaded.model.parameters():
        param.data = param.data.to(getattr(torch, dtype))
    return loaded


def report_block(title: str, probe: QualityProbe, make_candidate, schemes: list[str], dtype: str,
                 batch_size: int | None = None) -> None:
    print(f"\n{title}, candidates in {dtype}" + (f", decoding {batch_size} at a time" if batch_size else ""))
    for scheme in schemes:
        try:
            candidate = make_candidate(scheme)
        except ValueError as err:  # e.g. int4 needs widths divisible by 128
            print(f"  {scheme:14} skipped: {err}")
            continue
        start = time.perf_counter()
        report = probe.compare(candidate, batch_size)
        lines = report.summary().splitlines()
        if scheme == schemes[0]:
            print(f"  {'':9}{lines[0]}")
        print(f"  {scheme:14} {lines[1]}  ({time.perf_counter() - start:.1f}s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the planted-map test model)")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.05, 0.06, 0.07, 0.08])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--prompts", type=int, default=64, help="random prompts for models without a tokenizer")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--schemes", nargs="+", default=["none", "int8", "fp8", "int4"],
                        help="none: unquantized, in --dtype")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"],
                        help="candidates' compute dtype; the reference is always float32")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-1", action="store_true",
                        help="candidates decode one sequence at a time (the batch-1 kernels: CPU int8 one-row path)")
    args = parser.parse_args()
    batch_size = 1 if args.batch_1 else None
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.model is None:
        rng = random.Random(0)
        prompts = [[rng.randrange(4, 512) for _ in range(16)] for _ in range(args.prompts)]
        for strength in args.strengths:
            for seed in args.seeds:
                def candidate(scheme, strength=strength, seed=seed):
                    return in_dtype(planted_map_model(strength, seed), scheme, args.dtype)
                probe = QualityProbe(planted_map_model(strength, seed), prompts, args.new_tokens)
                report_block(f"planted-map model, strength {strength}, seed {seed} ({len(prompts)} prompts x "
                             f"{args.new_tokens} tokens)", probe, candidate, args.schemes, args.dtype, batch_size)
        return

    reference = load_model(args.model, dtype="float32")
    if reference.tokenizer is not None:
        prompts = [reference.tokenizer.encode(text) for text in TEXT_PROMPTS]
    else:
        rng = random.Random(0)
        prompts = [[rng.randrange(4, reference.config.vocab_size) for _ in range(16)] for _ in range(args.prompts)]

    def candidate(scheme):
        return in_dtype(load_model(args.model, dtype="float32"), scheme, args.dtype)

    probe = QualityProbe(reference, prompts, args.new_tokens)
    report_block(f"{args.model} ({len(prompts)} prompts x {args.new_tokens} tokens)", probe, candidate, args.schemes,
                 args.dtype, batch_size)


if __name__ == "__main__":
    main()
