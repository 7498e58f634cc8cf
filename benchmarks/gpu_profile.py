"""Where a GPU decode step's time goes, on the 8B shape: the numbers the GPU targets are tuned from.

1. The paged decode-attention kernel with one program per (sequence, KV head) against the engine's
   context splits, as GPU time. Then a kernel table at one input row (batch-1 decode), timed as GPU
   time from CUDA-graph replays (`triton.testing.do_bench_cudagraph`), so Python launch overhead
   (tens of microseconds per Triton call) is not in it: bf16 cuBLAS; the int8 / int4 kernels as autotuned (and the config
   the autotuner chose); every fixed tile config of them; and the GEMV-shaped kernels (weights read
   along K, a reduction instead of `tl.dot`: the library's one-row kernels, int4's always, int8's when
   its autotuner prefers it to the tile) with their own configs. Each config is checked against
   the dequantized reference before it is timed.
2. Prefill alone for fresh mixed-length prompts, with the engine's prompt attention (no cuDNN on
   CUDA) and with cuDNN's SDPA allowed again.
3. Decode steps of the engine at batch 1 and 64 in bf16, with and without CUDA graphs: tokens/s
   end to end (a fresh prompt's prefill included), the decode step alone (the prompts' prefill
   cached by a 1-token run first, then (T(n steps) - T(1 step)) / (n - 1), with the weight bytes'
   share of the copy bandwidth at batch 1), and a torch.profiler table of the kernels of 16 such
   steps (GPU time per step by kernel) beside their wall time, whose difference is the time the
   GPU waited for the host.

    python benchmarks/gpu_profile.py                  # GPU, 8B shape
    TRITON_INTERPRET=1 python benchmarks/gpu_profile.py --check-only   # CPU: the variants' arithmetic
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, str(Path(__file__).parent))
from common import SHAPE_8B, add_model_args, bytes_per_step, copy_bandwidth, make_setup, synchronize  # noqa: E402

from nemotron.quant import kernels  # noqa: E402
from nemotron.quant.linear import Int4Linear, Int8Linear  # noqa: E402


def gemv_int8(x, module: Int8Linear, cfg: dict):
    """The library's one-row int8 kernel with a fixed config (GEMV 1: its GEMV; 0: its 16-row tile)."""
    n, k = module.weight.shape
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    kernels._int8_row_kernel[(triton.cdiv(n, cfg["BLOCK_N"]),)](
        x, module.weight, module.weight_scale, out, n, k, BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
        GEMV=cfg.get("GEMV", 1), num_warps=cfg.get("num_warps", 4), num_stages=cfg.get("num_stages", 3))
    return out[None]


def gemv_int4(x, module: Int4Linear, cfg: dict):
    n = module.weight_packed.shape[0]
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    kernels._int4_gemv_kernel[(triton.cdiv(n, cfg["BLOCK_N"]),)](
        x, module.weight_packed, module.weight_scale, out, n, module.in_features, BLOCK_N=cfg["BLOCK_N"],
        GROUP=module.group_size, STEP_GROUPS=cfg.get("STEP_GROUPS", 1), num_warps=cfg.get("num_warps", 4),
        num_stages=cfg.get("num_stages", 3))
    return out[None]


def gpu_time(fn, device: torch.device) -> float:
    """Seconds per call: GPU time of graph replays on CUDA, a plain wall-clock loop elsewhere."""
    if device.type == "cuda":
        return triton.testing.do_bench_cudagraph(fn, rep=20, return_mode="median") / 1e3
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def close(out, ref) -> bool:
    return bool(torch.isfinite(out).all()) and (out.float() - ref).norm() / ref.norm() < 2e-2


