"""Decode speed: our engine vs `transformers` generate on the same weights, same run.

Batch 1 and batch B (default 32), P-token prompts, N new tokens each, greedy, EOS ignored.
Prints tokens/s for both and the ratio; on a GPU also the fraction of the memory-bandwidth limit at
batch 1 (weight bytes read per token, the embedding table aside, over the measured device copy bandwidth); on a CPU the fraction of the
matmul floor (the weight matmuls of one step timed alone, which bounds any decoder from above).

    python benchmarks/decode.py                      # CPU, ~30M-parameter shape
    python benchmarks/decode.py --preset 8b          # GPU, the issue's 8B shape in bf16
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (add_model_args, bytes_per_step, copy_bandwidth, make_setup, matmul_floor, timed,  # noqa: E402
                    transformers_twin)

from nemotron.engine.llm import LLM  # noqa: E402
from nemotron.engine.llm_engine import EngineConfig  # noqa: E402
from nemotron.engine.sampling import SamplingParams  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs is reported")
    parser.add_argument("--attention-backend", default="auto", choices=["auto", "torch", "triton"],
                        help="decode attention: triton kernel (GPU default) or torch (SDPA over decode lanes)")
    args = parser.parse_args()
    setup = make_setup(args)
    generator = torch.Generator().manual_seed(0)
    hf_model = None if args.skip_transformers else transformers_twin(setup)  # before the engine fuses QKV
    llm = LLM(setup.loaded, EngineConfig(max_num_seqs=max(args.batch_sizes), attention_backend=args.attention_backend))
    params = SamplingParams(max_tokens=args.new_tokens, temperature=0, ignore_eos=True)
    print(f"device {setup.device}, dtype {setup.dtype}, {setup.config.num_parameters() / 1e6:.1f}M parameters, "
          f"prompt {args.prompt_len}, new tokens {args.new_tokens}")

    for batch in args.batch_sizes:
        prompts = torch.randint(4, setup.config.vocab_size, (batch, args.prompt_len), generator=generator)
        llm.generate(prompts[:, :16].tolist(), SamplingParams(max_tokens=4, temperature=0))  # warm-up
        ours = timed(lambda: llm.generate(prompts.tolist(), params), setup.device, args.repeats)
        ours_tps = batch * args.new_tokens / ours
        line = f"batch {batch:3d}: nemotron {ours_tps:9.1f} tok/s"
        if hf_model is not None:
            ids = prompts.to(setup.device)
            with torch.inference_mode():
                hf_model.generate(ids[:, :16], max_new_tokens=4, do_sample=False)  # warm-up
                ref = timed(lambda: hf_model.generate(ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                                      do_sample=False, eos_token_id=None, pad_token_id=0),
                            setup.device, args.repeats)
            ref_tps = batch * args.new_tokens / ref
            line += f" | transformers {ref_tps:9.1f} tok/s | ratio {ours_tps / ref_tps:5.2f}x"
        if setup.device.type == "cuda" and batch == 1:
            limit = copy_bandwidth(setup.device) / bytes_per_step(setup.loaded.model)
            line += f" | bandwidth limit {limit:7.1f} tok/s, achieved {ours_tps / limit:5.1%}"
        elif setup.device.type == "cpu":
            limit = batch / matmul_floor(setup.loaded.model, batch, setup.device)
            line += f" | matmul floor {limit:8.1f} tok/s, achieved {ours_tps / limit:5.1%}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
