"""Serving throughput: N requests of random prompt and output lengths, all submitted at once.

Our engine (continuous batching) against `transformers` generate on the same weights, run two ways:
one request at a time (what a plain generate loop serves) and in padded static batches of the
same size as our max batch. Prints output tokens/s and ratios.

    python benchmarks/throughput.py --requests 64
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import add_model_args, make_setup, timed, transformers_twin  # noqa: E402

from nemotron.engine.llm import LLM  # noqa: E402
from nemotron.engine.llm_engine import EngineConfig  # noqa: E402
from nemotron.engine.sampling import SamplingParams  # noqa: E402


def hf_generate(hf_model, prompts: list[list[int]], new_tokens: list[int], device: torch.device) -> None:
    """Left-padded batch; runs until its longest request is done, as static batching does."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    with torch.inference_mode():
        hf_model.generate(ids, attention_mask=mask, max_new_tokens=max(new_tokens), min_new_tokens=max(new_tokens),
                          do_sample=False, eos_token_id=None, pad_token_id=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, nargs=2, default=[32, 512])
    parser.add_argument("--output-len", type=int, nargs=2, default=[16, 256])
    parser.add_argument("--batch", type=int, default=32, help="static batch size for transformers")
    parser.add_argument("--skip-sequential", action="store_true")
    args = parser.parse_args()
    setup = make_setup(args)
    rng = random.Random(0)
    prompts = [[rng.randrange(4, setup.config.vocab_size) for _ in range(rng.randint(*args.prompt_len))]
               for _ in range(args.requests)]
    new_tokens = [rng.randint(*args.output_len) for _ in range(args.requests)]
    total = sum(new_tokens)
    hf_model = transformers_twin(setup)
    llm = LLM(setup.loaded, EngineConfig(max_num_seqs=args.batch * 2))
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for n in new_tokens]
    print(f"device {setup.device}, {setup.config.num_parameters() / 1e6:.1f}M parameters, {args.requests} requests, "
          f"prompts {args.prompt_len[0]}-{args.prompt_len[1]}, outputs {args.output_len[0]}-{args.output_len[1]} "
          f"({total} output tokens)")

    llm.generate(prompts[:2], SamplingParams(max_tokens=4, temperature=0))  # warm-up
    ours = total / timed(lambda: llm.generate(prompts, params), setup.device)
    print(f"nemotron engine             {ours:9.1f} output tok/s", flush=True)
    batched = total / timed(lambda: [hf_generate(hf_model, prompts[i:i + args.batch], new_tokens[i:i + args.batch],
                                                 setup.device) for i in range(0, len(prompts), args.batch)],
                            setup.device)
    print(f"transformers, batches of {args.batch:<3d} {batched:9.1f} output tok/s | ratio {ours / batched:5.2f}x",
          flush=True)
    if not args.skip_sequential:
        sequential = total / timed(lambda: [hf_generate(hf_model, [p], [n], setup.device)
                                            for p, n in zip(prompts, new_tokens)], setup.device)
        print(f"transformers, one at a time {sequential:9.1f} output tok/s | ratio {ours / sequential:5.2f}x")


if __name__ == "__main__":
    main()