def kernel_table(config, device: torch.device, check_only: bool) -> None:
    h, f, d = config.hidden_size, config.intermediate_size, config.head_dim
    shapes = {"qkv": ((config.num_heads + 2 * config.num_kv_heads) * d, h), "o": (h, config.num_heads * d),
              "up": (f, h), "down": (h, f), "lm_head": (config.vocab_size, h)}
    mm_cfgs = [{"BLOCK_N": n, "BLOCK_K": k, "num_warps": w, "num_stages": s}
               for n in (16, 32, 64) for k in (128, 256) for w, s in ((4, 3), (8, 4))]
    mm4_cfgs = [{"BLOCK_N": n, "num_warps": w, "num_stages": s} for n in (16, 32, 64) for w, s in ((4, 3), (8, 4))]
    gemv_cfgs = [{"BLOCK_N": n, "BLOCK_K": k, "num_warps": w, "num_stages": s}
                 for n in (4, 8, 16) for k in (512, 1024) for w, s in ((4, 3), (8, 3))]
    gemv4_cfgs = [{"BLOCK_N": n, "STEP_GROUPS": g, "num_warps": w, "num_stages": s} for n in (4, 8, 16, 32, 64)
                  for g in (1, 2, 4, 8, 16) if n * g <= 128 for w, s in ((4, 3), (8, 4))]
    if check_only:
        several = next(c for c in gemv4_cfgs if c["STEP_GROUPS"] == 4)
        mm_cfgs, mm4_cfgs, gemv_cfgs, gemv4_cfgs = mm_cfgs[:1], mm4_cfgs[:1], gemv_cfgs[:2], [gemv4_cfgs[0], several]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float16
    print("GPU time per call at one input row, microseconds (GB/s of weights read); best config of each family")
    for name, (n, k) in shapes.items():
        linear = torch.nn.Linear(k, n, bias=False, device=device, dtype=dtype)
        x = torch.randn(1, k, device=device, dtype=dtype)
        ref = F.linear(x.float(), linear.weight.float())
        seconds = gpu_time(lambda: F.linear(x, linear.weight), device)
        line = f"{name} ({n} x {k}): bf16 {seconds * 1e6:.1f} ({n * k * 2 / seconds / 1e9:.0f})"
        for label, module, tuned, family in (
                ("int8", Int8Linear.from_float(linear), kernels.int8_matmul,
                 [("mm", c, lambda x, m, c: kernels.int8_matmul(x, m.weight, m.weight_scale, c)) for c in mm_cfgs]
                 + [("gemv", c, gemv_int8) for c in gemv_cfgs]),
                ("int4", Int4Linear.from_float(linear), kernels.int4_matmul,
                 [("mm", c, lambda x, m, c: kernels._launch(kernels._int4_kernel, x, m.weight_packed, m.weight_scale,
                                                           m.out_features, {**c, "GROUP": m.group_size}))
                  for c in mm4_cfgs]
                 + [("gemv", c, gemv_int4) for c in gemv4_cfgs])):
            qref = F.linear(x.float(), module.dequantize(torch.float32))
            nbytes = sum(b.numel() * b.element_size() for b in module.buffers())
            best: dict[str, tuple[float, dict]] = {}
            if not check_only:
                tensors = (module.weight, module.weight_scale) if label == "int8" else (module.weight_packed, module.weight_scale)
                assert close(tuned(x, *tensors), qref), f"{label} autotuned kernel wrong on {name}"
                seconds = gpu_time(lambda: tuned(x, *tensors), device)
                chosen = getattr(kernels._int8_row_tuned if label == "int8" else kernels._int4_gemv_tuned, "best_config", None)
                line += f" | {label} tuned {seconds * 1e6:.1f} ({nbytes / seconds / 1e9:.0f}) [{chosen}]"
            for kind, cfg, fn in family:
                try:
                    out = fn(x, module, cfg)
                except Exception as error:  # a config the compiler refuses (shared memory, registers)
                    print(f"  {name} {label} {kind} {cfg}: {type(error).__name__}", flush=True)
                    continue
                assert close(out, qref), f"{label} {kind} {cfg} wrong on {name}"
                seconds = gpu_time(lambda: fn(x, module, cfg), device)
                if kind not in best or seconds < best[kind][0]:
                    best[kind] = (seconds, cfg)
            for kind, (seconds, cfg) in best.items():
                line += f" | {label} {kind} {seconds * 1e6:.1f} ({nbytes / seconds / 1e9:.0f}) {cfg}"
        print(line, flush=True)
        del ref
    if device.type == "cuda":  # the same measurement as decode.py's and quant_decode.py's
        print(f"(reference: {copy_bandwidth(device) / 1e9:.0f} GB/s device copy, read + write)")


