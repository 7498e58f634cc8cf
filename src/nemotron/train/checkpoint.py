"""Training checkpoints: a Hugging Face model directory (loadable by `nemotron` and `transformers`)
plus `trainer_state.pt` with what an exact resume needs (optimizer moments, step, RNG states).

    out_dir/checkpoint-0000500/{config.json, model.safetensors, tokenizer.model, trainer_state.pt}

A LoRA run saves only what it trains, as a PEFT adapter (adapter_config.json,
adapter_model.safetensors) in place of the model files: the base weights never change.

A checkpoint is written to a temporary directory and renamed into place, so an interrupted save
never leaves a half-written checkpoint that resume would pick up.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import torch
from torch import nn

from nemotron.checkpoint.hf import iter_tensors, save_hf_dir
from nemotron.checkpoint.peft import PREFIX, WEIGHTS_FILE, load_adapter_weights, save_adapter
from nemotron.model.lora import has_lora
from nemotron.tokenizer import Tokenizer

STATE_FILE = "trainer_state.pt"
_PREFIX = "checkpoint-"


def save_model_dir(model: nn.Module, tokenizer: Tokenizer | None, directory: str | Path,
                   dtype: torch.dtype | None = None, state: dict | None = None) -> Path:
    """The model in the Hugging Face layout: config.json, model.safetensors, tokenizer.model; for a
    model with LoRA layers, its adapter in PEFT's layout. `state`: the model's full state dict when
    the module holds only a shard of it (FSDP)."""
    state = model.state_dict() if state is None else state
    if has_lora(model):
        directory = save_adapter(model, directory, state=state)
    else:
        directory = save_hf_dir(state, model.config, directory, dtype=dtype)
    if tokenizer is not None:
        tokenizer.save(directory)
    return directory


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = sorted(p for p in Path(out_dir).glob(f"{_PREFIX}*") if (p / STATE_FILE).is_file())
    return found[-1] if found else None


def save_checkpoint(out_dir: str | Path, step: int, model: nn.Module, tokenizer: Tokenizer | None,
                    optimizer: torch.optim.Optimizer, extra: dict, keep: int, model_state: dict | None = None,
                    optimizer_state: dict | None = None) -> Path:
    """`model_state` / `optimizer_state`: full state dicts gathered from a sharded (FSDP) run."""
    out_dir = Path(out_dir)
    final = out_dir / f"{_PREFIX}{step:07d}"
    tmp = out_dir / f".tmp-{_PREFIX}{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_dir(model, tokenizer, tmp, dtype=torch.float32, state=model_state)
    optimizer_state = optimizer.state_dict() if optimizer_state is None else optimizer_state
    state = {"step": step, "optimizer": optimizer_state, "rng": _rng_state(), **extra}
    torch.save(state, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    older = sorted(p for p in out_dir.glob(f"{_PREFIX}*") if p != final)
    for stale in older[:max(0, len(older) - (keep - 1))]:
        shutil.rmtree(stale)
    return final


def read_checkpoint(path: str | Path) -> tuple[dict, dict, bool]:
    """(weights by name on the CPU, trainer state, whether the weights are a LoRA adapter's)."""
    weights, adapter = _read_weights(Path(path))
    return weights, torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True), adapter


def load_weights(path: str | Path, model: nn.Module) -> None:
    """The weights of a directory written by `save_model_dir` (or a LoRA run's adapter), in place."""
    weights, adapter = _read_weights(Path(path))
    device = next(model.parameters()).device
    weights = {name: tensor.to(device) for name, tensor in weights.items()}
    if adapter:
        load_adapter_weights(model, weights, path)
    else:
        model.load_state_dict(weights, strict=True)


def _read_weights(path: Path) -> tuple[dict, bool]:
    if (path / WEIGHTS_FILE).is_file():
        from safetensors.torch import load_file

        return {k.removeprefix(PREFIX): t for k, t in load_file(path / WEIGHTS_FILE).items()}, True
    return dict(iter_tensors(path)), False


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore weights, optimizer and RNG states in place; returns the saved state (step, ...)."""
    load_weights(path, model)
    state = torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    restore_rng(state)
    return state


def restore_rng(state: dict) -> None:
    _set_rng_state(state["rng"])


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    """random.setstate wants the nested tuples back (torch.save may hand lists back)."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
