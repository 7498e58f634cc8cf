"""The architecture hyper-parameters of a Nemotron-family model, and how to read them from disk.

Two on-disk spellings exist: a Hugging Face `config.json` (model_type `nemotron`, several generations
of field names) and a NeMo `model_config.yaml` (Megatron names). Both are mapped onto one dataclass.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemotron.errors import ConfigError

# Reward model attributes, in the order of the head's outputs (MISSION.md).
REWARD_ATTRIBUTES = (
    "quality", "toxicity", "humor", "creativity", "helpfulness",
    "correctness", "coherence", "complexity", "verbosity",
)
# MISSION.md's weights for collapsing the 9 attributes into one scalar reward, in that order:
# quality, toxicity, humor, creativity carry no weight; verbosity counts against.
REWARD_WEIGHTS: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.3, 0.74, 0.46, 0.47, -0.33)
# Weight formats written by `nemotron quantize` (nemotron.quant); recorded in config.json as
# quantization_config {"quant_method": "nemotron", "scheme": ...}.
QUANTIZATION_SCHEMES = ("int8", "int4", "fp8")
MAX_LAYERS = 10_000  # the largest published Nemotron has 96 decoder layers


@dataclass(slots=True, frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int = 4096
    rotary_fraction: float = 0.5  # rotary embedding covers the first head_dim * fraction channels
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    bos_token_id: int = 2
    eos_token_id: int = 3
    pad_token_id: int = 0
    num_reward_attributes: int = 0  # 0: language-model head only; 9: Nemotron-4 340B Reward
    reward_head_bias: bool = True
    torch_dtype: str = "bfloat16"  # dtype the checkpoint is stored in
    quantization: str | None = None  # decoder-layer weights stored quantized (QUANTIZATION_SCHEMES)
    quantized_lm_head: bool = False  # the LM head stored in int8 too (nemotron.quant.transform.HEAD_CLASS)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config field {name} must be a positive integer, got {value!r}")
        if self.num_layers > MAX_LAYERS:  # per-layer planning and loading would exhaust memory first
            raise ConfigError(f"config field num_layers is {self.num_layers}; no Nemotron model has more than "
                              f"{MAX_LAYERS} layers")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"config field num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        if not 0.0 < self.rotary_fraction <= 1.0:
            raise ConfigError(f"config field rotary_fraction must be in (0, 1], got {self.rotary_fraction}")
        exact_rotary = self.head_dim * self.rotary_fraction
        if exact_rotary != self.rotary_dim or self.rotary_dim % 2 or self.rotary_dim == 0:
            raise ConfigError(
                f"config fields head_dim ({self.head_dim}) x rotary_fraction ({self.rotary_fraction}) "
                f"must give an even, non-zero whole number of rotary channels, got {exact_rotary:g}")
        if self.rope_theta <= 0:
            raise ConfigError(f"config field rope_theta must be positive, got {self.rope_theta}")
        if not 0.0 < self.norm_eps < 1.0:
            raise ConfigError(f"config field norm_eps must be in (0, 1), got {self.norm_eps}")
        if not isinstance(self.num_reward_attributes, int) or isinstance(self.num_reward_attributes, bool) \
                or self.num_reward_attributes < 0:
            raise ConfigError(f"config field num_reward_attributes must be an integer >= 0, "
                              f"got {self.num_reward_attributes!r}")
        if not isinstance(self.reward_head_bias, bool):
            raise ConfigError(f"config field reward_head_bias must be true or false, got {self.reward_head_bias!r}")
        if self.torch_dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"config field torch_dtype must be float32, bfloat16 or float16, got {self.torch_dtype!r}")
        if self.quantization is not None and self.quantization not in QUANTIZATION_SCHEMES:
            raise ConfigError(f"config field quantization must be one of {', '.join(QUANTIZATION_SCHEMES)} "
                              f"or unset, got {self.quantization!r}")
        if not isinstance(self.quantized_lm_head, bool):
            raise ConfigError(f"quantization_config field lm_head must be true or false, "
                              f"got {self.quantized_lm_head!r}")
        if self.quantized_lm_head and (self.quantization is None or self.is_reward_model):
            raise ConfigError("a quantized LM head needs a quantized language model (quantization set, no reward head)")

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rotary_fraction)

    @property
    def kv_group_size(self) -> int:
        """Query heads served by one KV head."""
        return self.num_heads // self.num_kv_heads

    @property
    def is_reward_model(self) -> bool:
        return self.num_reward_attributes > 0

    def parameter_counts(self) -> dict[str, int]:
        h, d = self.hidden_size, self.head_dim
        attention = h * self.num_heads * d * 2 + h * self.num_kv_heads * d * 2  # q, o; k, v
        mlp = 2 * h * self.intermediate_size
        norms = 2 * 2 * h  # two LayerNorm1p per layer, weight and bias
        counts = {
            "embedding": self.vocab_size * h,
            "layers": self.num_layers * (attention + mlp + norms),
            "final_norm": 2 * h,
        }
        if self.is_reward_model:  # the reward head replaces the output layer
            counts["reward_head"] = self.num_reward_attributes * (h + int(self.reward_head_bias))
        else:
            counts["lm_head"] = self.vocab_size * h
        return counts

    def num_parameters(self) -> int:
        return sum(self.parameter_counts().values())

    def kv_cache_bytes_per_token(self, bytes_per_element: int = 2) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * bytes_per_element

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # ---- Hugging Face config.json ------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        if not isinstance(raw, dict):
            raise ConfigError(f"config.json holds a JSON {type(raw).__name__}, not an object")
        model_type = raw.get("model_type")
        if model_type != "nemotron":
            raise ConfigError(f"config.json has model_type {model_type!r}; only 'nemotron' models are supported")
        _check_unsupported(raw)
        num_heads = require_field(raw, "num_attention_heads")
        hidden = require_field(raw, "hidden_size")
        rope = _mapping(raw, "rope_parameters")
        return cls(
            vocab_size=require_field(raw, "vocab_size"),
            hidden_size=hidden,
            intermediate_size=require_field(raw, "intermediate_size"),
            num_layers=require_field(raw, "num_hidden_layers"),
            num_heads=num_heads,
            num_kv_heads=raw.get("num_key_value_heads") or num_heads,
            head_dim=first_field(raw, ("head_dim", "kv_channels"), default=None) or _quotient(hidden, num_heads),
            max_position_embeddings=raw.get("max_position_embeddings", 4096),
            # Field names changed across releases: rope_percent (2023), rope_percentage,
            # partial_rotary_factor (transformers 4.44), rope_parameters (transformers 5).
            rotary_fraction=_float(
                {**raw, **{f"rope_parameters.{k}": v for k, v in rope.items()}},
                ("rope_parameters.partial_rotary_factor", "partial_rotary_factor", "rope_percent",
                 "rope_percentage"), default=0.5),
            rope_theta=_float({"rope_parameters.rope_theta": rope.get("rope_theta"), **raw},
                              ("rope_parameters.rope_theta", "rope_theta"), default=10000.0),
            norm_eps=_float(raw, ("norm_eps", "layer_norm_eps", "layernorm_epsilon"), default=1e-5),
            bos_token_id=_token_id(raw, "bos_token_id", 2),
            eos_token_id=_token_id(raw, "eos_token_id", 3),
            pad_token_id=_token_id(raw, "pad_token_id", 0),
            num_reward_attributes=raw.get("num_reward_attributes", 0),
            reward_head_bias=raw.get("reward_head_bias", True),
            torch_dtype=_dtype_name(raw.get("dtype") or raw.get("torch_dtype") or "bfloat16"),
            quantization=_quantization_scheme(raw.get("quantization_config")),
            quantized_lm_head=_quantized_head(raw.get("quantization_config")),
        )

    def to_hf_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "architectures": ["NemotronForRewardModel" if self.is_reward_model else "NemotronForCausalLM"],
            "model_type": "nemotron",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "relu2",
            "max_position_embeddings": self.max_position_embeddings,
            "norm_eps": self.norm_eps,
            # Both spellings, so transformers 4.x (top level) and 5.x (rope_parameters) read it.
            "rope_theta": self.rope_theta,
            "partial_rotary_factor": self.rotary_fraction,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta,
                                "partial_rotary_factor": self.rotary_fraction},
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "tie_word_embeddings": False,
            "attention_bias": False,
            "mlp_bias": False,
            "torch_dtype": self.torch_dtype,
        }
        if self.is_reward_model:
            out["num_reward_attributes"] = self.num_reward_attributes
            out["reward_head_bias"] = self.reward_head_bias
            out["reward_attributes"] = list(REWARD_ATTRIBUTES[: self.num_reward_attributes])
        if self.quantization is not None:
            out["quantization_config"] = {"quant_method": "nemotron", "scheme": self.quantization,
                                          "lm_head": self.quantized_lm_head}
        return out

    @classmethod
    def from_json_file(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"no config file at {path}") from None
        except IsADirectoryError:
            raise ConfigError(f"{path} is a directory, not a config file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path} is not valid JSON: {err}") from None
        except RecursionError:
            raise ConfigError(f"{path} nests too deeply to be a config file") from None
        try:
            return cls.from_hf_dict(raw)
        except ConfigError as err:  # name the file: "config.json has ..." -> "/path/to/config.json has ..."
            message = str(err)
            raise ConfigError(message.replace("config.json", str(path), 1) if message.startswith("config.json")
                              else f"{path}: {message}") from None

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_hf_dict(), indent=2) + "\n")

    # ---- NeMo model_config.yaml -------------------------------------------------------------
    @classmethod
    def from_nemo_dict(cls, raw: dict[str, Any], vocab_size: int, num_reward_attributes: int = 0,
                       reward_head_bias: bool = True) -> ModelConfig:
        """Map Megatron hyper-parameters. The vocabulary size is not in the YAML (it comes from the
        tokenizer, padded), so the caller passes the embedding's row count."""
        activation = raw.get("activation", "gelu")
        if activation not in ("squared-relu", "relu2"):
            raise ConfigError(f"model_config.yaml has activation {activation!r}; Nemotron uses squared-relu")
        normalization = str(raw.get("normalization", "layernorm1p")).lower()
        zero_centred = normalization == "layernorm1p" or raw.get("layernorm_zero_centered_gamma", False)
        if normalization not in ("layernorm1p", "layernorm") or not zero_centred:
            raise ConfigError(
                f"model_config.yaml has normalization {raw.get('normalization')!r}; Nemotron uses layernorm1p")
        if raw.get("bias", False) or raw.get("add_bias_linear", False):
            raise ConfigError("model_config.yaml has bias: true; Nemotron linear layers have no bias")
        if raw.get("share_embeddings_and_output_weights", False):
            raise ConfigError("model_config.yaml ties embeddings and output weights; Nemotron does not")
        if raw.get("position_embedding_type", "rope") != "rope":
            raise ConfigError(f"model_config.yaml has position_embedding_type "
                              f"{raw.get('position_embedding_type')!r}; Nemotron uses rope")
        num_heads = require_field(raw, "num_attention_heads", source="model_config.yaml")
        hidden = require_field(raw, "hidden_size", source="model_config.yaml")
        return cls(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=require_field(raw, "ffn_hidden_size", source="model_config.yaml"),
            num_layers=require_field(raw, "num_layers", source="model_config.yaml"),
            num_heads=num_heads,
            num_kv_heads=raw.get("num_query_groups") or num_heads,
            head_dim=raw.get("kv_channels") or _quotient(hidden, num_heads),
            max_position_embeddings=first_field(raw, ("max_position_embeddings", "encoder_seq_length",
                                                 "seq_length"), default=4096),
            # Megatron's default is 1.0; Nemotron configs set 0.5 explicitly.
            rotary_fraction=_float(raw, ("rotary_percentage", "rotary_percent"), default=1.0,
                                   source="model_config.yaml"),
            rope_theta=_float(raw, ("rotary_base", "rotary_emb_base"), default=10000.0, source="model_config.yaml"),
            norm_eps=_float(raw, ("layernorm_epsilon",), default=1e-5, source="model_config.yaml"),
            num_reward_attributes=num_reward_attributes,
            reward_head_bias=reward_head_bias,
            torch_dtype=_nemo_precision(raw.get("precision", "bf16")),
        )


