from nemotron.model.config import REWARD_ATTRIBUTES, ModelConfig
from nemotron.model.nemotron import (
    NemotronForCausalLM,
    NemotronForRewardModel,
    NemotronModel,
    build_model,
    init_random_weights,
)
from nemotron.model.presets import PRESETS, get_preset

__all__ = [
    "REWARD_ATTRIBUTES", "ModelConfig", "NemotronForCausalLM", "NemotronForRewardModel", "NemotronModel",
    "build_model", "init_random_weights", "PRESETS", "get_preset",
]
