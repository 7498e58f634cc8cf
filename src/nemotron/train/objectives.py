"""What a training step minimises: next-token loss (pretraining, SFT), DPO, RPO, or a reward model's
regression and Bradley-Terry losses. The Trainer is the same for all of them.

An objective's `loss(model, micro_batch, totals)` returns the micro-batch's share of the whole
batch's loss: sums divided by the whole batch's counts (`totals`), so the micro-batches of one
step add up to exactly the loss of the batch taken at once (gradient accumulation), and the ranks
of a data-parallel run add up to the loss of the global batch.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nemotron.errors import ConfigError
from nemotron.model.config import REWARD_WEIGHTS
from nemotron.train.data import IGNORE
from nemotron.train.losses import bradley_terry_loss, dpo_loss, rpo_loss, token_logps
from nemotron.train.modes import eval_mode
from nemotron.train.preference_data import PreferenceBatch, PreferenceDataset, RewardBatch, RewardDataset

Metrics = dict[str, float]


class Objective(Protocol):
    def prepare(self, model: nn.Module, out_dir: Path, device: torch.device,
                autocast: Callable) -> None: ...

    def loss(self, model: nn.Module, batch, totals: dict[str, int]) -> tuple[Tensor, Metrics]: ...

    def weight(self, totals: dict[str, int], metric: str) -> int:
        """How much one batch counts in a mean of `metric` over batches (validation)."""
        ...


class LanguageModeling:
    """Mean cross-entropy over the target tokens (IGNORE elsewhere): pretraining and SFT."""

    def prepare(self, model, out_dir, device, autocast) -> None:
        pass

    def loss(self, model: nn.Module, batch, totals: dict[str, int]) -> tuple[Tensor, Metrics]:
        logits = model(batch.inputs)  # (B, T, V)
        nll = F.cross_entropy(logits.float().flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE,
                              reduction="sum")
        loss = nll / max(totals["tokens"], 1)
        return loss, {"loss": loss.item()}

    def weight(self, totals: dict[str, int], metric: str) -> int:
        return totals["tokens"]


PREFERENCE_LOSSES = ("dpo", "rpo")


@dataclass(slots=True, frozen=True)
class PreferenceConfig:
    loss: str = "dpo"  # "dpo" or "rpo"
    beta: float = 0.1  # strength of the KL regularisation towards the reference policy
    eta: float = 1.0  # RPO: scale of the reward gap
    sft_weight: float = 0.0  # DPO / RPO: weight of the added SFT loss on the chosen responses

    def __post_init__(self) -> None:
        if self.loss not in PREFERENCE_LOSSES:
            raise ConfigError(f"PreferenceConfig.loss must be one of {PREFERENCE_LOSSES}, got {self.loss!r}")
        if self.beta <= 0 or self.eta <= 0 or self.sft_weight < 0:
            raise ConfigError("PreferenceConfig: beta and eta must be positive, sft_weight >= 0")


class PreferenceOptimization:
    """DPO (with an optional SFT term on the chosen responses) or RPO against a frozen reference.

    The reference is the model as training starts: its log-probabilities of every pair are
    computed once in `prepare` and kept in OUT/reference_logps.pt, so only one model is resident
    and a resumed run uses the reference of the original start, not the partly trained weights."""

    CACHE = "reference_logps.pt"

    def __init__(self, config: PreferenceConfig, datasets: list[PreferenceDataset], chunk: int = 8) -> None:
        self.config, self.datasets, self.chunk = config, datasets, chunk

    def prepare(self, model: nn.Module, out_dir: Path, device: torch.device, autocast: Callable) -> None:
        references = computed_once(Path(out_dir) / self.CACHE, self.datasets, _fingerprint,
                                   lambda dataset: reference_logps(model, dataset, device, autocast, self.chunk))
        for dataset, reference in zip(self.datasets, references):
            dataset.reference = reference

    def loss(self, model: nn.Module, batch: PreferenceBatch, totals: dict[str, int]) -> tuple[Tensor, Metrics]:
        cfg, b = self.config, batch.num_pairs
        logps, _ = token_logps(model(batch.inputs), batch.targets)  # (2B, T)
        sequence = logps.sum(-1)  # (2B,)
        if batch.reference is None:
            raise RuntimeError("the reference log-probs were not computed; the trainer calls prepare() first")
        reference = batch.reference.to(sequence.device)  # (B, 2)
        chosen_ratio, rejected_ratio = sequence[:b] - reference[:, 0], sequence[b:] - reference[:, 1]
        if cfg.loss == "dpo":
            per_pair = dpo_loss(chosen_ratio, rejected_ratio, cfg.beta)
        else:
            if batch.reward_gap is None:
                raise ConfigError("RPO needs chosen_reward / rejected_reward for every pair")
            per_pair = rpo_loss(chosen_ratio, rejected_ratio, batch.reward_gap, cfg.beta, cfg.eta)
        loss = per_pair.sum() / totals["pairs"]
        if cfg.sft_weight:
            loss = loss + cfg.sft_weight * -logps[:b].sum() / max(totals["chosen_tokens"], 1)
        margin = (chosen_ratio - rejected_ratio).detach()
        share = b / totals["pairs"]
        return loss, {"loss": loss.item(), "accuracy": (margin > 0).float().mean().item() * share,
                      "margin": margin.mean().item() * cfg.beta * share}

    def weight(self, totals: dict[str, int], metric: str) -> int:
        return totals["pairs"]


@torch.no_grad()
def reference_logps(model: nn.Module, dataset: PreferenceDataset, device: torch.device, autocast: Callable,
                    chunk: int) -> Tensor:
    """Summed reply log-probabilities of every pair under `model`: (N, 2) for (chosen, rejected)."""
    out = torch.empty(len(dataset), 2)
    with eval_mode(model):
        for start in range(0, len(dataset), chunk):
            picks = list(range(start, min(start + chunk, len(dataset))))
            batch = dataset.collate(picks).to(device)
            with autocast():
                logps, _ = token_logps(model(batch.inputs), batch.targets)
            sums = logps.sum(-1).float().cpu()
            out[picks, 0], out[picks, 1] = sums[:len(picks)], sums[len(picks):]
    return out


def _fingerprint(dataset: PreferenceDataset) -> str:
    digest = hashlib.sha256()
    for example in dataset.examples:
        for ids, start in (example.chosen, example.rejected):
            digest.update(repr((start, ids)).encode())
    return digest.hexdigest()[:32]


def _reward_fingerprint(dataset: RewardDataset) -> str:
    digest = hashlib.sha256()
    for example in dataset.examples:
        digest.update(repr((example.starts, example.ids)).encode())
    return digest.hexdigest()[:32]


def computed_once(path: Path, datasets: Sequence, fingerprint: Callable, compute: Callable) -> list:
    """compute(dataset) for each dataset, taken from the table at `path` (keyed by the dataset's
    fingerprint) where an earlier start of this run computed it, and saved there: what is computed from
    the model as training starts, so a resumed run keeps the original start's values, not the partly
    trained model's."""
    cached = torch.load(path, weights_only=True) if path.is_file() else {}
    values = []
    for dataset in datasets:
        key = fingerprint(dataset)
        if key not in cached:
            cached[key] = compute(dataset)
        values.append(cached[key])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")  # data-parallel ranks write the same table
    torch.save(cached, tmp)
    tmp.replace(path)
    return values


