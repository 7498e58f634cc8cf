"""Prompt log-probabilities (scoring, OpenAI echo + logprobs, NeMo compute_logprob) computed by the
engine during prefill, against a plain forward pass over each whole prompt (what a separate scorer
beside the engine would run). Prints both times, the ratio, and how far the values are apart.

    python benchmarks/prompt_scoring.py --prompts 8 --prompt-len 1024 --top 5
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import add_model_args, make_setup, timed  # noqa: E402

from nemotron.engine.llm import LLM  # noqa: E402
from nemotron.engine.sampling import SamplingParams  # noqa: E402


@torch.inference_mode()
def plain_forward(model, prompts: list[list[int]], top: int, rows: int = 64) -> list[list[float]]:
    """Each prompt's chosen log-probabilities (and its top alternatives, discarded) from one forward
    pass over the whole prompt, the output layer applied `rows` positions at a time."""
    chosen = []
    for ids in prompts:
        hidden = model.model(torch.tensor([ids], device=model.lm_head.weight.device))[0]  # (T, H)
        values = []
        for start in range(0, len(ids) - 1, rows):
            logp = model.lm_head(hidden[start:min(start + rows, len(ids) - 1)]).float().log_softmax(-1)  # (n, V)
            targets = torch.tensor(ids[start + 1:start + 1 + logp.shape[0]], device=logp.device)[:, None]
            values += logp.gather(1, targets)[:, 0].tolist()
            logp.topk(top, dim=-1)
        chosen.append(values)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=1024)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    setup = make_setup(args)
    rng = random.Random(0)
    prompts = [[rng.randrange(4, setup.config.vocab_size) for _ in range(args.prompt_len)] for _ in range(args.prompts)]
    print(f"device {setup.device}, {setup.config.num_parameters() / 1e6:.1f}M parameters, {args.prompts} prompts of "
          f"{args.prompt_len} tokens, top {args.top} alternatives")
    reference = plain_forward(setup.loaded.model, prompts, args.top)  # (also the warm-up)
    seconds_ref = timed(lambda: plain_forward(setup.loaded.model, prompts, args.top), setup.device)
    llm = LLM(setup.loaded)
    params = SamplingParams(max_tokens=0, prompt_logprobs=args.top)
    results = llm.generate(prompts, params)  # (also the warm-up)
    seconds = timed(lambda: llm.generate(prompts, params), setup.device)
    diff = max(abs(entry[t].logprob - want) for r, ref in zip(results, reference)
               for t, entry, want in zip(r.prompt_token_ids[1:], r.prompt_logprobs[1:], ref))
    print(f"plain forward per prompt {seconds_ref:.3f} s, engine prefill {seconds:.3f} s "
          f"({seconds_ref / seconds:.2f}x); largest difference {diff:.2e}")


if __name__ == "__main__":
    main()
