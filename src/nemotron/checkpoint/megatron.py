"""Megatron parameter names <-> our Hugging Face names, and the one real tensor fix-up: fused QKV.

Facts about the Megatron side (Megatron-LM / NeMo):
- mcore names live under `decoder.layers.N.`; legacy (pre-mcore, e.g. Nemotron-3 8B) names under
  `language_model.encoder.layers.N.`; NeMo adds a `model.` prefix to either.
- With Transformer Engine the attention norm is fused into linear_qkv and the MLP norm into linear_fc1.
- The fused QKV weight has (heads + 2 * groups) * head_dim rows grouped per KV group: for group g,
  its heads / groups query heads, then its key head, then its value head.
- LayerNorm1p weights are zero-centred in both formats, so norms copy unchanged.
- `_extra_state` (Transformer Engine FP8 metadata) and rotary `inv_freq` buffers are not weights.
- Under tensor parallelism, column-parallel weights are split on dim 0, row-parallel ones on dim 1.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from nemotron.errors import CheckpointError
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import build_model

# HF suffix standing for the fused QKV weight until split_qkv turns it into q/k/v_proj.
FUSED_QKV = "self_attn.qkv_proj.weight"

# Per-layer names: Megatron suffix -> HF suffix under `model.layers.N.`. Where two Megatron names
# map to one HF name (fused TE norm vs separate norm), the first is the one hf_to_megatron writes.
_MCORE_LAYER = {
    "self_attention.linear_qkv.weight": FUSED_QKV,
    "self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
    "self_attention.linear_qkv.layer_norm_bias": "input_layernorm.bias",
    "input_layernorm.weight": "input_layernorm.weight",
    "input_layernorm.bias": "input_layernorm.bias",
    "self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "mlp.linear_fc1.weight": "mlp.up_proj.weight",
    "mlp.linear_fc1.layer_norm_weight": "post_attention_layernorm.weight",
    "mlp.linear_fc1.layer_norm_bias": "post_attention_layernorm.bias",
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
    "pre_mlp_layernorm.bias": "post_attention_layernorm.bias",
    "mlp.linear_fc2.weight": "mlp.down_proj.weight",
}
_LEGACY_LAYER = {
    "input_layernorm.weight": "input_layernorm.weight",
    "input_layernorm.bias": "input_layernorm.bias",
    "self_attention.query_key_value.weight": FUSED_QKV,
    "self_attention.dense.weight": "self_attn.o_proj.weight",
    "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    "post_attention_layernorm.bias": "post_attention_layernorm.bias",
    "mlp.dense_h_to_4h.weight": "mlp.up_proj.weight",
    "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
}
_MCORE_GLOBAL = {
    "embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "decoder.final_layernorm.weight": "model.norm.weight",
    "decoder.final_layernorm.bias": "model.norm.bias",
    "output_layer.weight": "lm_head.weight",
    "rm_head.weight": "rm_head.weight",  # NeMo-Aligner reward head
    "rm_head.bias": "rm_head.bias",
}
_LEGACY_GLOBAL = {
    "language_model.embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "language_model.encoder.final_layernorm.weight": "model.norm.weight",
    "language_model.encoder.final_layernorm.bias": "model.norm.bias",
    "language_model.output_layer.weight": "lm_head.weight",
    "rm_head.weight": "rm_head.weight",
    "rm_head.bias": "rm_head.bias",
}
MCORE_LAYER_PREFIX = "decoder.layers."
LEGACY_LAYER_PREFIX = "language_model.encoder.layers."
_LAYER_NAME = re.compile(r"^(decoder\.layers|language_model\.encoder\.layers)\.(\d+)\.(.+)$")
_HF_LAYER_NAME = re.compile(r"^model\.layers\.(\d+)\.(.+)$")

_COLUMN_PARALLEL = ("linear_qkv.weight", "query_key_value.weight", "linear_fc1.weight", "dense_h_to_4h.weight",
                    "word_embeddings.weight", "output_layer.weight")
_ROW_PARALLEL = ("linear_proj.weight", "self_attention.dense.weight", "linear_fc2.weight", "dense_4h_to_h.weight",
                 "rm_head.weight")  # the reward head is a RowParallelLinear in NeMo-Aligner


def strip_prefix(name: str) -> str:
    return name.removeprefix("model.")


def is_skipped(name: str) -> bool:
    """Entries that are not weights: Transformer Engine FP8 metadata and rotary frequency buffers."""
    return name.endswith("_extra_state") or name.endswith("inv_freq")


def tp_split_dim(name: str) -> int | None:
    """Dimension a tensor-parallel rank's shard was cut along; None for replicated tensors (norms, biases)."""
    if name.endswith(_COLUMN_PARALLEL):
        return 0
    if name.endswith(_ROW_PARALLEL):
        return 1
    return None