REWARD_LOSSES = ("regression", "bt", "combined")
DENSE_TARGETS = ("so-far", "per-token")


@dataclass(slots=True, frozen=True)
class RewardConfig:
    loss: str = "combined"  # regression (MSE on ratings), bt (Bradley-Terry on pairs), or both summed
    bt_weight: float = 1.0
    regression_weight: float = 1.0
    lm_weight: float = 0.0  # auxiliary next-token loss on the chosen replies, through the LM's output layer
    distill_weight: float = 0.0  # soft Bradley-Terry towards the frozen LM's preference between the replies
    distill_scale: float = 0.1  # the LM's preference is σ(distill_scale × its log-likelihood margin)
    dense_weight: float = 0.0  # the head at every reply token towards distill_scale × the LM's log p(reply so far)
    dense_target: str = "so-far"  # or "per-token": each step r(t) − r(t − 1) towards s log p(x_t)
    scalar_weights: tuple[float, ...] = REWARD_WEIGHTS  # attributes -> the scalar reward pairs compare

    def __post_init__(self) -> None:
        if self.loss not in REWARD_LOSSES:
            raise ConfigError(f"RewardConfig.loss must be one of {REWARD_LOSSES}, got {self.loss!r}")
        if min(self.bt_weight, self.regression_weight, self.lm_weight, self.distill_weight, self.dense_weight) < 0:
            raise ConfigError("RewardConfig weights must be >= 0")
        if self.dense_target not in DENSE_TARGETS:
            raise ConfigError(f"RewardConfig.dense_target must be one of {DENSE_TARGETS}, got {self.dense_target!r}")
        if self.distill_scale <= 0:
            raise ConfigError(f"RewardConfig.distill_scale must be positive, got {self.distill_scale}")


