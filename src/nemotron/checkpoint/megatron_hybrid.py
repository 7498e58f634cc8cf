"""Nemotron-H in NeMo / Megatron-LM (megatron-core MambaModel) names <-> our Hugging Face names.

Facts about the Megatron side (megatron.core.models.mamba, NeMo's SSM importer/exporter):
- model_config.yaml carries the layer stack as `hybrid_override_pattern` (M Mamba-2, * attention,
  - MLP), `mamba_state_dim`, `mamba_head_dim`, `mamba_num_groups`, `mamba_num_heads` (absent in older
  configs: 2 * hidden_size / mamba_head_dim), `num_query_groups`, `kv_channels`, `ffn_hidden_size`;
- every layer holds one mixer under `decoder.layers.N.`: `mixer.*` for Mamba (in_proj, conv1d, A_log,
  D, dt_bias, norm, out_proj: the same tensors as transformers' NemotronHMamba2Mixer, in_proj rows in
  the same z, x, B, C, dt order), `self_attention.*` for attention (fused QKV grouped per KV group, as
  Nemotron-4's), `mlp.linear_fc1/2` for the MLP;
- the layer's pre-norm is fused into its first linear with Transformer Engine
  (`mixer.in_proj.layer_norm_weight`, `self_attention.linear_qkv.layer_norm_weight`,
  `mlp.linear_fc1.layer_norm_weight`) or a separate `norm.weight` / `input_layernorm.weight` /
  `pre_mlp_layernorm.weight`;
- `embedding.word_embeddings.weight`, `decoder.final_norm.weight`, `output_layer.weight`; NeMo adds a
  `model.` prefix; the embedding's rows are the (padded) vocabulary.
Tensor-parallel shards of Mamba layers are not merged here (their in_proj is split per component).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from nemotron.checkpoint import megatron
from nemotron.errors import CheckpointError, ConfigError
from nemotron.model.nemotron_h import NemotronHForCausalLM
from nemotron.model.nemotron_h_config import ATTENTION, MAMBA, NemotronHConfig

_QKV = "mixer.qkv_proj.weight"  # stands for the fused QKV until it is split into q/k/v_proj
_MIXER = ("in_proj.weight", "conv1d.weight", "conv1d.bias", "A_log", "D", "dt_bias", "norm.weight",
          "out_proj.weight", "in_proj.bias", "out_proj.bias")
# Megatron suffix under decoder.layers.N -> HF suffix under model.layers.N; the first spelling of a
# norm is the one hf_to_megatron writes (Transformer Engine's fused norms, as NeMo saves them).
_LAYER = {
    "mixer.in_proj.layer_norm_weight": "norm.weight",
    "self_attention.linear_qkv.layer_norm_weight": "norm.weight",
    "mlp.linear_fc1.layer_norm_weight": "norm.weight",
    "norm.weight": "norm.weight",
    "input_layernorm.weight": "norm.weight",
    "pre_mlp_layernorm.weight": "norm.weight",
    **{f"mixer.{name}": f"mixer.{name}" for name in _MIXER},
    "self_attention.linear_qkv.weight": _QKV,
    "self_attention.linear_proj.weight": "mixer.o_proj.weight",
    "mlp.linear_fc1.weight": "mixer.up_proj.weight",
    "mlp.linear_fc2.weight": "mixer.down_proj.weight",
}
_NORM_OF = {MAMBA: "mixer.in_proj.layer_norm_weight", ATTENTION: "self_attention.linear_qkv.layer_norm_weight"}
_GLOBAL = {
    "embedding.word_embeddings.weight": "model.embeddings.weight",
    "decoder.final_norm.weight": "model.norm_f.weight",
    "output_layer.weight": "lm_head.weight",
}
_LAYER_NAME = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")


def is_hybrid(raw: dict[str, Any]) -> bool:
    """Whether a model_config.yaml describes a hybrid Mamba model (megatron-core MambaModel)."""
    return raw.get("hybrid_override_pattern") is not None or "mamba_state_dim" in raw


def config_from_nemo(raw: dict[str, Any], vocab_size: int, origin: str) -> NemotronHConfig:
    pattern = raw.get("hybrid_override_pattern")
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{origin}/model_config.yaml: a Mamba model needs hybrid_override_pattern "
                          f"(one character per layer: M, *, -)")
    hidden = raw.get("hidden_size")
    heads = raw.get("num_attention_heads")
    head_dim = raw.get("mamba_head_dim", 64)
    if not all(isinstance(v, int) and v > 0 for v in (hidden, heads, head_dim)):
        raise ConfigError(f"{origin}/model_config.yaml: hidden_size, num_attention_heads and mamba_head_dim must "
                          f"be positive integers")
    hf = {
        "model_type": "nemotron_h",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "hybrid_override_pattern": pattern,
        "num_hidden_layers": raw.get("num_layers"),
        "intermediate_size": raw.get("ffn_hidden_size"),
        "num_attention_heads": heads,
        "num_key_value_heads": raw.get("num_query_groups") or heads,
        "head_dim": raw.get("kv_channels") or hidden // heads,
        "mamba_num_heads": raw.get("mamba_num_heads") or 2 * hidden // head_dim,
        "mamba_head_dim": head_dim,
        "ssm_state_size": raw.get("mamba_state_dim", 128),
        "n_groups": raw.get("mamba_num_groups", 8),
        "max_position_embeddings": raw.get("seq_length") or raw.get("max_position_embeddings") or 8192,
        "layer_norm_epsilon": raw.get("layernorm_epsilon", 1e-5),
        "use_bias": bool(raw.get("add_bias_linear", False)),
        "torch_dtype": "bfloat16" if "bf16" in str(raw.get("precision", "bf16")) else
                       "float16" if "16" in str(raw.get("precision")) else "float32",
    }
    if raw.get("position_embedding_type", "none") not in ("none", None):
        raise ConfigError(f"{origin}/model_config.yaml has position_embedding_type "
                          f"{raw['position_embedding_type']!r}; Nemotron-H attention has no positional encoding")
    try:
        return NemotronHConfig.from_hf_dict(hf)
    except ConfigError as err:
        raise ConfigError(f"{origin}/model_config.yaml: {err}") from None


def to_hf_name(name: str) -> str | None:
    if megatron.is_skipped(name):
        return None
    bare = megatron.strip_prefix(name)
    match = _LAYER_NAME.match(bare)
    if match and match.group(2) in _LAYER:
        return f"model.layers.{match.group(1)}.{_LAYER[match.group(2)]}"
    if bare in _GLOBAL:
        return _GLOBAL[bare]
    raise CheckpointError(f"checkpoint tensor {name!r} is not part of a Nemotron-H model (unknown Megatron name)")


def expected_hf_shapes(config: NemotronHConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = NemotronHForCausalLM(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def megatron_to_hf(tensors: Iterable[tuple[str, Tensor]], config: NemotronHConfig,
                   dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """Megatron (name, tensor) pairs -> our state dict, every tensor checked against the config."""
    expected = expected_hf_shapes(config)
    qkv_shape = ((config.num_heads + 2 * config.num_kv_heads) * config.head_dim, config.hidden_size)
    out: dict[str, Tensor] = {}
    for name, tensor in tensors:
        hf_name = to_hf_name(name)
        if hf_name is None:
            continue
        tensor = tensor if dtype is None else tensor.to(dtype)
        if hf_name.endswith(_QKV):
            _check(name, tensor, qkv_shape)
            stem = hf_name.removesuffix(_QKV)
            parts = list(zip((f"{stem}mixer.{p}_proj.weight" for p in "qkv"), megatron.split_qkv(tensor, config)))
        else:
            parts = [(hf_name, tensor)]
        megatron.place_parts(out, expected, name, parts, f"layer pattern {config.pattern}", _check)
    megatron.require_all(out, expected, lambda hf_name: to_megatron_name(hf_name, config))
    return out


def to_megatron_name(hf_name: str, config: NemotronHConfig) -> str:
    for megatron_name, name in _GLOBAL.items():
        if name == hf_name:
            return megatron_name
    match = re.match(r"^model\.layers\.(\d+)\.(.+)$", hf_name)
    if match is None:
        raise CheckpointError(f"tensor {hf_name!r} is not part of a Nemotron-H model")
    layer, suffix = int(match.group(1)), match.group(2)
    if suffix == "norm.weight":
        megatron_suffix = _NORM_OF.get(config.layer_types[layer], "mlp.linear_fc1.layer_norm_weight")
    elif suffix in ("mixer.q_proj.weight", "mixer.k_proj.weight", "mixer.v_proj.weight"):
        megatron_suffix = "self_attention.linear_qkv.weight"
    else:
        megatron_suffix = next((m for m, h in _LAYER.items() if h == suffix), None)
        if megatron_suffix is None:
            raise CheckpointError(f"tensor {hf_name!r} is not part of a Nemotron-H model")
    return f"decoder.layers.{layer}.{megatron_suffix}"


def hf_to_megatron(state_dict: dict[str, Tensor], config: NemotronHConfig, prefix: str = "model.") -> dict[str, Tensor]:
    """Our (or transformers') state dict -> megatron-core MambaModel names, QKV fused per KV group."""
    out: dict[str, Tensor] = {}
    for hf_name, tensor in state_dict.items():
        if hf_name.endswith(("mixer.k_proj.weight", "mixer.v_proj.weight")):
            continue
        if hf_name.endswith("mixer.q_proj.weight"):
            stem = hf_name.removesuffix("q_proj.weight")
            tensor = megatron.fuse_qkv(tensor, state_dict[stem + "k_proj.weight"], state_dict[stem + "v_proj.weight"],
                                       config)
        out[prefix + to_megatron_name(hf_name, config)] = tensor
    return out


def check_layers(shapes: dict[str, tuple[int, ...]], config: NemotronHConfig, origin: str) -> None:
    stored = {megatron.layer_index(name) for name in shapes} - {None}
    if len(stored) != config.num_layers or (stored and max(stored) != config.num_layers - 1):
        raise CheckpointError(f"{origin}: model_config.yaml's hybrid_override_pattern has {config.num_layers} "
                              f"layers, the weights hold {len(stored)}")


def _check(name: str, tensor: Tensor, expected: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise CheckpointError(f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)}, "
                              f"the config expects {tuple(expected)}")
