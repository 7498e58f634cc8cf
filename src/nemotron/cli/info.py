"""`nemotron info MODEL`: what a checkpoint or preset is, and how much memory its weights take."""
from __future__ import annotations

import argparse
import json
import math

from nemotron.model.config import ModelConfig
from nemotron.model.nemotron_h_config import ATTENTION, MAMBA, MLP, NemotronHConfig

_BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2, "float16": 2}
_SAFETENSORS_ITEMSIZE = {"F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1,
                         "I32": 4, "I64": 8, "F64": 8, "I16": 2}


def describe(spec: str, trust_pickle: bool = False) -> dict:
    from nemotron.allocator import in_use as allocator_in_use
    from nemotron.checkpoint import hf
    from nemotron.checkpoint.load import SourceKind, load_config, resolve
    from nemotron.quant.cpu import cpu_features, default_cpu_dtype

    source = resolve(spec)
    config = load_config(spec, trust_pickle=trust_pickle)
    counts = config.parameter_counts()
    total = sum(counts.values())
    hybrid = isinstance(config, NemotronHConfig)
    info = {
        "model": spec,
        "source": source.kind.value,
        "architecture": "hybrid causal LM" if hybrid else "reward model" if config.is_reward_model else "causal LM",
        "config": config.to_hf_dict(),
        "parameters": total,
        "parameters_by_part": counts,
        "stored_dtype": config.torch_dtype,
        "weight_bytes": total * _BYTES_PER_PARAM[config.torch_dtype],
        "kv_cache_bytes_per_token_16bit": config.kv_cache_bytes_per_token(2),
        "cpu_compute_dtype": str(default_cpu_dtype()).removeprefix("torch."),  # what --dtype auto picks here
        "cpu_features": cpu_features(),
        "allocator": allocator_in_use(),
    }
    if hybrid:
        from nemotron.engine.mamba_state import PREFIX_CACHING_OFF

        info["mamba_state_bytes_per_sequence_fp32"] = config.mamba_state_bytes_per_sequence()
        info["engine_prefix_caching"] = f"off: {PREFIX_CACHING_OFF}"
    if source.kind is SourceKind.HF_DIR and hf.safetensors_only(source.path):
        shapes = hf.tensor_shapes(source.path)
        info["weight_bytes"] = sum(math.prod(shape) * _SAFETENSORS_ITEMSIZE.get(dtype, 2)
                                   for shape, dtype in shapes.values())
        if config.quantization is None:  # quantized files hold packed weights and scales: no element count to compare
            info["parameters_on_disk"] = sum(math.prod(shape) for shape, _ in shapes.values())
    if config.quantization is not None and source.kind is not SourceKind.GGUF:  # `nemotron quantize` output
        head = ", the LM head in int8" if config.quantized_lm_head else ""
        info["stored_dtype"] = f"{config.quantization} decoder layers{head}, the rest {config.torch_dtype}"
    if source.kind is SourceKind.GGUF:
        from nemotron.checkpoint.gguf import stored_size

        info["weight_bytes"], types = stored_size(source.path)
        info["stored_dtype"] = f"GGUF {types}"
    return info


def format_info(info: dict) -> str:
    c = info["config"]
    if c["model_type"] == "nemotron_h":
        return _format_hybrid(info, NemotronHConfig.from_hf_dict(c))
    config = ModelConfig.from_hf_dict(c)
    parts = ", ".join(f"{name} {_human(n)}" for name, n in info["parameters_by_part"].items())
    kv = info["kv_cache_bytes_per_token_16bit"]
    lines = [
        f"model        {info['model']} ({info['source']})",
        f"architecture Nemotron {info['architecture']}"
        + (f", {config.num_reward_attributes} reward attributes" if config.is_reward_model else ""),
        f"layers       {config.num_layers}   hidden {config.hidden_size}   ffn {config.intermediate_size}",
        f"attention    {config.num_heads} heads x {config.head_dim}, {config.num_kv_heads} KV heads "
        f"(GQA {config.kv_group_size}:1), rotary on {config.rotary_dim} of {config.head_dim} channels, "
        f"theta {config.rope_theta:g}",
        f"vocab        {config.vocab_size}   context {config.max_position_embeddings}   norm eps {config.norm_eps:g}",
        f"parameters   {_human(info['parameters'])} ({info['parameters']:,}): {parts}",
    ]
    if "parameters_on_disk" in info and info["parameters_on_disk"] != info["parameters"]:
        lines.append(f"WARNING      the files hold {info['parameters_on_disk']:,} parameters, "
                     f"the config implies {info['parameters']:,}")
    lines += [
        f"weights      {info['weight_bytes'] / 1e9:.2f} GB as stored ({info['stored_dtype']}); "
        f"{info['parameters'] * 2 / 1e9:.2f} GB in bf16, {info['parameters'] / 1e9:.2f} GB in 8-bit",
        f"KV cache     {kv / 1024:.0f} KiB per token in 16-bit; "
        f"{kv * config.max_position_embeddings / 1e9:.2f} GB for one {config.max_position_embeddings}-token sequence",
        f"on this CPU  computes in {info['cpu_compute_dtype']} by default ({info['cpu_features']}; --dtype overrides); "
        f"allocator {info['allocator']}",
    ]
    return "\n".join(lines)


def _format_hybrid(info: dict, config: NemotronHConfig) -> str:
    parts = ", ".join(f"{name} {_human(n)}" for name, n in info["parameters_by_part"].items())
    kv, state = info["kv_cache_bytes_per_token_16bit"], info["mamba_state_bytes_per_sequence_fp32"]
    context = config.max_position_embeddings
    return "\n".join([
        f"model        {info['model']} ({info['source']})",
        f"architecture Nemotron-H hybrid: {config.count(MAMBA)} Mamba-2, {config.count(ATTENTION)} attention, "
        f"{config.count(MLP)} MLP layers",
        f"pattern      {config.pattern}",
        f"layers       {config.num_layers}   hidden {config.hidden_size}   ffn {config.intermediate_size}",
        f"attention    {config.num_heads} heads x {config.head_dim}, {config.num_kv_heads} KV heads, no positional encoding",
        f"mamba-2      {config.mamba_num_heads} heads x {config.mamba_head_dim}, state {config.ssm_state_size}, "
        f"{config.n_groups} groups, conv {config.conv_kernel}, chunk {config.chunk_size}",
        f"vocab        {config.vocab_size}   context {context}   norm eps {config.norm_eps:g}",
        f"parameters   {_human(info['parameters'])} ({info['parameters']:,}): {parts}",
        f"weights      {info['weight_bytes'] / 1e9:.2f} GB as stored ({info['stored_dtype']}); "
        f"{info['parameters'] * 2 / 1e9:.2f} GB in bf16, {info['parameters'] / 1e9:.2f} GB in 8-bit",
        f"KV cache     {kv / 1024:.0f} KiB per token in 16-bit (attention layers only)",
        f"Mamba state  {state / 1e6:.1f} MB per sequence in fp32, whatever its length",
        f"per sequence {config.sequence_state_bytes(context) / 1e9:.2f} GB for one {context}-token sequence "
        f"(KV cache + Mamba state)",
        f"engine       a Mamba state slot per running sequence; {info['engine_prefix_caching']}",
    ])


def _human(n: int) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def register(commands) -> None:
    parser = commands.add_parser("info", help="configuration, parameter count and weight bytes of a model")
    parser.add_argument("model")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--trust-pickle", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    info = describe(args.model, args.trust_pickle)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