class RewardModeling:
    """Nemotron-4 340B Reward's head over the attributes: MSE on rated responses (SteerLM
    regression), Bradley-Terry on pairs of the scalar reward (scaled by the preference strength
    when the data has one, as HelpSteer2-Preference's Scaled BT), or the two summed.

    With `lm_weight`, the trunk also keeps predicting the tokens of the chosen (correct) replies
    through `lm_head`, the frozen output layer of the language model it came from:
    a regulariser that keeps the trunk's knowledge while the head learns (not part of the result).

    With `distill_weight`, the reward margin of each pair is also pulled towards the language model's
    own preference: before training, the model as given (the LM's trunk, with `lm_head`) scores every
    reply token of `datasets` once, and the loss adds KL(Bernoulli(σ(s Δlog p)) ‖ Bernoulli(σ(Δr)))
    with Δlog p the pair's log-likelihood margin (RPO's loss with the LM as the judge): the head
    learns to read what the trunk already knows about the reply instead of its surface.

    With `dense_weight`, the head is also applied at every reply token t of every sequence (pairs'
    both replies and rated responses) and r(t) − r(start − 1) is regressed (MSE) towards
    s × Σ_{start ≤ u ≤ t} log p(x_u | x_<u), the LM's log-likelihood of the reply so far; r(start − 1),
    the head on the prompt alone, is the free per-prompt offset (it cancels in a pair). At the last
    token the target margin of a pair is `distill_weight`'s s Δlog p. With `dense_target="per-token"`
    each step r(t) − r(t − 1) is regressed towards s log p(x_t | x_<t) instead: the same sums when
    fitted exactly, each token's error counted once rather than at every later position. Every token
    supervises one skill, "how plausible is the reply so far to the model itself", which memorising
    the training facts cannot give and the trunk's predictions carry to unseen facts."""

    CACHE = "teacher_logps.pt"

    def __init__(self, config: RewardConfig, lm_head: nn.Linear | None = None,
                 datasets: Sequence[RewardDataset] = (), chunk: int = 16) -> None:
        uses_head = config.lm_weight or config.distill_weight or config.dense_weight
        if uses_head and lm_head is None:
            raise ConfigError("RewardConfig.lm_weight, distill_weight and dense_weight need the language model's "
                              "output layer (lm_head)")
        self.config, self.datasets, self.chunk = config, datasets, chunk
        self.lm_head = lm_head.requires_grad_(False) if lm_head is not None and uses_head else None

    def prepare(self, model, out_dir, device, autocast) -> None:
        if self.lm_head is not None:
            self.lm_head.to(device)
        if self.config.distill_weight or self.config.dense_weight:
            # The teacher is the model as training starts: kept in OUT/teacher_logps.pt, so a resumed run
            # distils from the same teacher, not from the partly trained trunk.
            teachers = computed_once(Path(out_dir) / self.CACHE, self.datasets, _reward_fingerprint,
                                     lambda dataset: self._teacher_logps(model, dataset, device, autocast))
            for dataset, tokens in zip(self.datasets, teachers):
                if self.config.distill_weight:
                    dataset.teacher = torch.tensor([float("nan") if e.ratings is not None else
                                                    float(seqs[0].sum() - seqs[1].sum())
                                                    for e, seqs in zip(dataset.examples, tokens)])
                if self.config.dense_weight:
                    dataset.teacher_logps = tokens

    @torch.no_grad()
    def _teacher_logps(self, model: nn.Module, dataset: RewardDataset, device: torch.device,
                       autocast: Callable) -> list[list[Tensor]]:
        """Per example and sequence, each reply token's log-probability at its position (0 elsewhere)
        under the model as given: one forward pass over the data, before training."""
        found: list[list[Tensor]] = []
        with eval_mode(model):
            for start in range(0, len(dataset), self.chunk):
                picks = list(range(start, min(start + self.chunk, len(dataset))))
                batch = dataset.collate(picks).to(device)
                with autocast():  # lm_head too: under bf16 the trunk's output is bf16 and lm_head's weights fp32
                    hidden = model.model(batch.inputs)  # (N, T, H)
                    logps = self._token_logps(hidden, batch.inputs, batch.starts, batch.lengths).float().cpu()
                rows = iter(zip(logps, batch.lengths.tolist()))  # pairs' chosen, their rejected, then rated rows
                pairs = [i for i in picks if dataset.examples[i].ratings is None]
                chosen = {i: next(rows) for i in pairs}
                rejected = {i: next(rows) for i in pairs}
                for i in picks:
                    seqs = [chosen[i], rejected[i]] if i in chosen else [next(rows)]
                    found.append([row[:n].clone() for row, n in seqs])
        return found

    def scalar(self, scores: Tensor) -> Tensor:
        weights = torch.tensor(self.config.scalar_weights[:scores.shape[-1]], device=scores.device)
        return scores @ weights

    def loss(self, model: nn.Module, batch: RewardBatch, totals: dict[str, int]) -> tuple[Tensor, Metrics]:
        cfg, p = self.config, batch.num_pairs
        seen: dict[str, Tensor] = {}

        def keep(_module, _inputs, hidden: Tensor) -> None:  # hidden (N, T, H): the trunk's output
            seen["hidden"] = hidden
            if cfg.dense_weight:  # the head at every token, inside the forward (where FSDP gathers its weights)
                seen["dense"] = model.rm_head(hidden)  # (N, T, A)

        hook = model.model.register_forward_hook(keep) if cfg.lm_weight or cfg.dense_weight else None
        scores = model(batch.inputs, lengths=batch.lengths)  # (N, A) fp32
        if hook is not None:
            hook.remove()
        loss = scores.new_zeros(())
        # The same metric keys on every micro-batch and rank (they are summed across ranks), set by
        # what the whole batch holds.
        metrics: Metrics = {}
        reward = self.scalar(scores[:2 * p])  # (2P,): chosen rows, then rejected
        if totals["pairs"] and cfg.loss != "regression":
            bt = bradley_terry_loss(reward[:p], reward[p:], batch.margin).sum() / totals["pairs"]
            loss = loss + cfg.bt_weight * bt
            metrics["accuracy"] = (reward[:p] > reward[p:]).float().sum().item() / totals["pairs"]
        if totals["pairs"] and cfg.distill_weight:
            if batch.teacher is None:
                raise RuntimeError("the teacher's margins were not computed; the trainer calls prepare() first")
            distill = rpo_loss(reward[:p], reward[p:], batch.teacher, 1.0, cfg.distill_scale).sum() / totals["pairs"]
            loss = loss + cfg.distill_weight * distill
            metrics["distill"] = distill.item()
        if totals["ratings"] and cfg.loss != "bt":
            rated = scores[2 * p:]
            mse = ((rated - batch.ratings).square() * batch.rated).sum() / totals["ratings"]
            loss = loss + cfg.regression_weight * mse
            metrics["mse"] = mse.item()
        if totals["pairs"] and cfg.lm_weight:
            lm = self._reply_nll(seen["hidden"][:p], batch.inputs[:p], batch.starts[:p], batch.lengths[:p])
            lm = lm / max(totals["lm_tokens"], 1)
            loss = loss + cfg.lm_weight * lm
            metrics["lm_loss"] = lm.item()
        if totals["dense_tokens"] and cfg.dense_weight:
            if batch.teacher_logps is None:
                raise RuntimeError("the teacher's token log-probs were not computed; the trainer calls prepare() first")
            dense = self._dense_error(self.scalar(seen["dense"].float()), batch) / totals["dense_tokens"]
            loss = loss + cfg.dense_weight * dense
            metrics["dense"] = dense.item()
        metrics["loss"] = loss.item()
        return loss, metrics

    def _dense_error(self, rewards: Tensor, batch: RewardBatch) -> Tensor:
        """Σ over rows and reply positions of (r(t) − r(start − 1) − s × log p(reply up to t))², or per token
        (r(t) − r(t − 1) − s × log p(x_t | x_<t))²; rewards (N, T)."""
        scale = self.config.distill_scale
        inside = dense_positions(batch.starts, batch.lengths, batch.teacher_logps.shape[1])
        if self.config.dense_target == "per-token":
            steps = rewards[:, 1:] - rewards[:, :-1]  # (N, T-1): r(t) − r(t − 1) for t ≥ 1
            return ((steps - scale * batch.teacher_logps[:, 1:]).square() * inside[:, 1:]).sum()
        target = scale * batch.teacher_logps.cumsum(-1)  # (N, T): the reply's log-likelihood up to each position
        anchor = rewards.gather(1, (batch.starts - 1).clamp(min=0)[:, None])  # (N, 1): the prompt alone
        return ((rewards - anchor - target).square() * inside).sum()

    def _reply_nll(self, hidden: Tensor, inputs: Tensor, starts: Tensor, lengths: Tensor) -> Tensor:
        """Summed next-token loss of the replies in right-padded rows: hidden (P, T, H), inputs (P, T)."""
        return -self._token_logps(hidden, inputs, starts, lengths).sum()

    def _token_logps(self, hidden: Tensor, inputs: Tensor, starts: Tensor, lengths: Tensor) -> Tensor:
        """Each reply token's log-probability through `lm_head` at its own position, from `starts` to the
        newline before the final <extra_id_2> (0 elsewhere): hidden (N, T, H), inputs (N, T) -> (N, T)."""
        position = torch.arange(1, inputs.shape[1], device=inputs.device)  # of each target token
        inside = (position >= starts[:, None]) & (position < lengths[:, None] - 1)  # (N, T-1)
        logits = self.lm_head(hidden[:, :-1][inside]).float()  # (M, V): only the reply positions
        picked = -F.cross_entropy(logits, inputs[:, 1:][inside], reduction="none")  # (M,)
        out = torch.zeros(inputs.shape, device=inputs.device)
        out[:, 1:][inside] = picked
        return out

    def weight(self, totals: dict[str, int], metric: str) -> int:
        # Each metric is a mean over what it measures: pairs, rated attributes, the chosen replies' tokens,
        # or every reply position the dense distillation reads.
        counts = {"accuracy": "pairs", "distill": "pairs", "mse": "ratings", "lm_loss": "lm_tokens",
                  "dense": "dense_tokens"}
        return totals[counts[metric]] if metric in counts else totals["pairs"] + totals["ratings"]


def dense_positions(starts: Tensor, lengths: Tensor, width: int) -> Tensor:
    """Where the dense distillation applies, (N, width) bool: every reply token and the final
    <extra_id_2> (which adds nothing to the log-likelihood), in rows whose prompt is in the window
    (start ≥ 1)."""
    position = torch.arange(width, device=starts.device)
    return (position >= starts[:, None]) & (position < lengths[:, None]) & (starts[:, None] >= 1)