def layer_index(name: str) -> int | None:
    match = _LAYER_NAME.match(strip_prefix(name))
    return int(match.group(2)) if match else None


def with_layer_index(name: str, index: int) -> str:
    """`decoder.layers.N.rest` with N replaced by index (pipeline stages number their layers locally)."""
    bare = strip_prefix(name)
    match = _LAYER_NAME.match(bare)
    if match is None:
        return name
    return f"{name[: len(name) - len(bare)]}{match.group(1)}.{index}.{match.group(3)}"


def to_hf_name(name: str) -> str | None:
    """Megatron name -> HF name (`model.layers.N.self_attn.qkv_proj.weight` for the fused QKV, which
    split_qkv resolves); None for entries that are not weights."""
    if is_skipped(name):
        return None
    bare = strip_prefix(name)
    match = _LAYER_NAME.match(bare)
    if match:
        table = _MCORE_LAYER if match.group(1) == "decoder.layers" else _LEGACY_LAYER
        suffix = table.get(match.group(3))
        if suffix is not None:
            return f"model.layers.{match.group(2)}.{suffix}"
    elif bare in _MCORE_GLOBAL or bare in _LEGACY_GLOBAL:
        return _MCORE_GLOBAL.get(bare) or _LEGACY_GLOBAL[bare]
    raise CheckpointError(f"checkpoint tensor {name!r} is not part of a Nemotron model (unknown Megatron name)")


def to_megatron_name(hf_name: str, legacy: bool = False) -> str:
    """HF name -> Megatron name; q/k/v_proj all map to the fused QKV weight."""
    match = _HF_LAYER_NAME.match(hf_name)
    if match:
        suffix = match.group(2)
        if suffix in ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"):
            suffix = FUSED_QKV
        table, prefix = (_LEGACY_LAYER, LEGACY_LAYER_PREFIX) if legacy else (_MCORE_LAYER, MCORE_LAYER_PREFIX)
        for megatron_suffix, hf_suffix in table.items():  # first match is the canonical spelling
            if hf_suffix == suffix:
                return f"{prefix}{match.group(1)}.{megatron_suffix}"
    else:
        for megatron_name, name in (_LEGACY_GLOBAL if legacy else _MCORE_GLOBAL).items():
            if name == hf_name:
                return megatron_name
    raise CheckpointError(f"tensor {hf_name!r} is not part of a Nemotron model (unknown Hugging Face name)")


# ---- fused QKV ------------------------------------------------------------------------------
def fused_qkv_shape(config: ModelConfig) -> tuple[int, int]:
    return ((config.num_heads + 2 * config.num_kv_heads) * config.head_dim, config.hidden_size)


def split_qkv(fused: Tensor, config: ModelConfig) -> tuple[Tensor, Tensor, Tensor]:
    """((heads + 2 groups) * D, H) grouped per KV group -> q (heads * D, H), k, v (groups * D, H)."""
    groups, per_group, d = config.num_kv_heads, config.kv_group_size, config.head_dim
    grouped = fused.reshape(groups, per_group + 2, d, fused.shape[-1])  # (G, r + 2, D, H)
    # clone: fresh storage, so dropping the fused tensor frees it and q/k/v never alias each other
    q, k, v = (grouped[:, part].clone(memory_format=torch.contiguous_format).view(-1, fused.shape[-1])
               for part in (slice(0, per_group), per_group, per_group + 1))
    return q, k, v


def fuse_qkv(q: Tensor, k: Tensor, v: Tensor, config: ModelConfig) -> Tensor:
    groups, per_group, d, h = config.num_kv_heads, config.kv_group_size, config.head_dim, q.shape[-1]
    parts = (q.view(groups, per_group, d, h), k.view(groups, 1, d, h), v.view(groups, 1, d, h))
    return torch.cat(parts, dim=1).view(-1, h)  # (G * (r + 2) * D, H)


