"""The memory plan of Nemotron-H: weights of every layer type, KV over attention layers, Mamba state."""
from __future__ import annotations

import pytest
import torch

from nemotron.errors import ConfigError
from nemotron.memory import Precision, WeightBytes, plan
from nemotron.model.nemotron_h import NemotronHForCausalLM
from nemotron.model.presets import HYBRID_PRESETS


@pytest.mark.parametrize("name", sorted(HYBRID_PRESETS))
def test_weight_bytes_count_every_parameter_of_the_built_model_once(name):
    config = HYBRID_PRESETS[name]
    with torch.device("meta"):
        count = sum(p.numel() for p in NemotronHForCausalLM(config).parameters())
    assert WeightBytes.from_config(config, Precision("bf16")).total == 2 * count


def test_pipeline_stages_share_the_state_and_tp_splits_it():
    config = HYBRID_PRESETS["nemotron-h-56b"]
    weights = WeightBytes.from_config(config, Precision("bf16"))
    whole = plan(config, weights, batch=2).whole
    assert whole.mamba_state == 2 * config.mamba_state_bytes_per_sequence()
    split = plan(config, weights, batch=2, tp=2, pp=2).per_gpu
    assert whole.mamba_state / 4 <= split.mamba_state < whole.mamba_state / 2


def test_tp_must_divide_the_mamba_groups():
    config = HYBRID_PRESETS["nemotron-h-8b"]
    with pytest.raises(ConfigError, match="Mamba groups"):
        plan(config, WeightBytes.from_config(config, Precision("bf16")), tp=16)
