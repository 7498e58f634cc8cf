"""Decode speed of int8 / int4 (and fp8 on Hopper) against bf16, same weights, same run.

Batch 1 decode reads every weight once per token, so the speed-up is bounded by the ratio of bytes
read per step; the script prints that ceiling beside the measured ratio and the issue's targets
(8B shape on an H100: int8 >= 1.7x, int4 >= 2.5x bf16). The LM head is int8 under every scheme, as
`nemotron quantize` writes it (`--keep-head`: left in bf16, which caps the 8B shape at 1.73x / 2.67x).
First a kernel table: each linear shape of the model at one input row, bf16 cuBLAS against the Triton
int8 / int4 kernels, in microseconds and achieved GB/s.

    python benchmarks/quant_decode.py                 # GPU: the issue's 8B shape, bf16 baseline
    python benchmarks/quant_decode.py --preset small  # any device: a quick run of the same code
"""
from __future__ import annotations

import argparse
import copy
import gc
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import add_model_args, bytes_per_step, copy_bandwidth, make_setup, timed  # noqa: E402

from nemotron.engine.llm import LLM  # noqa: E402
from nemotron.engine.llm_engine import EngineConfig  # noqa: E402
from nemotron.engine.sampling import SamplingParams  # noqa: E402
from nemotron.quant import SCHEMES, quantize  # noqa: E402

TARGETS = {"int8": 1.7, "int4": 2.5}


def kernel_table(config, device: torch.device, repeats: int) -> None:
    h, f, d = config.hidden_size, config.intermediate_size, config.head_dim
    shapes = {"qkv": ((config.num_heads + 2 * config.num_kv_heads) * d, h), "o": (h, config.num_heads * d),
              "up": (f, h), "down": (h, f), "lm_head": (config.vocab_size, h)}
    columns = "".join(f"{s + ' us':>10}{s + ' GB/s':>11}" for s in ("int8", "int4"))
    print(f"{'linear (N x K)':22}{'bf16 us':>9}{columns}")
    for name, (n, k) in shapes.items():
        linear = torch.nn.Linear(k, n, bias=False, device=device, dtype=torch.bfloat16)
        x = torch.randn(1, k, device=device, dtype=torch.bfloat16)
        line = f"{name} ({n} x {k})".ljust(22)
        base = timed(lambda: [F.linear(x, linear.weight) for _ in range(100)], device, repeats) / 100
        line += f"{base * 1e6:9.1f}"
        for scheme in ("int8", "int4"):
            module = SCHEMES[scheme].from_float(linear)
            module(x)  # autotune outside the timing
            seconds = timed(lambda: [module(x) for _ in range(100)], device, repeats) / 100
            nbytes = sum(b.numel() * b.element_size() for b in module.buffers())
            line += f"{seconds * 1e6:10.1f}{nbytes / seconds / 1e9:11.0f}"
        print(line, flush=True)


def decode_tokens_per_s(loaded, prompt: list[int], new_tokens: int, repeats: int, device: torch.device) -> float:
    llm = LLM(loaded, EngineConfig(max_num_seqs=1))
    params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    llm.generate([prompt[:16]], SamplingParams(max_tokens=4, temperature=0))  # warm-up (and autotune)
    seconds = timed(lambda: llm.generate([prompt], params), device, repeats)
    del llm
    return new_tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.set_defaults(preset="8b")
    parser.add_argument("--schemes", nargs="+", default=None, help="default: int8 int4, plus fp8 on Hopper")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs is reported")
    parser.add_argument("--keep-head", action="store_true", help="leave the LM head in the baseline dtype "
                        "(by default it is int8 under every scheme, as `nemotron quantize` writes it)")
    args = parser.parse_args()
    setup = make_setup(args)
    device = setup.device
    schemes = args.schemes or ["int8", "int4"] + (
        ["fp8"] if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0) else [])
    print(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, baseline "
          f"{setup.dtype}, {setup.config.num_parameters() / 1e9:.2f}B parameters, batch 1, prompt {args.prompt_len}, "
          f"new tokens {args.new_tokens}")
    if device.type == "cuda":
        kernel_table(setup.config, device, args.repeats)
    bandwidth = copy_bandwidth(device) if device.type == "cuda" else None

    prompt = torch.randint(4, setup.config.vocab_size, (args.prompt_len,), generator=torch.Generator().manual_seed(0))
    baseline = copy.copy(setup.loaded)  # the engine fuses q/k/v in place; quantized copies start from that
    base_bytes = bytes_per_step(setup.loaded.model)
    base_tps = decode_tokens_per_s(baseline, prompt.tolist(), args.new_tokens, args.repeats, device)
    line = f"\n{str(setup.dtype).removeprefix('torch.'):9} {base_tps:8.1f} tok/s  {base_bytes / 1e9:6.2f} GB/step"
    if bandwidth:
        line += f"  {base_tps * base_bytes / bandwidth:6.1%} of the bandwidth limit"
    print(line, flush=True)
    for scheme in schemes:
        model = quantize(copy.deepcopy(setup.loaded.model), scheme, head=not args.keep_head)
        loaded = copy.copy(setup.loaded)
        loaded.model = model
        nbytes = bytes_per_step(model)
        tps = decode_tokens_per_s(loaded, prompt.tolist(), args.new_tokens, args.repeats, device)
        line = (f"{scheme:9} {tps:8.1f} tok/s  {nbytes / 1e9:6.2f} GB/step  ratio {tps / base_tps:5.2f}x "
                f"(byte ceiling {base_bytes / nbytes:4.2f}x")
        line += f", target {TARGETS[scheme]}x)" if scheme in TARGETS else ")"
        if bandwidth:
            line += f"  {tps * nbytes / bandwidth:6.1%} of the bandwidth limit"
        print(line, flush=True)
        del model, loaded
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
