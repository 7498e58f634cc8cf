"""Reward models of the Nemotron-4 340B Reward shape: a trunk plus a linear head over the attributes,
read at the last token. Making one from a language model, and evaluating one as RewardBench and
HelpSteer2 report: pairwise accuracy (per category when the data has categories) and, per
attribute, the error and correlation against human ratings."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nemotron.model.config import REWARD_ATTRIBUTES, REWARD_WEIGHTS
from nemotron.model.nemotron import NemotronForRewardModel
from nemotron.tokenizer import Tokenizer
from nemotron.train.modes import eval_mode
from nemotron.train.preference_data import PreferenceRow, RatedRow, encode_scored


@torch.no_grad()
def score(model: NemotronForRewardModel, sequences: Sequence[list[int]], pad_id: int, batch_size: int = 16,
          device: torch.device | str = "cpu") -> Tensor:
    """Attribute scores (N, A) of token sequences, batched by similar length."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    out = torch.empty(len(sequences), model.config.num_reward_attributes)
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            picks = order[start:start + batch_size]
            width = max(len(sequences[i]) for i in picks)
            inputs = torch.full((len(picks), width), pad_id, dtype=torch.long)
            for r, i in enumerate(picks):
                inputs[r, :len(sequences[i])] = torch.tensor(sequences[i])
            lengths = torch.tensor([len(sequences[i]) for i in picks])
            out[picks] = model(inputs.to(device), lengths=lengths.to(device)).float().cpu()
    return out


@dataclass(slots=True)
class AttributeFit:
    count: int
    rmse: float
    pearson: float | None  # None when either side is constant


@dataclass(slots=True)
class RewardEvaluation:
    pairs: int = 0
    accuracy: float | None = None  # chosen scored above rejected (ties count as wrong)
    bt_loss: float | None = None  # mean −log σ(r_chosen − r_rejected): how sure, not only how often right
    by_category: dict[str, tuple[int, float]] = field(default_factory=dict)  # category -> (pairs, accuracy)
    attributes: dict[str, AttributeFit] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"pairs": self.pairs, "accuracy": self.accuracy, "bt_loss": self.bt_loss,
                "by_category": {k: {"pairs": n, "accuracy": a} for k, (n, a) in self.by_category.items()},
                "attributes": {k: {"count": f.count, "rmse": f.rmse, "pearson": f.pearson}
                               for k, f in self.attributes.items()}}

    def table(self) -> str:
        lines = []
        if self.pairs:
            lines += [f"pairwise accuracy: {self.accuracy:.3f} over {self.pairs} pairs (Bradley-Terry loss "
                      f"{self.bt_loss:.4f})"]
            if len(self.by_category) > 1 or (self.by_category and None not in self.by_category):
                width = max(len(k) for k in self.by_category)
                lines += [f"  {'category':<{width}}  pairs  accuracy"]
                lines += [f"  {k:<{width}}  {n:>5}  {a:.3f}" for k, (n, a) in sorted(self.by_category.items())]
        if self.attributes:
            lines += ["attribute     count   rmse  pearson"]
            lines += [f"{k:<12} {f.count:>6} {f.rmse:6.3f}  " + ("   n/a" if f.pearson is None else f"{f.pearson:6.3f}")
                      for k, f in self.attributes.items()]
        return "\n".join(lines)


def evaluate_reward_model(model: NemotronForRewardModel, rows: Sequence[PreferenceRow | RatedRow],
                          tokenizer: Tokenizer, seq_len: int, batch_size: int = 16,
                          device: torch.device | str = "cpu",
                          weights: Sequence[float] = REWARD_WEIGHTS) -> RewardEvaluation:
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    pairs = [r for r in rows if isinstance(r, PreferenceRow)]
    rated = [r for r in rows if isinstance(r, RatedRow)]
    result = RewardEvaluation()
    if pairs:
        sequences = [encode_scored(r.prompt, reply, tokenizer)[-seq_len:] for r in pairs for reply in (r.chosen, r.rejected)]
        scores = score(model, sequences, pad, batch_size, device)
        scalar = scores @ torch.tensor(list(weights[:scores.shape[1]]), dtype=scores.dtype)
        right = (scalar[0::2] > scalar[1::2]).tolist()
        result.pairs, result.accuracy = len(pairs), sum(right) / len(pairs)
        result.bt_loss = float(torch.nn.functional.softplus(scalar[1::2] - scalar[0::2]).mean())
        groups: dict[str, list[bool]] = defaultdict(list)
        for row, ok in zip(pairs, right):
            groups[row.category or "all"].append(ok)
        result.by_category = {k: (len(v), sum(v) / len(v)) for k, v in groups.items()}
    if rated:
        scores = score(model, [encode_scored(r.prompt, r.response, tokenizer)[-seq_len:] for r in rated], pad,
                       batch_size, device)
        for a, name in enumerate(REWARD_ATTRIBUTES[:scores.shape[1]]):
            found = [(scores[k, a].item(), r.ratings[name]) for k, r in enumerate(rated) if name in r.ratings]
            if found:
                result.attributes[name] = _fit(found)
    return result


def _fit(pairs: list[tuple[float, float]]) -> AttributeFit:
    predicted, actual = torch.tensor(pairs, dtype=torch.float64).unbind(1)
    rmse = math.sqrt(float((predicted - actual).square().mean()))
    p, a = predicted - predicted.mean(), actual - actual.mean()
    denominator = math.sqrt(float(p.square().sum() * a.square().sum()))
    return AttributeFit(len(pairs), rmse, float((p * a).sum()) / denominator if denominator > 0 else None)
