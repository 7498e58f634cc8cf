"""Data-parallel training with sharded parameters, gradients and optimizer state (FSDP2,
`torch.distributed.fsdp.fully_shard`), launched by torchrun:

    torchrun --nproc-per-node 8 -m nemotron train sft --model ... --data ... --out ...

Every rank builds the same global batch (batches are a pure function of the step) and trains on
its rows; objectives return each row's share of the *global* batch's loss, so gradients are summed
across ranks, not averaged, and the update equals a single process training on the whole batch.
NCCL on GPUs (one per rank, LOCAL_RANK), gloo on CPUs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


@dataclass(slots=True, frozen=True)
class DataParallel:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment(timeout_minutes: float = 30.0) -> DataParallel | None:
    """The data-parallel group torchrun set up (WORLD_SIZE > 1), or None for one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=timeout_minutes))
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    return DataParallel(dist.get_rank(), dist.get_world_size(), device)


def shard_model(model: nn.Module, parallel: DataParallel) -> nn.Module:
    """FSDP2 over each decoder layer and the whole model (embedding, final norm, head)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(parallel.device.type, (parallel.world_size,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in model.modules():
        if hasattr(module, "set_gradient_divide_factor"):
            module.set_gradient_divide_factor(1.0)  # each rank's loss is already its share: sum
            module.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no pre-multiplied sum)
    return model


def sum_across(values: dict[str, float], parallel: DataParallel | None) -> dict[str, float]:
    if parallel is None or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=parallel.device)
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist()))


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state dicts on the CPU (a collective: every rank calls it)."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                    optimizer_state: dict, strict: bool = True) -> None:
    """Full state dicts (every rank holds them) into the sharded model and optimizer; `strict`
    False for a LoRA adapter's weights, which leave the frozen base weights as they are."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, strict=strict)
    set_model_state_dict(model, model_state, options=options)
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
