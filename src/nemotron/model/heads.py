"""Changing a model's head: a reward model (Nemotron-4 340B Reward shape) from a language model's trunk."""
from __future__ import annotations

import torch
from torch import nn

from nemotron.model.config import REWARD_ATTRIBUTES
from nemotron.model.nemotron import NemotronForCausalLM, NemotronForRewardModel


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
