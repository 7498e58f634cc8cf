"""Prefix caching: 256 requests sharing a 1,000-token prefix (an SDG instruction), each with its own
short suffix, served with and without the prefix cache. Prints both times and the speed-up.

    python benchmarks/prefix_cache.py
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import add_model_args, make_setup, timed  # noqa: E402

from nemotron.engine.llm import LLM  # noqa: E402
from nemotron.engine.llm_engine import EngineConfig  # noqa: E402
from nemotron.engine.sampling import SamplingParams  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--prefix-len", type=int, default=1000)
    parser.add_argument("--suffix-len", type=int, default=24)
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()
    setup = make_setup(args)
    rng = random.Random(0)
    vocab = setup.config.vocab_size
    prefix = [rng.randrange(4, vocab) for _ in range(args.prefix_len)]
    prompts = [prefix + [rng.randrange(4, vocab) for _ in range(args.suffix_len)] for _ in range(args.requests)]
    params = SamplingParams(max_tokens=args.new_tokens, temperature=0, ignore_eos=True)
    print(f"device {setup.device}, {setup.config.num_parameters() / 1e6:.1f}M parameters, {args.requests} requests, "
          f"shared prefix {args.prefix_len} + suffix {args.suffix_len} tokens, {args.new_tokens} new tokens each")
    results = {}
    for caching in (False, True):
        llm = LLM(setup.loaded, EngineConfig(enable_prefix_caching=caching))
        llm.generate(prompts[:1], SamplingParams(max_tokens=2, temperature=0))  # warm-up (and, cached, the prefix)
        seconds = timed(lambda: llm.generate(prompts, params), setup.device)
        blocks = llm.engine.blocks
        hit_rate = blocks.prefix_hits / max(blocks.prefix_queries, 1)
        results[caching] = seconds
        print(f"prefix cache {'on ' if caching else 'off'}: {seconds:7.2f} s, prompt tokens served from cache "
              f"{hit_rate:5.1%}", flush=True)
        del llm
    print(f"speed-up from prefix caching: {results[False] / results[True]:.2f}x")


if __name__ == "__main__":
    main()
