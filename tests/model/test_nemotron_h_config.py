"""Nemotron-H config.json in its published spellings, validation, presets and the state formula."""
from __future__ import annotations

import pytest

from nemotron.errors import ConfigError
from nemotron.model.nemotron_h_config import NemotronHConfig
from nemotron.model.presets import get_preset

# nvidia/Nemotron-H-8B-Base-8K config.json as NVIDIA published it (remote-code era key names).
NEMOTRON_H_8B = {
    "architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h", "vocab_size": 131072,
    "hidden_size": 4096, "intermediate_size": 21504, "num_hidden_layers": 52,
    "hybrid_override_pattern": "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-",
    "num_attention_heads": 32, "num_key_value_heads": 8, "attention_head_dim": 128,
    "mamba_num_heads": 128, "mamba_head_dim": 64, "ssm_state_size": 128, "n_groups": 8, "conv_kernel": 4,
    "chunk_size": 128, "expand": 2, "use_conv_bias": True, "use_bias": False, "mamba_hidden_act": "silu",
    "mlp_hidden_act": "relu2", "layer_norm_epsilon": 1e-5, "max_position_embeddings": 8192,
    "time_step_min": 0.001, "time_step_max": 0.1, "time_step_limit": [0.0, float("inf")],
    "residual_in_fp32": False, "rescale_prenorm_residual": True, "tie_word_embeddings": False,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "bfloat16",
}


def test_published_8b_config_equals_the_preset():
    assert NemotronHConfig.from_hf_dict(NEMOTRON_H_8B) == get_preset("nemotron-h-8b")


def test_transformers_5_layers_block_type_and_legacy_names_read_alike():
    pattern = NemotronHConfig.from_hf_dict(NEMOTRON_H_8B)
    names = {"M": "linear_attention", "*": "full_attention", "-": "mlp"}
    for spelling in (names, {"M": "mamba", "*": "attention", "-": "mlp"}):
        raw = {**NEMOTRON_H_8B, "layers_block_type": [spelling[c] for c in NEMOTRON_H_8B["hybrid_override_pattern"]]}
        del raw["hybrid_override_pattern"]
        assert NemotronHConfig.from_hf_dict(raw) == pattern


def test_round_trip_through_to_hf_dict():
    config = get_preset("nemotron-h-56b")
    assert NemotronHConfig.from_hf_dict(config.to_hf_dict()) == config


def test_4b_config_reads():
    # nvidia/Nemotron-H-4B-Base-8K: the 8B pruned to hidden 3072, 112 Mamba heads, FFN 12288.
    raw = {**NEMOTRON_H_8B, "hidden_size": 3072, "intermediate_size": 12288, "mamba_num_heads": 112}
    config = NemotronHConfig.from_hf_dict(raw)
    assert (config.num_layers, config.mamba_inner, config.conv_dim) == (52, 7168, 7168 + 2 * 8 * 128)


@pytest.mark.parametrize("name, published", [("nemotron-h-8b", 8.1e9), ("nemotron-h-47b", 46.8e9),
                                             ("nemotron-h-56b", 56.3e9)])
def test_preset_parameter_counts(name, published):
    assert get_preset(name).num_parameters() == pytest.approx(published, rel=0.01)


def test_layer_counts_of_the_presets():
    # arXiv 2504.03624: 8B = 24 Mamba-2 + 4 attention + 24 FFN; 56B = 54 + 10 + 54.
    for name, counts in (("nemotron-h-8b", (24, 4, 24)), ("nemotron-h-56b", (54, 10, 54))):
        config = get_preset(name)
        assert tuple(config.count(k) for k in ("mamba", "attention", "mlp")) == counts


def test_state_is_constant_in_the_context_and_kv_counts_attention_layers_only():
    config = get_preset("nemotron-h-8b")
    assert config.kv_cache_bytes_per_token() == 2 * 4 * 8 * 128 * 2
    conv = 3 * (128 * 64 + 2 * 8 * 128)
    assert config.mamba_state_bytes_per_sequence() == 24 * (conv + 128 * 64 * 128) * 4
    grow = config.sequence_state_bytes(8192) - config.sequence_state_bytes(4096)
    assert grow == 4096 * config.kv_cache_bytes_per_token()


@pytest.mark.parametrize("change, message", [
    ({"hybrid_override_pattern": "M-E*"}, "layer 2 is a mixture-of-experts"),
    ({"hybrid_override_pattern": "M-X*"}, "unknown character"),
    ({"num_hidden_layers": 51}, "num_hidden_layers"),
    ({"n_groups": 3}, "n_groups"),
    ({"num_key_value_heads": 5}, "num_kv_heads"),
    ({"mamba_head_dim": 0}, "mamba_head_dim"),
    ({"mlp_hidden_act": "silu"}, "mlp_hidden_act"),
    ({"tie_word_embeddings": True}, "tie_word_embeddings"),
    ({"rope_theta": 10000.0}, "positional"),
    ({"model_type": "nemotron"}, "model_type"),
])
def test_bad_configs_fail_naming_the_field(change, message):
    raw = {**NEMOTRON_H_8B, **change}
    if "hybrid_override_pattern" in change:
        raw.pop("num_hidden_layers")
    with pytest.raises(ConfigError, match=message):
        NemotronHConfig.from_hf_dict(raw)


def test_moe_in_layers_block_type_is_refused():
    raw = {**NEMOTRON_H_8B, "layers_block_type": ["mamba", "moe", "attention"]}
    del raw["hybrid_override_pattern"], raw["num_hidden_layers"]
    with pytest.raises(ConfigError, match="layer 1 is a mixture-of-experts"):
        NemotronHConfig.from_hf_dict(raw)
