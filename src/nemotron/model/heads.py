"""Changing a model's head: a reward model (Nemotron-4 340B Reward shape) from a language model's trunk,
optionally deepened by identity-initialised decoder layers on top."""
from __future__ import annotations

import copy

import torch
from torch import nn

from nemotron.model.config import REWARD_ATTRIBUTES
from nemotron.model.nemotron import NemotronForCausalLM, NemotronForRewardModel, NemotronLike


def reward_model_from(model: nn.Module, num_attributes: int = len(REWARD_ATTRIBUTES)) -> NemotronForRewardModel:
    """A reward model sharing `model`'s trunk; a language model's output layer is dropped and the
    new head starts at zero (every score 0 until trained). A reward model is returned as it is."""
    if isinstance(model, NemotronForRewardModel):
        return model
    if not isinstance(model, NemotronForCausalLM):
        raise TypeError(f"cannot make a reward model from {type(model).__name__}")
    config = model.config.replace(num_reward_attributes=num_attributes, reward_head_bias=True)
    with torch.device("meta"):
        reward = NemotronForRewardModel(config)
    reward.model = model.model  # the trained trunk, not a copy
    weight = model.lm_head.weight
    reward.rm_head = nn.Linear(config.hidden_size, num_attributes, bias=True, device=weight.device, dtype=weight.dtype)
    nn.init.zeros_(reward.rm_head.weight)
    nn.init.zeros_(reward.rm_head.bias)
    return reward


def add_identity_layers(model: NemotronLike, count: int) -> NemotronLike:
    """Append `count` decoder layers, each a copy of the last one with its attention output and MLP
    down projections zeroed (block expansion, as LLaMA Pro grows a model): every new layer adds
    nothing to the residual stream, so the model computes exactly what it did, and training can
    give the new layers a job the trunk's own layers do not do. For a reward model trained from a
    language model: the top layers can compare a reply with the trunk's own finished next-token
    predictions, which only the last layer's output holds."""
    if count < 0:
        raise ValueError(f"cannot add {count} layers")
    if count == 0:
        return model
    trunk = model.model
    for _ in range(count):
        layer = copy.deepcopy(trunk.layers[-1])
        layer.self_attn.layer_idx = len(trunk.layers)
        with torch.no_grad():
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        trunk.layers.append(layer)
    config = model.config.replace(num_layers=len(trunk.layers))
    model.config = trunk.config = config
    return model
