"""Checks before a model is built or converted, so an absurd or mismatched configuration fails in
milliseconds instead of allocating for minutes: the config against the checkpoint's tensor shapes
(read from headers), and the memory planner's weight figure against the device's free memory."""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

import torch

from nemotron.errors import CheckpointError
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron_h_config import NemotronHConfig

_HF_LAYER = re.compile(r"^(?:model\.|backbone\.)?layers\.(\d+)\.")  # backbone.: NVIDIA's Nemotron-H exports
_PLANNER_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def stored_layers(names: Iterable[str]) -> int:
    """Decoder layers a Hugging Face checkpoint holds tensors for (highest index + 1)."""
    indices = {int(m[1]) for m in map(_HF_LAYER.match, names) if m}
    return max(indices) + 1 if indices else 0


def check_layers(config: ModelConfig | NemotronHConfig, names: Iterable[str], origin: str) -> None:
    """Cheap, so a config claiming a billion layers fails before a model is even built on the meta device."""
    layers = stored_layers(names)
    if layers != config.num_layers:
        raise CheckpointError(f"{origin}: config.json declares num_hidden_layers {config.num_layers}, "
                              f"the weights hold {layers} layer(s)")


def check_hf_shapes(config: ModelConfig, shapes: Mapping[str, tuple[int, ...]], origin: str) -> None:
    """Every tensor the config implies is present with its shape, and nothing else; the layer count first."""
    check_layers(config, list(shapes), origin)
    if config.quantization is not None:  # quantized tensors are checked by the quantized modules
        return
    from nemotron.checkpoint.hf import normalise_name
    from nemotron.checkpoint.megatron import expected_hf_shapes

    expected = expected_hf_shapes(config)
    for raw_name, shape in shapes.items():
        name = normalise_name(raw_name)
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if name not in expected:
            raise CheckpointError(f"{origin}: tensor {raw_name!r} (shape {tuple(shape)}) has no place in a model "
                                  f"of this configuration")
        if tuple(shape) != expected[name]:
            raise CheckpointError(f"{origin}: tensor {raw_name!r} has shape {tuple(shape)}, "
                                  f"the configuration expects {expected[name]}")
    normalised = {normalise_name(n) for n in shapes}
    missing = [name for name in expected if name not in normalised]
    if missing:
        raise CheckpointError(f"{origin}: missing tensor {missing[0]} ({len(missing)} missing in all)")


def weight_bytes(config: ModelConfig | NemotronHConfig, dtype: torch.dtype) -> int:
    """The memory planner's weight figure (nemotron.memory). A Nemotron-4 config is planned for one
    layer and scaled, so an absurd layer count costs nothing to evaluate; Nemotron-H lists its layers
    one by one in its config, so it is planned as it stands."""
    from nemotron.memory.planner import Precision, WeightBytes

    if isinstance(config, NemotronHConfig):
        return int(WeightBytes.from_config(config, Precision(_PLANNER_DTYPES.get(dtype, "bf16"))).total)
    precision = Precision(_PLANNER_DTYPES.get(dtype, "bf16"), config.quantization, config.quantized_lm_head)
    one = WeightBytes.from_config(config.replace(num_layers=1), precision)
    return int(one.total + (config.num_layers - 1) * one.layers[0].total)


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """(bytes free, description) of a device, or None where it cannot be told."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return free, f"{device} has {free / 1e9:.1f} GB free of {total / 1e9:.1f} GB"
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as meminfo:
                fields = dict(line.split(":", 1) for line in meminfo)
            free = int(fields["MemAvailable"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            try:
                free = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError, AttributeError):
                return None
        return free, f"this machine has {free / 1e9:.1f} GB of memory available"
    return None


def check_fits(config: ModelConfig | NemotronHConfig, dtype: torch.dtype, device: str | torch.device, origin: str,
               force: bool = False) -> None:
    """Refuse to build a model whose weights cannot fit the device (`force` skips the check)."""
    if force:
        return
    from nemotron.memory.planner import RUNTIME_OVERHEAD_BYTES

    device = torch.device(device)
    memory = available_memory(device)
    if memory is None:
        return
    free, where = memory
    need = weight_bytes(config, dtype) + (RUNTIME_OVERHEAD_BYTES if device.type == "cuda" else 0)
    if need > free:
        raise CheckpointError(
            f"{origin}: the weights need {need / 1e9:,.1f} GB in {str(dtype).removeprefix('torch.')} "
            f"({config.num_parameters():,} parameters, by the memory planner) but {where}; "
            f"pass --force (force=True) to load anyway")
