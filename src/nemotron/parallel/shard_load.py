"""Load one rank's shard of a model straight from the checkpoint files.

The model is built on the meta device, cut to this rank's pipeline stage, then `tensor_parallel`
fills it: each parameter is read as the slice the rank holds (safetensors `get_slice`; NeMo
per-rank files, zarr chunks or torch_dist regions, see `checkpoint/megatron_slices.py`), cast and
moved to the device before the next one is read. Peak host memory is the rank's shard plus one
tensor slice; no rank ever holds a whole sharded tensor.
"""
from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from nemotron.checkpoint import hf
from nemotron.checkpoint.load import (DTYPES, LoadedModel, SourceKind, _optional_tokenizer, load_config, parse_dtype,
                                      resolve)
from nemotron.errors import CheckpointError, ConfigError
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import build_model
from nemotron.model.nemotron_h_config import NO_MODEL_PARALLEL, NemotronHConfig
from nemotron.model.presets import get_preset
from nemotron.parallel.layout import ParallelLayout
from nemotron.parallel.pipeline import global_layer_name, pipeline_stage
from nemotron.parallel.tensor import Shard, tensor_parallel


class SliceSource(Protocol):
    """Stored tensors by Hugging Face name (global layer numbers), read in parts."""

    def shape(self, name: str) -> tuple[int, ...]: ...

    def read(self, name: str, rows: tuple[tuple[int, int], ...] | None = None,
             cols: tuple[int, int] | None = None) -> Tensor: ...


def load_sharded(spec: str | Path, layout: ParallelLayout, *, dtype: str | torch.dtype | None = None,
                 device: str | torch.device = "cpu", trust_pickle: bool = False, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> LoadedModel:
    """This rank's part of the model named by `spec` (HF directory, .nemo file or directory, preset),
    for `layout`. Every rank calls it; no communication happens while loading. `progress(done, total)`
    is called after each tensor."""
    source = resolve(spec)
    torch_dtype = parse_dtype(dtype)
    if isinstance(load_config(spec, trust_pickle), NemotronHConfig):
        raise ConfigError(NO_MODEL_PARALLEL)
    if source.kind is SourceKind.NEMO:
        from nemotron.checkpoint.megatron_slices import open_nemo_slices

        with open_nemo_slices(source.path, trust_pickle, (layout.tp_rank, layout.stage)) as (config, reader, tokenizer):
            model = shard_model(config, layout, reader, torch_dtype or DTYPES[config.torch_dtype], device,
                                source.spec, progress)
        return LoadedModel(model.eval(), config, tokenizer, source)
    if source.kind is SourceKind.HF_DIR:
        config = ModelConfig.from_json_file(source.path / "config.json")
        reader: SliceSource = hf.SliceReader(source.path, trust_pickle)
        tokenizer = _optional_tokenizer(source.path)
    else:
        config, tokenizer = get_preset(source.spec), None
        reader = RandomSource(config, seed)
        if layout.rank == 0:
            print(f"WARNING: {source.spec} is a preset: the model has RANDOM weights and produces noise",
                  file=sys.stderr)
    model = shard_model(config, layout, reader, torch_dtype or DTYPES[config.torch_dtype], device, source.spec,
                        progress)
    return LoadedModel(model.eval(), config, tokenizer, source)


def shard_model(config: ModelConfig, layout: ParallelLayout, reader: SliceSource, dtype: torch.dtype,
                device: str | torch.device, origin: str,
                progress: Callable[[int, int], None] | None = None) -> torch.nn.Module:
    """Build on meta, keep this rank's stage, fill its tensor-parallel shard from `reader`."""
    layout.check(config)
    with torch.device("meta"):
        model = build_model(config)
    stored_as_is: set[str] = set()
    if config.quantization is not None:
        from nemotron.quant.transform import place_empty_quantized

        stored_as_is = place_empty_quantized(model, config.quantization, config.quantized_lm_head, device)
    pipeline_stage(model, layout)
    expected = {name: (tuple(t.shape), t.dtype) for name, t in model.state_dict().items()}

    done = 0

    def read(name: str, shard: Shard) -> Tensor:
        nonlocal done
        tensor = read_one(name, shard)
        done += 1
        if progress is not None:
            progress(done, len(expected))
        return tensor

    def read_one(name: str, shard: Shard) -> Tensor:
        stored = global_layer_name(name, layout, config.num_layers)
        shape, want = expected[name]
        if tuple(reader.shape(stored)) != shape:
            raise CheckpointError(f"{origin}: tensor {stored!r} has shape {tuple(reader.shape(stored))}, "
                                  f"the configuration expects {shape}")
        tensor = reader.read(stored, shard.rows, shard.cols)
        if shard.pad_rows:
            tensor = torch.cat([tensor, tensor.new_zeros((shard.pad_rows, *tensor.shape[1:]))])
        if name in stored_as_is:
            if tensor.dtype != want:
                raise CheckpointError(f"{origin}: tensor {stored!r} is {tensor.dtype}; the {config.quantization} "
                                      f"scheme stores {want}")
            return tensor.to(device)
        return tensor.to(device=device, dtype=dtype)

    tensor_parallel(model, layout, read)
    if config.quantization is not None:
        from nemotron.quant.transform import fuse_quantized_qkv

        fuse_quantized_qkv(model)
    return model


def shard_bytes(model: torch.nn.Module) -> int:
    """Bytes of parameters and buffers this rank holds."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


class RandomSource:
    """Random weights for a preset, the same on every rank for a given (seed, name): each tensor is
    made whole (one at a time) and sliced, so every layout holds slices of the same model."""

    def __init__(self, config: ModelConfig, seed: int) -> None:
        with torch.device("meta"):
            self._shapes = {n: tuple(t.shape) for n, t in build_model(config).state_dict().items()}
        self.seed = seed

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def read(self, name, rows=None, cols=None) -> Tensor:
        shape = self._shapes[name]
        if name.endswith(("norm.weight", ".bias")):
            whole = torch.zeros(shape)
        else:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()))
            whole = torch.randn(shape, generator=generator) * 0.02
        return Shard(rows, cols).take(whole)
