"""Hyper-parameters of a Nemotron-H (hybrid Mamba-2 + attention) model, read from its config.json.

Published checkpoints spell the layer stack two ways: `hybrid_override_pattern`, one character per
layer (M Mamba-2, * attention, - MLP, E mixture-of-experts; Nemotron-H 8B/47B/56B/4B), or
`layers_block_type`, a list of names (transformers 5: linear_attention / full_attention / mlp / moe;
earlier exports: mamba / attention / mlp / moe). Both become `layer_types` with the names below.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemotron.errors import ConfigError
from nemotron.model.config import first_field, require_field

MAMBA, ATTENTION, MLP, MOE = "mamba", "attention", "mlp", "moe"
_PATTERN = {"M": MAMBA, "*": ATTENTION, "-": MLP, "E": MOE}
_BLOCK_NAMES = {"mamba": MAMBA, "linear_attention": MAMBA, "attention": ATTENTION, "full_attention": ATTENTION,
                "mlp": MLP, "moe": MOE}
NO_MODEL_PARALLEL = ("Nemotron-H models run on one device: tensor / pipeline parallelism is not implemented "
                     "for their Mamba layers")
_STATE_BYTES = 4  # conv and SSM states are kept in fp32
_KV_BYTES = 2  # attention K/V in 16 bit, as for Nemotron-4


@dataclass(slots=True, frozen=True)
class NemotronHConfig:
    vocab_size: int
    hidden_size: int
    layer_types: tuple[str, ...]
    intermediate_size: int  # MLP layers
    num_heads: int  # attention layers
    num_kv_heads: int
    head_dim: int
    mamba_num_heads: int  # Mamba-2 layers: inner width = mamba_num_heads * mamba_head_dim
    mamba_head_dim: int
    ssm_state_size: int
    n_groups: int  # B/C groups, and the groups of the gated RMSNorm
    conv_kernel: int = 4
    chunk_size: int = 128  # SSD chunk length of the chunked scan
    use_conv_bias: bool = True
    use_bias: bool = False  # in_proj / out_proj bias
    time_step_min: float = 0.001  # lower clamp on the softplus'd step size (as transformers applies it)
    max_position_embeddings: int = 8192
    norm_eps: float = 1e-5
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    torch_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_heads", "num_kv_heads", "head_dim",
                     "mamba_num_heads", "mamba_head_dim", "ssm_state_size", "n_groups", "conv_kernel",
                     "chunk_size", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config field {name} must be a positive integer, got {value!r}")
        if not self.layer_types:
            raise ConfigError("config field layer_types (hybrid_override_pattern) is empty")
        for i, kind in enumerate(self.layer_types):
            if kind == MOE:
                raise ConfigError(f"config field layer_types: layer {i} is a mixture-of-experts ('moe', 'E') layer, "
                                  f"which this implementation does not support (Mamba, attention and MLP layers only)")
            if kind not in (MAMBA, ATTENTION, MLP):
                raise ConfigError(f"config field layer_types: layer {i} has unknown type {kind!r}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"config field num_kv_heads ({self.num_kv_heads}) must divide "
                              f"num_attention_heads ({self.num_heads})")
        if self.mamba_num_heads % self.n_groups:
            raise ConfigError(f"config field n_groups ({self.n_groups}) must divide mamba_num_heads "
                              f"({self.mamba_num_heads})")
        if not 0.0 <= self.time_step_min < 1.0:
            raise ConfigError(f"config field time_step_min must be in [0, 1), got {self.time_step_min}")
        if not 0.0 < self.norm_eps < 1.0:
            raise ConfigError(f"config field layer_norm_epsilon must be in (0, 1), got {self.norm_eps}")
        if self.torch_dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"config field torch_dtype must be float32, bfloat16 or float16, got {self.torch_dtype!r}")

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layer_types)

    @property
    def kv_group_size(self) -> int:
        """Query heads per KV head (attention layers)."""
        return self.num_heads // self.num_kv_heads

    @property
    def mamba_inner(self) -> int:
        return self.mamba_num_heads * self.mamba_head_dim

    @property
    def conv_dim(self) -> int:
        """Channels through the depthwise conv: x, B and C."""
        return self.mamba_inner + 2 * self.n_groups * self.ssm_state_size

    @property
    def quantization(self) -> None:
        """`nemotron quantize` does not write Nemotron-H checkpoints: weights are always as stored."""
        return None

    @property
    def quantized_lm_head(self) -> bool:
        return False

    @property
    def pattern(self) -> str:
        reverse = {kind: char for char, kind in _PATTERN.items()}
        return "".join(reverse[kind] for kind in self.layer_types)

    def count(self, kind: str) -> int:
        return self.layer_types.count(kind)

    def layer_parameters(self, kind: str) -> int:
        h = self.hidden_size
        if kind == MAMBA:
            in_proj = h * (self.mamba_inner + self.conv_dim + self.mamba_num_heads) + (
                self.mamba_inner + self.conv_dim + self.mamba_num_heads) * self.use_bias
            conv = self.conv_dim * (self.conv_kernel + int(self.use_conv_bias))
            out_proj = self.mamba_inner * h + h * self.use_bias
            per_head = 3 * self.mamba_num_heads  # dt_bias, A_log, D
            mixer = in_proj + conv + out_proj + per_head + self.mamba_inner  # + gated-norm weight
        elif kind == ATTENTION:
            mixer = 2 * h * self.num_heads * self.head_dim + 2 * h * self.num_kv_heads * self.head_dim
        else:
            mixer = 2 * h * self.intermediate_size
        return mixer + h  # pre-norm

    def parameter_counts(self) -> dict[str, int]:
        counts = {"embedding": self.vocab_size * self.hidden_size}
        for kind in (MAMBA, ATTENTION, MLP):
            counts[f"{kind}_layers"] = self.count(kind) * self.layer_parameters(kind)
        counts["final_norm"] = self.hidden_size
        counts["lm_head"] = self.vocab_size * self.hidden_size
        return counts

    def num_parameters(self) -> int:
        return sum(self.parameter_counts().values())

    def kv_cache_bytes_per_token(self, bytes_per_element: int = _KV_BYTES) -> int:
        """Only the attention layers keep per-token state."""
        return 2 * self.count(ATTENTION) * self.num_kv_heads * self.head_dim * bytes_per_element

    def mamba_state_bytes_per_sequence(self) -> int:
        """Constant in the context length: conv window (K - 1 inputs) plus the SSM state, fp32."""
        conv = (self.conv_kernel - 1) * self.conv_dim
        ssm = self.mamba_num_heads * self.mamba_head_dim * self.ssm_state_size
        return self.count(MAMBA) * (conv + ssm) * _STATE_BYTES

    def sequence_state_bytes(self, context: int) -> int:
        """Memory one sequence of `context` tokens holds while decoding."""
        return context * self.kv_cache_bytes_per_token() + self.mamba_state_bytes_per_sequence()

    def replace(self, **changes: Any) -> NemotronHConfig:
        return dataclasses.replace(self, **changes)

    # ---- Hugging Face config.json ------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any]) -> NemotronHConfig:
        if raw.get("model_type") != "nemotron_h":
            raise ConfigError(f"config.json has model_type {raw.get('model_type')!r}, expected 'nemotron_h'")
        for flag in ("attention_bias", "mlp_bias", "tie_word_embeddings"):
            if raw.get(flag):
                raise ConfigError(f"config.json sets {flag}: true, which Nemotron-H models never use")
        for field, expected in (("mamba_hidden_act", "silu"), ("mlp_hidden_act", "relu2")):
            if raw.get(field, expected) != expected:
                raise ConfigError(f"config.json has {field} {raw[field]!r}; Nemotron-H uses {expected}")
        if raw.get("rope_theta") is not None or raw.get("rope_parameters") or raw.get("rope_scaling"):
            raise ConfigError("config.json asks for rotary embeddings; Nemotron-H attention has no positional encoding")
        num_heads = require_field(raw, "num_attention_heads")
        hidden = require_field(raw, "hidden_size")
        eos = raw.get("eos_token_id", 2)
        return cls(
            vocab_size=require_field(raw, "vocab_size"),
            hidden_size=hidden,
            layer_types=_layer_types(raw),
            intermediate_size=require_field(raw, "intermediate_size"),
            num_heads=num_heads,
            num_kv_heads=raw.get("num_key_value_heads") or num_heads,
            # transformers 5 writes head_dim; NVIDIA's original configs attention_head_dim.
            head_dim=first_field(raw, ("head_dim", "attention_head_dim"), hidden // num_heads),
            mamba_num_heads=require_field(raw, "mamba_num_heads"),
            mamba_head_dim=require_field(raw, "mamba_head_dim"),
            ssm_state_size=require_field(raw, "ssm_state_size"),
            n_groups=first_field(raw, ("n_groups", "mamba_n_groups"), 8),
            conv_kernel=first_field(raw, ("conv_kernel", "mamba_d_conv"), 4),
            chunk_size=first_field(raw, ("chunk_size", "mamba_chunk_size"), 128),
            use_conv_bias=bool(first_field(raw, ("use_conv_bias", "mamba_conv_bias"), True)),
            use_bias=bool(raw.get("use_bias", False)),
            time_step_min=float(first_field(raw, ("time_step_min", "mamba_dt_min"), 0.001)),
            max_position_embeddings=raw.get("max_position_embeddings") or 8192,
            norm_eps=float(first_field(raw, ("layer_norm_epsilon", "rms_norm_eps", "norm_eps"), 1e-5)),
            bos_token_id=first_field(raw, ("bos_token_id",), 1),
            eos_token_id=int(eos[0] if isinstance(eos, list) else eos),
            pad_token_id=first_field(raw, ("pad_token_id",), 0),
            torch_dtype=str(raw.get("dtype") or raw.get("torch_dtype") or "bfloat16").removeprefix("torch."),
        )

    def to_hf_dict(self) -> dict[str, Any]:
        return {
            "architectures": ["NemotronHForCausalLM"],
            "model_type": "nemotron_h",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "hybrid_override_pattern": self.pattern,
            "num_hidden_layers": self.num_layers,
            "intermediate_size": self.intermediate_size,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "mamba_num_heads": self.mamba_num_heads,
            "mamba_head_dim": self.mamba_head_dim,
            "ssm_state_size": self.ssm_state_size,
            "n_groups": self.n_groups,
            "conv_kernel": self.conv_kernel,
            "chunk_size": self.chunk_size,
            "use_conv_bias": self.use_conv_bias,
            "use_bias": self.use_bias,
            "time_step_min": self.time_step_min,
            "mamba_hidden_act": "silu",
            "mlp_hidden_act": "relu2",
            "max_position_embeddings": self.max_position_embeddings,
            "layer_norm_epsilon": self.norm_eps,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "tie_word_embeddings": False,
            "torch_dtype": self.torch_dtype,
        }

    @classmethod
    def from_json_file(cls, path: str | Path) -> NemotronHConfig:
        return cls.from_hf_dict(read_config_json(path))

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_hf_dict(), indent=2) + "\n")


def read_config_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} holds a JSON {type(raw).__name__}, not an object")
    return raw


def _layer_types(raw: dict[str, Any]) -> tuple[str, ...]:
    if raw.get("layers_block_type") is not None:
        names = raw["layers_block_type"]
        unknown = sorted({n for n in names if n not in _BLOCK_NAMES})
        if unknown:
            raise ConfigError(f"config.json layers_block_type has unknown layer type(s) {', '.join(unknown)}")
        types = tuple(_BLOCK_NAMES[n] for n in names)
    elif raw.get("hybrid_override_pattern") is not None:
        pattern = raw["hybrid_override_pattern"]
        unknown = sorted({c for c in pattern if c not in _PATTERN})
        if unknown:
            raise ConfigError(f"config.json hybrid_override_pattern has unknown character(s) {''.join(unknown)!r}; "
                              f"expected M (Mamba), * (attention), - (MLP), E (MoE)")
        types = tuple(_PATTERN[c] for c in pattern)
    else:
        raise ConfigError("config.json has neither layers_block_type nor hybrid_override_pattern")
    declared = raw.get("num_hidden_layers")
    if declared is not None and declared != len(types):
        raise ConfigError(f"config.json num_hidden_layers ({declared}) does not match the {len(types)} layers "
                          f"of its layer pattern")
    return types
