"""LoRA adapters in PEFT's file layout, so `peft.PeftModel.from_pretrained` loads ours and we load
adapters PEFT trained:

    adapter_dir/adapter_config.json        {"peft_type": "LORA", "r", "lora_alpha", "target_modules", ...}
    adapter_dir/adapter_model.safetensors  base_model.model.<module>.lora_A.weight  (r, in)
                                           base_model.model.<module>.lora_B.weight  (out, r)

Our parameter names are the Hugging Face ones, so a tensor's name is PEFT's minus the prefix.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from nemotron.errors import CheckpointError
from nemotron.model.heads import reward_model_from
from nemotron.model.lora import LoraConfig, adapter_state_dict, apply_lora

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def save_adapter(model: nn.Module, directory: str | Path, base_model: str | None = None,
                 state: dict | None = None) -> Path:
    config: LoraConfig = model.lora_config
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    is_reward = hasattr(model, "rm_head")
    peft_config = {
        "peft_type": "LORA", "task_type": None if is_reward else "CAUSAL_LM",
        "base_model_name_or_path": base_model, "r": config.r, "lora_alpha": config.alpha,
        "lora_dropout": config.dropout, "target_modules": sorted(config.target_modules), "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "use_rslora": config.use_rslora,
        "use_dora": False, "modules_to_save": list(config.trainable_heads) or None,
        "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {},
    }
    (directory / CONFIG_FILE).write_text(json.dumps(peft_config, indent=2) + "\n", encoding="utf-8")
    tensors = {PREFIX + name: t.contiguous() for name, t in adapter_state_dict(model, state).items()}
    save_file(tensors, directory / WEIGHTS_FILE, metadata={"format": "pt"})
    return directory


def read_adapter_config(directory: str | Path) -> LoraConfig:
    path = Path(directory) / CONFIG_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read the adapter config ({err})") from None
    if not isinstance(raw, dict) or raw.get("peft_type") != "LORA":
        raise CheckpointError(f"{path}: not a LoRA adapter config (peft_type {raw.get('peft_type')!r})")
    unsupported = [k for k in ("use_dora", "rank_pattern", "alpha_pattern", "layers_to_transform") if raw.get(k)]
    if raw.get("bias", "none") != "none":
        unsupported.append(f"bias={raw['bias']!r}")
    if raw.get("fan_in_fan_out"):
        unsupported.append("fan_in_fan_out")
    if unsupported:
        raise CheckpointError(f"{path}: unsupported LoRA options: {', '.join(unsupported)}")
    targets = raw.get("target_modules")
    if isinstance(targets, str):
        raise CheckpointError(f"{path}: target_modules given as a pattern ({targets!r}); a list of names is needed")
    try:
        return LoraConfig(r=int(raw["r"]), alpha=float(raw["lora_alpha"]), dropout=float(raw.get("lora_dropout", 0.0)),
                          target_modules=tuple(targets), trainable_heads=tuple(raw.get("modules_to_save") or ()),
                          use_rslora=bool(raw.get("use_rslora", False)))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: bad adapter config ({err})") from None


def load_adapter(model: nn.Module, directory: str | Path) -> nn.Module:
    """Apply the adapter in `directory` to `model` (LoRA layers added, weights loaded)."""
    directory = Path(directory)
    config = read_adapter_config(directory)
    try:
        stored = load_file(directory / WEIGHTS_FILE)
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: cannot read the adapter weights ({err})") from None
    if "rm_head" in config.trainable_heads and not hasattr(model, "rm_head"):
        model = reward_model_from(model)  # trained as a new reward head on this language model's trunk
    apply_lora(model, config)
    load_adapter_weights(model, stored, directory)
    return model


def load_adapter_weights(model: nn.Module, stored: dict, where: str | Path) -> None:
    """Adapter tensors (PEFT names or ours) into a model that already has its LoRA layers."""
    tensors = {name.removeprefix(PREFIX).replace(".default.", "."): t for name, t in stored.items()}
    wanted = adapter_state_dict(model)
    missing, unexpected = sorted(wanted.keys() - tensors.keys()), sorted(tensors.keys() - wanted.keys())
    if missing or unexpected:
        raise CheckpointError(f"{where}: adapter does not fit the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    for name, tensor in tensors.items():
        if tensor.shape != wanted[name].shape:
            raise CheckpointError(f"{where}: {name} has shape {tuple(tensor.shape)}, the model needs "
                                  f"{tuple(wanted[name].shape)}")
    model.load_state_dict(tensors, strict=False)


def merge_adapter_into(loaded, directory: str | Path):
    """A loaded model (checkpoint.load.LoadedModel) with the adapter in `directory` folded into its
    weights: what `serve`, `generate` and `convert --merge-lora` run, one plain model."""
    from nemotron.errors import CheckpointError
    from nemotron.model.lora import merge_lora

    if loaded.config.quantization is not None:  # e.g. a Q4_0 GGUF, whose layers stay 4-bit
        raise CheckpointError(f"{loaded.source.spec} holds {loaded.config.quantization} layers; a LoRA adapter merges "
                              "into float weights: load an unquantized checkpoint (or a GGUF of another type, which "
                              "is dequantized), merge, then quantize")
    loaded.model = merge_lora(load_adapter(loaded.model, directory)).eval()
    loaded.config = loaded.model.config
    return loaded