def require_field(raw: dict[str, Any], key: str, source: str = "config.json") -> Any:
    if key not in raw or raw[key] is None:
        raise ConfigError(f"{source} has no field {key!r}")
    return raw[key]


def first_field(raw: dict[str, Any], keys: tuple[str, ...], default: Any) -> Any:
    for key in keys:
        if raw.get(key) is not None:
            return raw[key]
    return default


def _token_id(raw: dict[str, Any], key: str, default: int) -> int:
    value = raw.get(key)
    if isinstance(value, list):  # some configs list several EOS ids; the first is the canonical one
        value = value[0] if value else None
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"config.json field {key} must be an integer token id, got {value!r}")
    return value


def _float(raw: dict[str, Any], keys: tuple[str, ...], default: float, source: str = "config.json") -> float:
    """The first of `keys` present, as a float; a value of the wrong type names its field."""
    for key in keys:
        value = raw.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{source} field {key} must be a finite number, got {value!r}")
        return float(value)
    return default


def _mapping(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"config.json field {key} must be an object, got {value!r}")
    return value


def _quotient(hidden: Any, num_heads: Any) -> Any:
    """hidden // num_heads when both are positive integers; otherwise the config's own checks name the field."""
    valid = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (hidden, num_heads))
    return hidden // num_heads if valid else None


