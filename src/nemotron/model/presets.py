"""Published shapes of the Nemotron family. A config file on disk always wins over a preset.

All share vocab 256,000, rotary fraction 0.5, theta 10,000, LayerNorm1p eps 1e-5, context 4,096.
"""
from __future__ import annotations

from nemotron.errors import ConfigError
from nemotron.model.config import ModelConfig

_NEMOTRON_4_340B = ModelConfig(
    # Nemotron-4 340B Technical Report (arXiv 2406.11704), Table 1, and the model_config.yaml of
    # nvidia/Nemotron-4-340B-Base: 96 layers, hidden 18432, 96 heads, 8 query groups, FFN 73728.
    vocab_size=256000, hidden_size=18432, intermediate_size=73728, num_layers=96,
    num_heads=96, num_kv_heads=8, head_dim=192,
)

PRESETS: dict[str, ModelConfig] = {
    "nemotron-4-340b": _NEMOTRON_4_340B,
    # Same trunk; NeMo-Aligner's regression head with 9 attributes (HelpSteer2 + 4 extra).
    "nemotron-4-340b-reward": _NEMOTRON_4_340B.replace(num_reward_attributes=9),
    # Nemotron-4 15B Technical Report (arXiv 2402.16819), Table 1: 32 layers, hidden 6144,
    # 48 heads, 8 KV heads, FFN 4 x hidden; also transformers' NemotronConfig defaults.
    "nemotron-4-15b": ModelConfig(
        vocab_size=256000, hidden_size=6144, intermediate_size=24576, num_layers=32,
        num_heads=48, num_kv_heads=8, head_dim=128,
    ),
    # nvidia/nemotron-3-8b-base-4k model_config.yaml (converted as thhaus/nemotron3-8b config.json):
    # multi-head attention, 32 heads of 128.
    "nemotron-3-8b": ModelConfig(
        vocab_size=256000, hidden_size=4096, intermediate_size=16384, num_layers=32,
        num_heads=32, num_kv_heads=32, head_dim=128,
    ),
    # nvidia/Minitron-8B-Base config.json: 48 heads x 128 on hidden 4096 (head_dim != hidden/heads).
    "minitron-8b": ModelConfig(
        vocab_size=256000, hidden_size=4096, intermediate_size=16384, num_layers=32,
        num_heads=48, num_kv_heads=8, head_dim=128,
    ),
    # nvidia/Minitron-4B-Base config.json.
    "minitron-4b": ModelConfig(
        vocab_size=256000, hidden_size=3072, intermediate_size=9216, num_layers=32,
        num_heads=24, num_kv_heads=8, head_dim=128,
    ),
    # nvidia/Nemotron-Mini-4B-Instruct config.json: the Minitron 4B shape, instruction tuned.
    "nemotron-mini-4b": ModelConfig(
        vocab_size=256000, hidden_size=3072, intermediate_size=9216, num_layers=32,
        num_heads=24, num_kv_heads=8, head_dim=128,
    ),
    # A few-million-parameter shape for trying the tooling; not a published model.
    "tiny": ModelConfig(
        vocab_size=4096, hidden_size=128, intermediate_size=512, num_layers=4,
        num_heads=4, num_kv_heads=2, head_dim=32, torch_dtype="float32",
    ),
}


def get_preset(name: str) -> ModelConfig:
    key = name.lower()
    if key not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[key]
