"""`nemotron memory MODEL`: memory needed to serve a model, and the GPU setups that hold it."""
from __future__ import annotations

import argparse
import dataclasses
import json

FORMULA = """\
total = weights + KV cache + activations + prompt logprobs + runtime overhead, where
  weights      = parameters x bits per weight / 8 (a Hugging Face directory without --dtype/--quant:
                 the real tensor sizes of its safetensors files, quantized checkpoints included)
  KV cache     = batch x context x 2 x layers x KV heads x head_dim x 2 bytes (16-bit K/V)
  activations  = min(batch x context, 2048) x (2 hidden + 2 ffn) x 2 bytes  (one prefill chunk)
                 + batch x vocab x 33 bytes (the sampled rows: 16-bit logits, six fp32 working
                 copies of the sampler, its penalty state)
  prompt logprobs = 512 x vocab x 2 + 64 x vocab x 8 bytes (the engine's workspace for scoring prompt
                 tokens: logits of up to 512 of them per step, 64 at a time in fp32; none for reward models)
  overhead     = 0.5 GB per GPU (CUDA context, cuBLAS workspace, allocator slack)
  Nemotron-H: KV cache over the attention layers only, plus a Mamba state per sequence of
  Mamba layers x ((conv kernel - 1) x conv channels + heads x head_dim x state) x 4 bytes
With --tp T --pp P: linear layers, embedding and head are split T ways (norms replicated), KV heads
split T ways (replicated when T exceeds them), layers split P ways (embedding on the first stage,
head on the last); the per-GPU figure is the busiest GPU's. GPU memory is the nominal size in GB.

--quant: a planning-table name (Q4_K_M 4.5, Q5_K_M 5.5, Q6_K 6.5, Q8_0 8, FP16 16 bits, every
weight), an engine scheme of `nemotron quantize` (int8, int4, fp8: decoder-layer linear weights
with their scales and the LM head in int8 unless --keep-head, the rest at --dtype), or a number of
bits per weight."""

_DTYPE_KEYS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def register(commands) -> None:
    parser = commands.add_parser(
        "memory", help="memory to serve a model (weights, KV cache, activations, overhead) and GPUs that fit",
        description=FORMULA, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="preset name, Hugging Face directory or .nemo checkpoint")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp8", "fp32"],
                        help="weight dtype (default: the checkpoint's or preset's)")
    parser.add_argument("--quant", help="Q4_K_M | Q6_K | Q8_0 | ... | int8 | int4 | fp8 | bits per weight")
    parser.add_argument("--keep-head", action="store_true",
                        help="with an engine scheme: the LM head unquantized (`nemotron quantize --keep-head`)")
    parser.add_argument("--context", type=int, help="tokens per sequence (default: the model's context)")
    parser.add_argument("--batch", type=int, default=1, help="sequences served at once (default 1)")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel GPUs")
    parser.add_argument("--pp", type=int, default=1, help="pipeline-parallel stages")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--trust-pickle", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from nemotron.checkpoint.load import SourceKind, load_config, resolve
    from nemotron.memory import Precision, WeightBytes, plan, setups_for_split, smallest_setups

    source = resolve(args.model)
    config = load_config(args.model, trust_pickle=args.trust_pickle)
    from_config = args.quant is None and not args.dtype
    precision = Precision(args.dtype or _DTYPE_KEYS[config.torch_dtype],
                          config.quantization if from_config else args.quant,
                          config.quantized_lm_head if from_config else not args.keep_head)
    real_sizes = (source.kind is SourceKind.HF_DIR and args.dtype is None and args.quant is None
                  and _safetensors_only(source.path))
    if real_sizes:  # per-layer sizes are indexed by layer: the config must match the files
        from nemotron.checkpoint import hf, preflight

        preflight.check_layers(config, list(hf.tensor_shapes(source.path)), str(source.path))
    weights = (WeightBytes.from_checkpoint(source.path, config) if real_sizes
               else WeightBytes.from_config(config, precision))
    result = plan(config, weights, context=args.context, batch=args.batch, tp=args.tp, pp=args.pp)
    kwargs = {"context": result.context, "batch": args.batch}
    setups = (setups_for_split(config, weights, precision, tp=args.tp, pp=args.pp, **kwargs)
              if result.num_gpus > 1 else smallest_setups(config, weights, precision, **kwargs))
    if args.json:
        print(json.dumps({
            "model": args.model, "parameters": config.num_parameters(), "weights_from": weights.source,
            "context": result.context, "batch": result.batch, "tp": result.tp, "pp": result.pp,
            "whole_model": {**dataclasses.asdict(result.whole), "total": result.whole.total},
            "per_gpu": {**dataclasses.asdict(result.per_gpu), "total": result.per_gpu.total},
            "setups": [{"gpu": s.gpu.name, "memory_gb": s.gpu.memory_gb, "gpus": s.num_gpus, "tp": s.tp,
                        "pp": s.pp, "per_gpu_bytes": s.per_gpu_bytes, "fits": s.fits, "note": s.note}
                       for s in setups],
        }, indent=2))
        return
    kind = source.kind.value.split(" (")[0]  # "preset", not "preset (random weights)": no weights are loaded
    count = config.num_parameters()
    count_text = f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.1f}M"
    print(f"model        {args.model} ({kind}), {count_text} parameters")
    print(f"weights as   {weights.source}")
    print(f"context      {result.context} tokens x batch {result.batch}")
    split = f"per GPU (TP {result.tp} x PP {result.pp} = {result.num_gpus} GPUs)" if result.num_gpus > 1 else ""
    print(f"\n{'':16}{'whole model':>12}   {split}".rstrip())
    rows = [("weights", "weights"), ("KV cache", "kv_cache"), ("activations", "activations"),
            ("prompt logprobs", "prompt_logprobs"), ("overhead", "overhead")]
    if result.whole.mamba_state:  # Nemotron-H: constant per sequence, whatever the context
        rows.insert(2, ("Mamba state", "mamba_state"))
    for name, field in rows:
        per_gpu = f"{_gb(getattr(result.per_gpu, field)):>12}" if split else ""
        print(f"{name:16}{_gb(getattr(result.whole, field)):>12}   {per_gpu}".rstrip())
    print(f"{'total':16}{_gb(result.whole.total):>12}   {_gb(result.per_gpu.total) if split else '':>12}".rstrip())
    title = (f"on TP {result.tp} x PP {result.pp}:" if result.num_gpus > 1 else
             "smallest setup per GPU (TP within an 8-GPU node, PP across nodes):")
    print(f"\n{title}")
    for s in setups:
        name = f"{s.gpu.name} ({s.gpu.memory_gb:g} GB)"
        if s.per_gpu_bytes is None:
            print(f"  {name:24} {'-':22} {s.note}")
            continue
        layout = f"{s.num_gpus} GPU{'s' if s.num_gpus > 1 else ''}" + (
            f"  TP {s.tp}" if s.tp > 1 else "") + (f" x PP {s.pp}" if s.pp > 1 else "")
        verdict = "fits" if s.fits else (s.note or "does not fit")
        print(f"  {name:24} {layout:22} {_gb(s.per_gpu_bytes):>10} per GPU  {verdict}")


def _safetensors_only(directory) -> bool:
    from nemotron.checkpoint import hf
    from nemotron.errors import CheckpointError

    try:
        return hf.safetensors_only(directory)
    except CheckpointError:  # config.json alone (downloaded to plan hardware): estimate from the config
        return False


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"