def _dtype_name(value: str) -> str:
    name = str(value).removeprefix("torch.")
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    return aliases.get(name, name)


def _quantization_scheme(entry: Any) -> str | None:
    """config.json's quantization_config -> our scheme name; other quantizers' formats are refused."""
    if entry is None:
        return None
    method = entry.get("quant_method") if isinstance(entry, dict) else None
    if method != "nemotron":
        raise ConfigError(f"config.json has a quantization_config with quant_method {method!r}; only checkpoints "
                          f"written by `nemotron quantize` (quant_method 'nemotron') can be loaded")
    if not isinstance(entry.get("scheme"), str):
        raise ConfigError("config.json's quantization_config has no field 'scheme'")
    return entry["scheme"]


def _quantized_head(entry: Any) -> Any:
    """quantization_config's "lm_head": absent in checkpoints written before heads were quantized."""
    return entry.get("lm_head", False) if isinstance(entry, dict) else False


def _nemo_precision(value: Any) -> str:
    text = str(value)
    if "bf16" in text:
        return "bfloat16"
    if "16" in text:
        return "float16"
    return "float32"


def _check_unsupported(raw: dict[str, Any]) -> None:
    act = raw.get("hidden_act", "relu2")
    if act != "relu2":
        raise ConfigError(f"config.json has hidden_act {act!r}; Nemotron uses relu2")
    for flag in ("attention_bias", "mlp_bias", "tie_word_embeddings"):
        if raw.get(flag):
            raise ConfigError(f"config.json sets {flag}: true, which Nemotron models never use")
    scaling = _mapping(raw, "rope_scaling")
    rope_type = _mapping(raw, "rope_parameters").get("rope_type", "default")
    if (scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default")) or rope_type != "default":
        raise ConfigError("config.json asks for RoPE scaling, which Nemotron models do not use")
