"""Pipeline parallelism: each stage keeps a contiguous block of layers, activations go point to point.

`pipeline_stage` is a transform over the unchanged model: the stage keeps its layers (renumbered
0..n-1, so its KV pool, sized with `ParallelLayout.local_config`, holds only them), the embedding
stays on the first stage and the final norm and head on the last; elsewhere they become
`nn.Identity`, so `model.model(x, positions, cache)` runs any stage: x is token ids (B, T) on the
first stage and hidden states (B, T, H) on the others.

`pipeline_forward` runs a list of micro-batches through the stages with several in flight: a stage
sends a micro-batch's output without waiting (isend) and starts the next one while the following
stage works on it. Over one call each stage idles `bubble_fraction(pp, m)` = (pp - 1) / (m + pp - 1)
of the time (`StageTimes` measures it); splitting a decode step's sequences into m micro-batches
(each with its own KV-cache layout, set by `MicroBatch.prepare`) shrinks it.
With TP inside a stage every TP rank holds the same (replicated) activations and sends them to the
same TP rank of the next stage.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from nemotron.model.nemotron import AttentionCache
from nemotron.parallel.layout import ParallelLayout
from nemotron.parallel.tensor import full_config, set_local_config


def pipeline_stage(model: nn.Module, layout: ParallelLayout) -> nn.Module:
    """In place: keep this rank's stage of `model` (works on the meta device too). Apply before
    `tensor_parallel`."""
    config = full_config(model)
    if layout.pp == 1:
        return model
    layout.check(config)
    keep = layout.stage_layers(config.num_layers)
    inner = model.model
    inner.layers = nn.ModuleList(inner.layers[i] for i in keep)
    for local, layer in enumerate(inner.layers):
        layer.self_attn.layer_idx = local  # the stage's KV pool holds its layers only
    if not layout.is_first_stage:
        inner.embed_tokens = nn.Identity()
    if not layout.is_last_stage:
        inner.norm = nn.Identity()
        for head in ("lm_head", "rm_head"):
            if hasattr(model, head):
                setattr(model, head, nn.Identity())
    set_local_config(model, layout)
    return model


def global_layer_name(name: str, layout: ParallelLayout, num_layers: int) -> str:
    """A stage-local state-dict name (`model.layers.<local>.…`) -> the checkpoint's global name."""
    if not name.startswith("model.layers."):
        return name
    local, rest = name.removeprefix("model.layers.").split(".", 1)
    return f"model.layers.{layout.stage_layers(num_layers).start + int(local)}.{rest}"


@dataclass(slots=True)
class MicroBatch:
    """One micro-batch as every rank sees it: positions (B, T) everywhere, input_ids (B, T) on the
    first stage (others may pass None); `prepare` runs before this micro-batch's layers on each stage
    (e.g. `lambda: kv_cache.use(batch_layout)`), `cache` is handed to the attention layers."""
    positions: Tensor
    input_ids: Tensor | None = None
    cache: AttentionCache | None = None
    prepare: Callable[[], None] | None = None


@dataclass(slots=True)
class StageTimes:
    """Measured on one rank over consecutive pipeline_forward calls: seconds computing this stage's
    layers vs the span from the first call's start to the last call's end. The span includes the waits
    between calls (a first stage idles after its last micro-batch until the next step's plan), so
    over back-to-back steps `bubble` is the share of time the stage sat idle. `reset()` between runs."""
    busy: float = 0.0
    first_start: float | None = None
    last_end: float = 0.0

    @property
    def wall(self) -> float:
        return 0.0 if self.first_start is None else self.last_end - self.first_start

    @property
    def bubble(self) -> float:
        return 0.0 if self.wall <= 0 else 1.0 - self.busy / self.wall

    def reset(self) -> None:
        self.busy, self.first_start, self.last_end = 0.0, None, 0.0


def bubble_fraction(pp: int, micro_batches: int) -> float:
    """Idle share of each stage when m micro-batches cross pp stages once: (pp - 1) / (m + pp - 1)."""
    if pp < 1 or micro_batches < 1:
        raise ValueError("pp and micro_batches must be positive")
    return (pp - 1) / (micro_batches + pp - 1)


@torch.no_grad()
def pipeline_forward(model: nn.Module, layout: ParallelLayout, batches: list[MicroBatch],
                     times: StageTimes | None = None) -> list[Tensor | None]:
    """Every rank calls this with the same micro-batches, in the same order. Returns each micro-
    batch's final-normed hidden states (B, T, H) on the last stage, None on the others."""
    start, busy = time.perf_counter(), 0.0
    dtype = activation_dtype(model)
    sends, outputs = [], []
    for batch in batches:
        b, t = batch.positions.shape
        if layout.is_first_stage:
            x = batch.input_ids
        else:
            x = torch.empty((b, t, full_config(model).hidden_size), dtype=dtype, device=batch.positions.device)
            dist.recv(x, src=layout.prev_rank)
        began = time.perf_counter()
        if batch.prepare is not None:
            batch.prepare()
        hidden = model.model(x, batch.positions, batch.cache)  # (B, T, H)
        if times is not None and hidden.is_cuda:
            torch.cuda.current_stream().synchronize()  # busy time, not launch time
        busy += time.perf_counter() - began
        if layout.is_last_stage:
            outputs.append(hidden)
        else:
            hidden = hidden.contiguous()  # kept referenced until its send completes
            sends.append((dist.isend(hidden, dst=layout.next_rank), hidden))
            outputs.append(None)
    for work, _ in sends:
        work.wait()
    if times is not None:
        times.busy += busy
        times.first_start = start if times.first_start is None else times.first_start
        times.last_end = time.perf_counter()
    return outputs


def activation_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the hidden states between layers (the norms' parameters are never quantized)."""
    return model.model.layers[0].input_layernorm.weight.dtype


def result_to_rank0(result: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype,
                   layout: ParallelLayout, device: torch.device | str = "cpu") -> Tensor | None:
    """Bring a last-stage result (logits of the sampled rows, reward scores) to global rank 0.

    Call on every rank: the last stage's tp rank 0 passes its `result`, everyone else None; rank 0
    gets the tensor back, the other ranks None. No communication when rank 0 computed it itself."""
    sender = layout.last_stage_rank0
    if sender == 0:
        return result if layout.rank == 0 else None
    if layout.rank == sender:
        dist.send(result.contiguous(), dst=0)
    elif layout.rank == 0:
        out = torch.empty(shape, dtype=dtype, device=device)
        dist.recv(out, src=sender)
        return out
    return None