def attention_table(config, device: torch.device, check_only: bool) -> None:
    """The paged decode-attention kernel as GPU time: one program per (sequence, KV head) against the
    context split the engine now picks (decode_splits), at the graph table width of a 4,096-token
    context, for short and long contexts. Each run is checked against the one-split output."""
    from nemotron.engine.triton_attention import decode_splits, paged_decode_attention

    block_size, dtype = 16, torch.bfloat16 if device.type == "cuda" else torch.float16
    width = config.max_position_embeddings // block_size
    heads, kv_heads, dim = config.num_heads, config.num_kv_heads, config.head_dim
    cases = [(1, 200), (1, 2000), (8, 500), (64, 200), (64, 1000)] if not check_only else [(1, 40), (3, 20)]
    print("paged decode attention, GPU time per call (µs): batch, context -> 1 split | engine's splits")
    for batch, context in cases:
        blocks_needed = -(-context // block_size)
        pool = torch.randn(batch * blocks_needed * block_size + block_size, kv_heads, dim, device=device).to(dtype)
        values = torch.randn_like(pool)
        tables = torch.zeros(batch, width, dtype=torch.int32, device=device)
        order = torch.randperm(batch * blocks_needed, device=device).to(torch.int32).view(batch, blocks_needed)
        tables[:, :blocks_needed] = order
        lens = torch.full((batch,), context, dtype=torch.int32, device=device)
        q = torch.randn(batch, heads, dim, device=device).to(dtype)
        splits = decode_splits(batch, kv_heads, width, device)
        one = paged_decode_attention(q, pool, values, tables, lens, block_size, 1)
        many = paged_decode_attention(q, pool, values, tables, lens, block_size, splits)
        assert close(many, one.float()), f"split attention differs at batch {batch}, context {context}"
        t_one = gpu_time(lambda: paged_decode_attention(q, pool, values, tables, lens, block_size, 1), device)
        t_many = gpu_time(lambda: paged_decode_attention(q, pool, values, tables, lens, block_size, splits), device)
        print(f"  batch {batch:3d}, context {context:5d}: {t_one * 1e6:8.1f} | {t_many * 1e6:8.1f} ({splits} splits)",
              flush=True)


def prefill_timing(setup, on_gpu: bool, rounds: int = 3) -> None:
    """Wall time of prefill alone (one new token) for fresh prompts of mixed lengths, with the engine's
    prompt attention as it is (no cuDNN on CUDA) and, on CUDA, with cuDNN's SDPA allowed again: the
    check of whether cuDNN's per-shape plans are what made fresh prompts slow."""
    from torch.nn.attention import SDPBackend

    from nemotron.engine import model_runner
    from nemotron.engine.llm import LLM
    from nemotron.engine.llm_engine import EngineConfig
    from nemotron.engine.sampling import SamplingParams

    gen = torch.Generator().manual_seed(1)
    default = list(model_runner._PROMPT_ATTENTION)
    variants = [("engine default", default)] + ([("cuDNN allowed", [SDPBackend.CUDNN_ATTENTION, *default])] if on_gpu else [])
    for label, backends in variants:
        model_runner._PROMPT_ATTENTION[:] = backends
        llm = LLM(setup.loaded, EngineConfig(max_num_seqs=32, cuda_graphs=False))
        lengths = torch.randint(64, 512, (rounds, 32), generator=gen)
        times = []
        for r in range(rounds):  # fresh random prompts every round: no prefix-cache hits
            prompts = [torch.randint(4, setup.config.vocab_size, (int(n),), generator=gen).tolist() for n in lengths[r]]
            synchronize(setup.device)
            start = time.perf_counter()
            llm.generate(prompts, SamplingParams(max_tokens=1, temperature=0))
            synchronize(setup.device)
            times.append(time.perf_counter() - start)
        tokens = int(lengths.sum(dim=1).float().mean())
        print(f"prefill, {label}: 32 fresh prompts of 64-511 tokens (~{tokens} tokens), seconds per round "
              + " ".join(f"{t:.3f}" for t in times), flush=True)
        del llm
    model_runner._PROMPT_ATTENTION[:] = default


def timed_generate(llm, prompts: list[list[int]], new_tokens: int, device: torch.device, repeats: int = 2) -> float:
    """Best wall time of generating new_tokens for every prompt (greedy, no early stop)."""
    from nemotron.engine.sampling import SamplingParams

    params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        llm.generate(prompts, params)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


KERNELS_LISTED = 24  # a decode step's kernels by time; the rest summed on one line


def engine_profile(args, batches: list[int], new_tokens: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    from nemotron.engine.llm import LLM
    from nemotron.engine.llm_engine import EngineConfig
    from nemotron.engine.sampling import SamplingParams

    setup = make_setup(args)
    device = setup.device
    gen = torch.Generator().manual_seed(0)
    params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    kernel_kind = torch.autograd.DeviceType.CUDA if on_gpu else torch.autograd.DeviceType.CPU
    prefill_timing(setup, on_gpu)
    bandwidth = copy_bandwidth(device) if on_gpu else None
    for graphs in (True, False):
        llm = LLM(setup.loaded, EngineConfig(max_num_seqs=max(batches), cuda_graphs=graphs))
        for batch in batches:
            prompts = torch.randint(4, setup.config.vocab_size, (batch, 128), generator=gen).tolist()
            llm.generate([p[:16] for p in prompts], SamplingParams(max_tokens=4, temperature=0))
            synchronize(device)
            start = time.perf_counter()
            llm.generate(prompts, params)
            synchronize(device)
            seconds = time.perf_counter() - start
            print(f"engine {str(setup.dtype).removeprefix('torch.')} batch {batch:3d}, cuda graphs {'on ' if graphs else 'off'}: "
                  f"{batch * new_tokens / seconds:8.1f} tok/s, {seconds / new_tokens * 1e3:6.2f} ms a step "
                  f"(prefill included)", flush=True)
            # The same prompts again: their blocks are cached, so what is timed is the decode steps.
            one = timed_generate(llm, prompts, 1, device)
            step = (timed_generate(llm, prompts, new_tokens, device) - one) / (new_tokens - 1)
            line = f"  decode step alone: {step * 1e3:6.2f} ms ({batch / step:8.1f} tok/s)"
            if on_gpu and batch == 1:
                line += f", weights at {bytes_per_step(llm.engine.model) / step / bandwidth:5.1%} of the copy bandwidth"
            print(line, flush=True)
            steps = 16
            engine = llm.engine
            for prompt in prompts:  # cached already: the first step recomputes each prompt's last block
                engine.add_request(engine.check_request(prompt, SamplingParams(max_tokens=steps + 2, temperature=0,
                                                                               ignore_eos=True)))
            engine.step()
            engine.step()  # the first decode step too: what is profiled is decode steps alone
            synchronize(device)
            start = time.perf_counter()
            with profile(activities=activities) as prof:
                for _ in range(steps):
                    engine.step()
                synchronize(device)
            wall = (time.perf_counter() - start) / steps
            while engine.has_unfinished():
                engine.step()
            events = [e for e in prof.key_averages() if e.device_type == kernel_kind]
            time_of = (lambda e: e.self_device_time_total) if on_gpu else (lambda e: e.self_cpu_time_total)
            total = sum(time_of(e) for e in events)
            calls = sum(e.count for e in events)
            print(f"  profiled {steps} decode steps: kernel time {total / steps / 1e3:.2f} ms a step ({calls / steps:.0f} "
                  f"kernels) of {wall * 1e3:.2f} ms wall under the profiler; kernels (ms a step, calls a step):")
            ranked = sorted(events, key=lambda e: -time_of(e))
            for e in ranked[:KERNELS_LISTED]:
                print(f"    {time_of(e) / steps / 1e3:7.3f}  {e.count / steps:6.1f}  {e.key[:110]}")
            rest = ranked[KERNELS_LISTED:]
            if rest:
                print(f"    {sum(time_of(e) for e in rest) / steps / 1e3:7.3f}  {sum(e.count for e in rest) / steps:6.1f}  "
                      f"({len(rest)} other kernels)")
        del llm
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.set_defaults(preset="8b")
    parser.add_argument("--check-only", action="store_true", help="check a few configs of each variant (CPU)")
    parser.add_argument("--skip-kernels", action="store_true")
    parser.add_argument("--skip-engine", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = SHAPE_8B if args.preset == "8b" else make_setup(args).config
    if args.check_only:
        from dataclasses import replace
        config = replace(config, hidden_size=256, intermediate_size=512, num_heads=4, num_kv_heads=2, head_dim=64,
                         vocab_size=384)
    if not args.skip_kernels:
        attention_table(config, device, args.check_only)
        kernel_table(config, device, args.check_only)
    parser_batches = [1, 64] if device.type == "cuda" else [1, 4]
    if not args.skip_engine:
        engine_profile(args, parser_batches, 64 if device.type == "cuda" else 8)


if __name__ == "__main__":
    main()
