import pytest

from nemotron.errors import ConfigError
from nemotron.model.config import ModelConfig
from nemotron.model.presets import PRESETS, get_preset

# MISSION.md's parameter column; our counts include embeddings and the untied output layer.
PUBLISHED_PARAMS = {
    "nemotron-4-340b": 341e9, "nemotron-4-15b": 15.6e9, "nemotron-3-8b": 8.5e9,
    "minitron-8b": 8.3e9, "minitron-4b": 4.2e9, "nemotron-mini-4b": 4.2e9,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_preset_parameter_counts_match_published(name):
    assert get_preset(name).num_parameters() == pytest.approx(PUBLISHED_PARAMS[name], rel=0.01)


def test_minitron_8b_head_dim_is_independent_of_hidden():
    config = get_preset("minitron-8b")
    assert (config.num_heads, config.head_dim, config.hidden_size) == (48, 128, 4096)
    assert config.rotary_dim == 64 and config.kv_group_size == 6


def test_340b_kv_cache_per_token():
    # 2 x layers x KV heads x head dim x 2 bytes; MISSION.md: 2.42 GB for one 4,096-token sequence.
    config = get_preset("nemotron-4-340b")
    assert config.kv_cache_bytes_per_token(2) * 4096 / 1e9 == pytest.approx(2.42, abs=0.01)


def test_reward_preset_has_nine_attributes():
    assert get_preset("nemotron-4-340b-reward").num_reward_attributes == 9


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="minitron-8b"):
        get_preset("llama-7b")


MINITRON_8B_2023 = {  # the config.json spelling of nvidia/Minitron-8B-Base (refs/pr/1)
    "model_type": "nemotron", "hidden_act": "relu2", "hidden_size": 4096, "intermediate_size": 16384,
    "max_position_embeddings": 4096, "num_attention_heads": 48, "num_hidden_layers": 32,
    "kv_channels": 128, "num_key_value_heads": 8, "layer_norm_eps": 1e-05, "rope_theta": 10000,
    "rope_percent": 0.5, "rope_scaling": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "vocab_size": 256000, "bos_token_id": 2, "eos_token_id": 3,
}


@pytest.mark.parametrize("rotary_key", ["rope_percent", "rope_percentage", "partial_rotary_factor"])
def test_old_hf_spellings_map_to_the_preset(rotary_key):
    raw = dict(MINITRON_8B_2023)
    raw[rotary_key] = raw.pop("rope_percent")
    assert ModelConfig.from_hf_dict(raw) == get_preset("minitron-8b")


def test_transformers_5_rope_parameters():
    raw = {k: v for k, v in MINITRON_8B_2023.items() if k not in ("rope_percent", "rope_theta")}
    raw["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    assert ModelConfig.from_hf_dict(raw) == get_preset("minitron-8b")


def test_hf_round_trip_keeps_every_field():
    config = get_preset("nemotron-4-340b-reward")
    assert ModelConfig.from_hf_dict(config.to_hf_dict()) == config


@pytest.mark.parametrize("change, field", [
    ({"model_type": "llama"}, "model_type"),
    ({"hidden_act": "silu"}, "hidden_act"),
    ({"attention_bias": True}, "attention_bias"),
    ({"num_key_value_heads": 7}, "num_kv_heads"),
    ({"rope_percent": 0.3}, "rotary"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "RoPE scaling"),
])
def test_bad_hf_configs_fail_naming_the_field(change, field):
    with pytest.raises(ConfigError, match=field):
        ModelConfig.from_hf_dict({**MINITRON_8B_2023, **change})


def test_missing_field_is_named():
    raw = dict(MINITRON_8B_2023)
    del raw["num_hidden_layers"]
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        ModelConfig.from_hf_dict(raw)


NEMOTRON_340B_YAML = {  # keys as in the model_config.yaml of Nemotron-4-340B
    "num_layers": 96, "hidden_size": 18432, "ffn_hidden_size": 73728, "num_attention_heads": 96,
    "num_query_groups": 8, "kv_channels": None, "rotary_percentage": 0.5, "activation": "squared-relu",
    "normalization": "layernorm1p", "layernorm_epsilon": 1e-05, "bias": False,
    "share_embeddings_and_output_weights": False, "position_embedding_type": "rope",
    "max_position_embeddings": 4096, "precision": "bf16-mixed",
}


def test_nemo_yaml_maps_to_the_preset():
    assert ModelConfig.from_nemo_dict(NEMOTRON_340B_YAML, vocab_size=256000) == get_preset("nemotron-4-340b")


def test_nemo_yaml_with_wrong_activation_is_rejected():
    with pytest.raises(ConfigError, match="squared-relu"):
        ModelConfig.from_nemo_dict({**NEMOTRON_340B_YAML, "activation": "swiglu"}, vocab_size=256000)


def test_every_preset_is_valid():
    assert all(isinstance(config, ModelConfig) for config in PRESETS.values())


def test_reward_model_counts_its_head_not_an_output_layer():
    from nemotron.model.nemotron import build_model
    import torch

    config = get_preset("tiny").replace(num_reward_attributes=9)
    with torch.device("meta"):
        model = build_model(config)
    assert config.num_parameters() == sum(p.numel() for p in model.parameters())
