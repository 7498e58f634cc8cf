"""Published shapes of the Nemotron family. A config file on disk always wins over a preset.

All share vocab 256,000, rotary fraction 0.5, theta 10,000, LayerNorm1p eps 1e-5, context 4,096.
"""
from __future__ import annotations

from nemotron.errors import ConfigError
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron_h_config import NemotronHConfig

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



def _nemotron_h(pattern: str, hidden: int, ffn: int, heads: int, mamba_heads: int, state: int) -> NemotronHConfig:
    # Shared by the family (nvidia/Nemotron-H-*-Base-8K config.json): vocab 131,072, 8 KV heads of 128,
    # Mamba heads of 64 in 8 groups, conv kernel 4, SSD chunk 128, context 8,192, RMSNorm eps 1e-5.
    return NemotronHConfig(
        vocab_size=131072, hidden_size=hidden, layer_types=tuple(_H_PATTERN[c] for c in pattern),
        intermediate_size=ffn, num_heads=heads, num_kv_heads=8, head_dim=128, mamba_num_heads=mamba_heads,
        mamba_head_dim=64, ssm_state_size=state, n_groups=8,
    )


_H_PATTERN = {"M": "mamba", "*": "attention", "-": "mlp"}

# Nemotron-H (arXiv 2504.03624): hybrid Mamba-2 / attention / MLP stacks; M Mamba-2, * attention, - MLP.
HYBRID_PRESETS: dict[str, NemotronHConfig] = {
    # 52 layers: 24 Mamba-2, 4 attention, 24 MLP.
    "nemotron-h-8b": _nemotron_h("M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-",
                                 hidden=4096, ffn=21504, heads=32, mamba_heads=128, state=128),
    # 98 layers, MiniPuzzle-compressed from the 56B.
    "nemotron-h-47b": _nemotron_h("M-M-M-M-M-M-M-M-M*-M-M-M-M-M-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-M-M"
                                  "---MM---M-M*-M-M-M-M-M-",
                                  hidden=8192, ffn=30720, heads=64, mamba_heads=256, state=256),
    # 118 layers: 54 Mamba-2, 10 attention, 54 MLP.
    "nemotron-h-56b": _nemotron_h("M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-"
                                  "M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-",
                                  hidden=8192, ffn=32768, heads=64, mamba_heads=256, state=256),
}


def preset_names() -> list[str]:
    return sorted([*PRESETS, *HYBRID_PRESETS])


def get_preset(name: str) -> ModelConfig | NemotronHConfig:
    key = name.lower()
    if key in HYBRID_PRESETS:
        return HYBRID_PRESETS[key]
    if key not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
    return PRESETS[key]