# ---- whole state dicts ----------------------------------------------------------------------
def expected_hf_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only, nothing allocated
        model = build_model(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def megatron_to_hf(tensors: Iterable[tuple[str, Tensor]], config: ModelConfig,
                   dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """Megatron (name, tensor) pairs, pulled one at a time -> HF state dict checked against config."""
    expected = expected_hf_shapes(config)
    out: dict[str, Tensor] = {}
    legacy = False  # only to name missing tensors the way this checkpoint spells them
    for name, tensor in tensors:
        hf_name = to_hf_name(name)
        if hf_name is None:
            continue
        legacy = legacy or "language_model." in name
        if hf_name == "lm_head.weight" and config.is_reward_model:
            continue  # NeMo-Aligner reward models keep the base model's unused output layer
        if hf_name.endswith(FUSED_QKV):
            _check_shape(name, tensor, fused_qkv_shape(config))
            stem = hf_name.removesuffix(FUSED_QKV)
            parts = zip((stem + f"self_attn.{p}_proj.weight" for p in "qkv"),
                        split_qkv(tensor if dtype is None else tensor.to(dtype), config))
        else:
            if hf_name not in expected:
                raise CheckpointError(f"checkpoint tensor {name!r} ({hf_name}) does not fit the config "
                                      f"({config.num_layers} layers, reward head: {config.is_reward_model})")
            _check_shape(name, tensor, expected[hf_name])
            parts = [(hf_name, tensor if dtype is None else tensor.to(dtype))]
        del tensor  # the split copies are all that stays alive
        place_parts(out, expected, name, parts, f"{config.num_layers} layers")
    require_all(out, expected, lambda hf_name: to_megatron_name(hf_name, legacy))
    return out


def place_parts(out: dict[str, Tensor], expected: dict, name: str, parts: Iterable[tuple[str, Tensor]],
                config_summary: str, check: Callable[[str, Tensor, Any], None] | None = None) -> None:
    """Put the parts of checkpoint tensor `name` into `out` under our names: a part the config does not
    expect, or one seen twice, is an error; `check(name, part, expected[part_name])` checks its shape."""
    for part_name, part in parts:
        if part_name not in expected:
            raise CheckpointError(f"checkpoint tensor {name!r} ({part_name}) does not fit the config "
                                  f"({config_summary})")
        if check is not None:
            check(name, part, expected[part_name])
        if part_name in out:
            raise CheckpointError(f"checkpoint holds {part_name} twice (second time as {name!r})")
        out[part_name] = part


def require_all(out: dict[str, Tensor], expected: dict, checkpoint_name: Callable[[str], str]) -> None:
    """Every expected tensor arrived; else name the first missing one as the checkpoint spells it."""
    missing = [name for name in expected if name not in out]
    if missing:
        raise CheckpointError(f"checkpoint has no tensor {checkpoint_name(missing[0])!r} (for {missing[0]}); "
                              f"{len(missing)} tensor(s) missing in all")


def check_stored_shapes(shapes: dict[str, tuple[int, ...]], config: ModelConfig) -> None:
    """megatron_to_hf's shape checks on shapes alone, so a mismatch fails before any tensor is read."""
    expected = expected_hf_shapes(config)
    for name, shape in shapes.items():
        hf_name = to_hf_name(name)
        if hf_name is None or (hf_name == "lm_head.weight" and config.is_reward_model):
            continue
        if hf_name.endswith(FUSED_QKV):
            want = fused_qkv_shape(config)
        elif hf_name in expected:
            want = expected[hf_name]
        else:
            raise CheckpointError(f"checkpoint tensor {name!r} ({hf_name}) does not fit the config "
                                  f"({config.num_layers} layers, reward head: {config.is_reward_model})")
        if tuple(shape) != tuple(want):
            raise CheckpointError(f"checkpoint tensor {name!r} has shape {tuple(shape)}, the config expects {want}")


def hf_to_megatron(state_dict: dict[str, Tensor], config: ModelConfig, *, prefix: str = "model.",
                   legacy: bool = False) -> dict[str, Tensor]:
    """HF state dict -> Megatron names (mcore, or legacy), q/k/v fused; NeMo's `model.` prefix by default."""
    out: dict[str, Tensor] = {}
    for hf_name, tensor in state_dict.items():
        if hf_name.endswith(("self_attn.k_proj.weight", "self_attn.v_proj.weight")):
            continue  # fused with q_proj below
        if hf_name.endswith("self_attn.q_proj.weight"):
            stem = hf_name.removesuffix("q_proj.weight")
            try:
                tensor = fuse_qkv(tensor, state_dict[stem + "k_proj.weight"], state_dict[stem + "v_proj.weight"],
                                  config)
            except KeyError as err:
                raise CheckpointError(f"state dict has {hf_name} but no {err.args[0]}") from None
        out[prefix + to_megatron_name(hf_name, legacy)] = tensor
    return out


def _check_shape(name: str, tensor: Tensor, expected: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise CheckpointError(f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)}, "
                              f"the config expects {tuple(expected)}")


def stage_names(stages: Iterable[Iterable[str]], origin: str) -> Iterator[tuple[int, str, str]]:
    """(stage, name in that stage's files, name in the whole model) for the tensors of pipeline
    stages whose files number their layers from 0: each stage's layer indices are shifted by the
    layers of the stages before it. Skipped names are left out; a name held twice is an error."""
    seen: set[str] = set()
    offset = 0
    for stage, names in enumerate(stages):
        stage_layers = 0
        for name in names:
            if is_skipped(name):
                continue
            local = layer_index(name)
            global_name = name
            if local is not None:
                stage_layers = max(stage_layers, local + 1)
                global_name = with_layer_index(name, offset + local)
            if global_name in seen:
                raise CheckpointError(f"{origin}: pipeline stage {stage} holds {global_name!r} again")
            seen.add(global_name)
            yield stage, name, global_name
        offset += stage_layers
