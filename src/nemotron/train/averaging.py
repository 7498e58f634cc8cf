"""Weight averaging: models fine-tuned from one initialisation, merged into one model of the same shape.

WARM (Ramé et al. 2024, "WARM: On the Benefits of Weight Averaged Reward Models") fine-tunes several
reward models from a shared start with different seeds and averages their weights: fine-tuned from
one point they stay linearly connected, so the average scores about as their ensemble does at the
cost of one model, and it holds up better than its members on data unlike the training data.
Averaging the last checkpoints of one run (weight averaging along the trajectory) is the same
operation over one run's checkpoints.

Means are taken in fp32, one member read at a time (a running sum of one model's size), and kept in
the first member's dtypes.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from nemotron.checkpoint.hf import iter_tensors, save_hf_dir
from nemotron.errors import CheckpointError, ConfigError

State = Mapping[str, Tensor]


def averaging_shares(weights: Sequence[float] | None, count: int) -> list[float]:
    """Each member's share of the mean: equal, or `weights` normalised to sum to 1."""
    if count < 2:
        raise ConfigError(f"averaging needs at least 2 models, got {count}")
    if weights is None:
        return [1.0 / count] * count
    if len(weights) != count:
        raise ConfigError(f"{len(weights)} averaging weights for {count} models")
    if min(weights) < 0 or sum(weights) <= 0:
        raise ConfigError(f"averaging weights must be >= 0 with a positive sum, got {list(weights)}")
    return [w / sum(weights) for w in weights]


def running_mean(members: Iterable[tuple[str, State]], shares: Sequence[float]) -> dict[str, Tensor]:
    """Σ share × state over (origin, state) members of one shape, read one at a time. Integer tensors
    (step counters and the like) must be equal in every member and are kept as they are."""
    total: dict[str, Tensor] = {}
    first = ""
    shapes: dict[str, tuple[torch.Size, torch.dtype]] = {}
    count = 0
    for count, ((origin, state), share) in enumerate(zip(members, shares, strict=True), start=1):
        if count == 1:
            first, shapes = origin, {name: (t.shape, t.dtype) for name, t in state.items()}
        else:
            _check_same_shape(shapes, state, origin, first)
        for name, tensor in state.items():
            if not tensor.is_floating_point():
                if name in total and not torch.equal(total[name], tensor):
                    raise CheckpointError(f"cannot average {origin} with {first}: their integer tensor {name} differs")
                total[name] = tensor.detach().cpu().clone()
                continue
            term = share * tensor.detach().to("cpu", torch.float32)
            total[name] = term if count == 1 else total[name].add_(term)
    return {name: t.to(shapes[name][1]) for name, t in total.items()}


def _check_same_shape(shapes: Mapping[str, tuple[torch.Size, torch.dtype]], state: State, origin: str,
                      first: str) -> None:
    missing, extra = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
    if missing or extra:
        found = f"lacks {missing[0]}" if missing else f"has {extra[0]}, which it lacks"
        raise CheckpointError(f"cannot average {origin} with {first}: {origin} {found} "
                              f"({len(missing) + len(extra)} tensor names differ)")
    for name, tensor in state.items():
        if tensor.shape != shapes[name][0]:
            raise CheckpointError(f"cannot average {origin} with {first}: {name} is {tuple(tensor.shape)} there and "
                                  f"{tuple(shapes[name][0])} in {first}")


def average_state_dicts(states: Sequence[State], weights: Sequence[float] | None = None) -> dict[str, Tensor]:
    """The (weighted) mean of state dicts with the same tensor names and shapes."""
    return running_mean(((f"state dict {i}", s) for i, s in enumerate(states)),
                        averaging_shares(weights, len(states)))


def average_model_dirs(sources: Sequence[str | Path], out: str | Path,
                       weights: Sequence[float] | None = None) -> Path:
    """Average Hugging Face model directories of one shape (trained models, `OUT/final`s,
    `checkpoint-N`s) into `out`, with the first one's config and tokenizer. LoRA adapters are refused:
    the mean of A and B matrices is not the mean of their products (merge each one first)."""
    from nemotron.checkpoint.load import hf_config
    from nemotron.checkpoint.peft import CONFIG_FILE
    from nemotron.tokenizer import Tokenizer

    paths = [Path(s) for s in sources]
    shares = averaging_shares(weights, len(paths))
    for path in paths:
        if (path / CONFIG_FILE).is_file():
            raise CheckpointError(f"{path} is a LoRA adapter; merge it into its base model first "
                                  "(nemotron convert BASE OUT --merge-lora ADAPTER) and average the merged models")
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path} is not a model directory (no config.json)")
    config = hf_config(paths[0])
    for path in paths[1:]:
        other = hf_config(path)
        if type(other) is not type(config) or other.replace(torch_dtype=config.torch_dtype) != config:
            raise CheckpointError(f"cannot average {path} with {paths[0]}: their config.json differ (averaged models "
                                  "must have the same shape)")
    averaged = running_mean(((str(p), dict(iter_tensors(p))) for p in paths), shares)
    out = save_hf_dir(averaged, config, out)
    if (paths[0] / "tokenizer.model").is_file() or (paths[0] / "tokenizer.json").is_file():
        Tokenizer.from_dir(paths[0]).save(out)
    return out
