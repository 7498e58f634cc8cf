"""LoRA as a transform over the unchanged model: chosen linear layers gain a trainable low-rank
update, y = x Wᵀ + s · (x Aᵀ) Bᵀ with s = alpha / r, while W stays frozen.

Parameter names follow PEFT (`...q_proj.lora_A.weight`, `...q_proj.lora_B.weight` beside the
untouched `...q_proj.weight`), so adapters convert to and from PEFT's files by a prefix alone
(checkpoint/peft.py). Initialisation as PEFT's default: A Kaiming-uniform, B zero, so the model
is unchanged until the first step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nemotron.errors import ConfigError
from nemotron.model.nemotron import replace_modules

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")


@dataclass(slots=True, frozen=True)
class LoraConfig:
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = TARGETS  # linear layers by their last name component
    trainable_heads: tuple[str, ...] = ()  # whole modules trained beside the adapters (a new rm_head)
    use_rslora: bool = False  # scale by alpha / sqrt(r) (rank-stabilised LoRA) instead of alpha / r

    def __post_init__(self) -> None:
        if self.r <= 0 or self.alpha <= 0:
            raise ConfigError(f"LoraConfig.r and alpha must be positive, got r={self.r}, alpha={self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"LoraConfig.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("LoraConfig.target_modules is empty")

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


class LoraLinear(nn.Linear):
    """An nn.Linear (same `weight`, frozen) with a low-rank update beside it."""

    def __init__(self, base: nn.Linear, config: LoraConfig) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.weight.requires_grad_(False)
        self.register_parameter("bias", base.bias)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Linear(self.in_features, config.r, bias=False, **factory)
        self.lora_B = nn.Linear(config.r, self.out_features, bias=False, **factory)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.lora_dropout = nn.Dropout(config.dropout) if config.dropout else nn.Identity()
        self.scaling = config.scaling

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain nn.Linear holding W + s·BA (computed in fp32, stored in W's dtype)."""
        delta = (self.lora_B.weight.float() @ self.lora_A.weight.float()) * self.scaling
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        linear.weight.copy_((self.weight.float() + delta).to(self.weight.dtype))
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear


def apply_lora(model: nn.Module, config: LoraConfig) -> nn.Module:
    """Freeze `model` and wrap its target linears in place; returns the model. Only the adapters
    (and `trainable_heads`) require grad afterwards."""
    model.requires_grad_(False)
    found = replace_modules(model, lambda name, module: LoraLinear(module, config)
                            if name in config.target_modules and type(module) is nn.Linear else None)
    if not found:
        raise ConfigError(f"no linear layer named any of {', '.join(config.target_modules)} to adapt; "
                          "did fuse_qkv or quantization run first?")
    for head in config.trainable_heads:
        getattr(model, head).requires_grad_(True)
    model.lora_config = config  # what checkpoints and adapter files record
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (inference transform): plain nn.Linear layers again."""
    replace_modules(model, lambda name, module: module.merged() if isinstance(module, LoraLinear) else None)
    if hasattr(model, "lora_config"):
        del model.lora_config
    return model


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoraLinear) for m in model.modules())


def adapter_state_dict(model: nn.Module, state: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """What a LoRA run trains: the adapters and any whole trainable heads, by parameter name
    (taken from `state` when given: the gathered full state of a sharded model)."""
    heads = model.lora_config.trainable_heads
    return {name: t for name, t in (model.state_dict() if state is None else state).items()
            if ".lora_A." in name or ".lora_B." in name or name.split(".")[0] in heads}
