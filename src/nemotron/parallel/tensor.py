"""Tensor parallelism as a transform over the unchanged model (Megatron-LM's scheme).

- q/k/v (or the fused qkv) and up_proj are column-parallel: each rank keeps the output rows of its
  heads / FFN slice, and its attention module runs with the local head counts;
- o_proj and down_proj are row-parallel: each rank keeps the matching input columns, and a forward
  hook sums the partial outputs over the TP group: exactly one all-reduce per sublayer, two per layer;
- with more ranks than KV heads, ranks sharing a KV head hold a replica of it (TP 16 over 8 heads);
- the embedding is vocabulary-parallel (ids outside the rank's rows give zeros, then an all-reduce);
  the LM head is vocabulary-parallel too, and gathers the logits of the rows it is given (the runner
  only passes the rows it samples, so that is one gather per step);
- norms and the reward head (tiny) are replicated.
Quantized linears (quant/) shard with their scales: every buffer is indexed by output channel first,
and input columns map onto int4's packed bytes and group scales.

Parameter names do not change, so a plan keyed by state-dict name says which slice of each stored
tensor a rank reads (`shard_plan`), and the same transform shards a model in memory or fills a model
built on the meta device straight from checkpoint slices (`nemotron.parallel.shard_load`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from nemotron.errors import ConfigError
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import NemotronAttention, NemotronDecoderLayer, NemotronMLP
from nemotron.parallel.layout import ParallelLayout
from nemotron.quant.linear import Int4Linear, Int8Linear, QuantizedLinear, int8_linear

Ranges = tuple[tuple[int, int], ...]


@dataclass(slots=True, frozen=True)
class Shard:
    """The part of a stored (unsharded) tensor that one rank holds: rows `rows` of dim 0
    (concatenated in order; None = all), columns `cols` of dim 1 (None = all), then `pad_rows` zero
    rows (the last rank of a vocabulary not divisible by tp)."""
    rows: Ranges | None = None
    cols: tuple[int, int] | None = None
    pad_rows: int = 0

    def take(self, tensor: Tensor) -> Tensor:
        """This shard of a whole tensor (a fresh copy, so the whole one can be freed)."""
        if self.cols is not None:
            tensor = tensor[:, self.cols[0]:self.cols[1]]
        parts = [tensor] if self.rows is None else [tensor[a:b] for a, b in self.rows]
        if self.pad_rows:
            parts.append(tensor.new_zeros((self.pad_rows, *tensor.shape[1:])))
        if len(parts) > 1:
            return torch.cat(parts)
        return parts[0].clone(memory_format=torch.contiguous_format)

    def shape(self, full: tuple[int, ...]) -> tuple[int, ...]:
        shape = list(full)
        if self.rows is not None:
            shape[0] = sum(b - a for a, b in self.rows)
        shape[0] += self.pad_rows
        if self.cols is not None:
            shape[1] = self.cols[1] - self.cols[0]
        return tuple(shape)


REPLICATED = Shard()


# ---- the plan ---------------------------------------------------------------------------------
def shard_plan(model: nn.Module, layout: ParallelLayout) -> dict[str, Shard]:
    """State-dict name -> the Shard this rank holds, for every tensor of `model` (unsharded; it may
    live on the meta device, be a pipeline stage, have fused or quantized projections)."""
    config = full_config(model)
    layout.check(config)
    plan = {name: REPLICATED for name in model.state_dict()}
    if layout.tp == 1:
        return plan
    d = config.head_dim
    q = _scaled(layout.query_heads(config), d)
    kv = _scaled(layout.kv_heads(config), d)
    ffn = layout.ffn_rows(config)
    for prefix, module in model.named_modules():
        if isinstance(module, NemotronAttention):
            hq, hkv = config.num_heads * d, config.num_kv_heads * d
            columns = {"q_proj": (q,), "k_proj": (kv,), "v_proj": (kv,),
                       "qkv_proj": (q, (kv[0] + hq, kv[1] + hq), (kv[0] + hq + hkv, kv[1] + hq + hkv))}
            for name, rows in columns.items():
                if getattr(module, name) is not None:
                    plan.update(_column(f"{prefix}.{name}", getattr(module, name), rows))
            plan.update(_row(f"{prefix}.o_proj", module.o_proj, q))
        elif isinstance(module, NemotronMLP):
            plan.update(_column(f"{prefix}.up_proj", module.up_proj, ((ffn.start, ffn.stop),)))
            plan.update(_row(f"{prefix}.down_proj", module.down_proj, (ffn.start, ffn.stop)))
    start, stop, per_rank = layout.vocab_rows(config.vocab_size)
    vocab = Shard(((start, stop),), None, per_rank - (stop - start))
    for name in ("model.embed_tokens.weight", "lm_head.weight", "lm_head.weight_scale"):  # (an int8 head's scales)
        if name in plan:
            plan[name] = vocab
    return plan


def _scaled(heads: range, d: int) -> tuple[int, int]:
    return heads.start * d, heads.stop * d


def _column(prefix: str, module: nn.Module, rows: Ranges) -> dict[str, Shard]:
    """Output rows of a linear layer: the same rows of every tensor it holds (weights and scales)."""
    return {f"{prefix}.{name}": Shard(rows) for name in module.state_dict()}


def _row(prefix: str, module: nn.Module, cols: tuple[int, int]) -> dict[str, Shard]:
    """Input columns [a, b) of a linear layer, in each stored tensor's own units."""
    a, b = cols
    if isinstance(module, Int4Linear):  # two columns per packed byte, one scale per group of columns
        group = module.group_size
        if a % group or b % group:
            raise ConfigError(f"int4 row-parallel layers need {group}-aligned shards; {prefix} would be "
                              f"cut at input columns {a}..{b}")
        return {f"{prefix}.weight_packed": Shard(cols=(a // 2, b // 2)),
                f"{prefix}.weight_scale": Shard(cols=(a // group, b // group))}
    plan = {f"{prefix}.weight": Shard(cols=cols)}
    if isinstance(module, QuantizedLinear):  # int8 / fp8: one scale per output channel, whole on every rank
        plan[f"{prefix}.weight_scale"] = REPLICATED
    return plan


# ---- the transform ----------------------------------------------------------------------------
Reader = Callable[[str, Shard], Tensor]


@torch.no_grad()
def tensor_parallel(model: nn.Module, layout: ParallelLayout, read: Reader | None = None) -> nn.Module:
    """In place: shard `model` for this rank. `read(name, shard)` returns the shard of the stored
    tensor `name`; by default it is sliced from the model's own (whole) tensors. Tensors a plan
    marks replicated are read whole. Every rank of the TP group must apply the same transform."""
    if getattr(model, "is_tensor_parallel", False):
        raise ValueError("the model is already tensor-parallel")
    plan = shard_plan(model, layout)
    config = full_config(model)
    if read is not None or layout.tp > 1:
        if read is None:
            whole = model.state_dict()
            read = lambda name, shard: shard.take(whole[name])  # noqa: E731
        if layout.tp > 1:
            _restructure(model, layout, config)
        for name, shard in plan.items():
            _assign(model, name, read(name, shard))
    model.is_tensor_parallel = layout.tp > 1
    set_local_config(model, layout)
    return model


def full_config(model: nn.Module) -> ModelConfig:
    """The whole model's config, also after the parallel transforms replaced `model.config`."""
    return getattr(model, "full_config", None) or model.config


def set_local_config(model: nn.Module, layout: ParallelLayout) -> None:
    """After a parallel transform, `model.config` describes what this rank computes (its stage's layers,
    its heads: `layout.local_config`), so the engine sizes its KV pool from it unchanged; the whole
    model's config stays in `model.full_config`, the layout in `model.parallel_layout`."""
    config = full_config(model)
    model.full_config, model.parallel_layout = config, layout
    model.config = model.model.config = layout.local_config(config)


def _restructure(model: nn.Module, layout: ParallelLayout, config: ModelConfig) -> None:
    group = layout.tp_group
    for module in model.modules():
        if isinstance(module, NemotronAttention):
            module.num_heads = len(layout.query_heads(config))
            module.num_kv_heads = len(layout.kv_heads(config))
            module.o_proj.register_forward_hook(_all_reduce_hook(group))
        elif isinstance(module, NemotronDecoderLayer):
            module.mlp.down_proj.register_forward_hook(_all_reduce_hook(group))
    inner = model.model
    start, stop, per_rank = layout.vocab_rows(config.vocab_size)
    if isinstance(inner.embed_tokens, nn.Embedding):
        inner.embed_tokens = VocabParallelEmbedding(start, stop, group)
    head = getattr(model, "lm_head", None)
    if isinstance(head, (nn.Linear, Int8Linear)):
        model.lm_head = VocabParallelHead(config.vocab_size, group, quantized=isinstance(head, Int8Linear))


def _assign(model: nn.Module, name: str, tensor: Tensor) -> None:
    """Put `tensor` in place of parameter/buffer `name`, updating a linear layer's feature counts."""
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    if attr in owner._parameters:
        owner._parameters[attr] = nn.Parameter(tensor, requires_grad=False)
    elif attr in owner._buffers:
        owner._buffers[attr] = tensor
    else:
        raise KeyError(f"{name} is neither a parameter nor a buffer")
    if attr in ("weight", "weight_packed") and hasattr(owner, "out_features"):
        owner.out_features = tensor.shape[0]
        owner.in_features = tensor.shape[1] * (2 if attr == "weight_packed" else 1)


def _all_reduce_hook(group: dist.ProcessGroup | None):
    def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        dist.all_reduce(output, group=group)  # partial sums of a row-parallel layer -> full output
        return output
    return hook


class VocabParallelEmbedding(nn.Module):
    """Rows start..stop of the embedding (padded to the same count on every rank); ids outside
    give zeros, and the all-reduce fills each row from the rank that holds it."""

    def __init__(self, start: int, stop: int, group: dist.ProcessGroup | None) -> None:
        super().__init__()
        self.start, self.stop, self.group = start, stop, group
        self.weight = nn.Parameter(torch.empty(0), requires_grad=False)  # assigned by tensor_parallel

    def forward(self, input_ids: Tensor) -> Tensor:
        outside = (input_ids < self.start) | (input_ids >= self.stop)
        local = (input_ids - self.start).masked_fill(outside, 0)
        x = F.embedding(local, self.weight).masked_fill_(outside[..., None], 0)  # (B, T, H)
        dist.all_reduce(x, group=self.group)
        return x


class VocabParallelHead(nn.Module):
    """The LM head's rows of this rank's vocabulary partition, in the compute dtype or `quantized`
    (int8 rows and their scales, as Int8Linear holds them). Forward gathers the full logits of the
    given rows: on every rank (dst None) or only on group rank `dst` (the others get None)."""

    def __init__(self, vocab_size: int, group: dist.ProcessGroup | None, dst: int | None = None,
                 quantized: bool = False) -> None:
        super().__init__()
        self.vocab_size, self.group, self.dst = vocab_size, group, dst
        if quantized:  # buffers, as Int8Linear's: assigned by tensor_parallel
            self.register_buffer("weight", torch.empty(0, dtype=torch.int8))
            self.register_buffer("weight_scale", torch.empty(0))
        else:
            self.weight = nn.Parameter(torch.empty(0), requires_grad=False)  # assigned by tensor_parallel
            self.weight_scale = None

    def forward(self, hidden: Tensor) -> Tensor | None:
        if self.weight_scale is None:
            local = F.linear(hidden, self.weight).contiguous()  # (..., V / tp)
        else:
            local = int8_linear(hidden, self.weight, self.weight_scale).contiguous()
        world = dist.get_world_size(self.group)
        parts = [torch.empty_like(local) for _ in range(world)]
        if self.dst is None:
            dist.all_gather(parts, local, group=self.group)
        else:
            me = dist.get_rank(self.group)
            dist.gather(local, parts if me == self.dst else None, group_dst=self.dst, group=self.group)
            if me != self.dst:
                return None
        return torch.cat(parts, dim=-1)[..., :self.vocab_size]  # (..., V): padding rows dropped
