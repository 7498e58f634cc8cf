"""Quality of int8 / fp8 / int4 models against the unquantized model: greedy agreement over 64-token
continuations of a fixed prompt set, and logits error on the reference's own continuations.

Agreement only means something next to how decisive the reference is, so each block starts with the
reference's profile (median top-1 probability, share of steps where it is below 0.5). The default
model is the planted-map test model (nemotron.quant.quality.planted_map_model) at several strengths:
weaker maps give less decisive models and lower agreement for every scheme.

    python benchmarks/quant_quality.py                                   # planted-map sweep, CPU
    python benchmarks/quant_quality.py --model src/nemotron/assets/demo  # a trained checkpoint
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


def report_block(title: str, probe: QualityProbe, make_candidate, schemes: list[str]) -> None:
    print(f"\n{title}")
    for scheme in schemes:
        try:
            candidate = make_candidate(scheme)
        except ValueError as err:  # e.g. int4 needs widths divisible by 128
            print(f"  {scheme:5} skipped: {err}")
            continue
        start = time.perf_counter()
        report = probe.compare(candidate)
        lines = report.summary().splitlines()
        if scheme == schemes[0]:
            print(f"  {lines[0]}")
        print(f"  {scheme:5} {lines[1]}  ({time.perf_counter() - start:.1f}s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the planted-map test model)")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.05, 0.06, 0.07, 0.08])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--prompts", type=int, default=64, help="random prompts for models without a tokenizer")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--schemes", nargs="+", default=["int8", "fp8", "int4"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.model is None:
        rng = random.Random(0)
        prompts = [[rng.randrange(4, 512) for _ in range(16)] for _ in range(args.prompts)]
        for strength in args.strengths:
            for seed in args.seeds:
                def candidate(scheme, strength=strength, seed=seed):
                    loaded = planted_map_model(strength, seed)
                    quantize(loaded.model, scheme)
                    return loaded
                probe = QualityProbe(planted_map_model(strength, seed), prompts, args.new_tokens)
                report_block(f"planted-map model, strength {strength}, seed {seed} ({len(prompts)} prompts x "
                             f"{args.new_tokens} tokens)", probe, candidate, args.schemes)
        return

    reference = load_model(args.model, dtype="float32")
    if reference.tokenizer is not None:
        prompts = [reference.tokenizer.encode(text) for text in TEXT_PROMPTS]
    else:
        rng = random.Random(0)
        prompts = [[rng.randrange(4, reference.config.vocab_size) for _ in range(16)] for _ in range(args.prompts)]

    def candidate(scheme):
        loaded = load_model(args.model, dtype="float32")
        quantize(loaded.model, scheme)
        return loaded

    probe = QualityProbe(reference, prompts, args.new_tokens)
    report_block(f"{args.model} ({len(prompts)} prompts x {args.new_tokens} tokens)", probe, candidate, args.schemes)


if __name__ == "__main__":
    main()
