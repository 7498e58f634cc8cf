"""Alignment losses as pure functions of per-sequence quantities, so each can be checked by hand.

Notation (Nemotron-4 340B report, section 3.4): for a prompt x with a chosen response y_c and a
rejected response y_l, the policy's implicit reward margin is
    Δπ = [log π(y_c|x) − log π_ref(y_c|x)] − [log π(y_l|x) − log π_ref(y_l|x)]
with log-probabilities summed over the response tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nemotron.train.data import IGNORE


def token_logps(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """logits (B, T, V), targets (B, T) with IGNORE -> (log p of each target (B, T), 0 where
    ignored; mask (B, T)). In fp32: the sums over hundreds of tokens must not lose the margin."""
    mask = targets != IGNORE
    logps = torch.log_softmax(logits.float(), dim=-1)
    picked = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked * mask, mask


def dpo_loss(chosen_logratio: Tensor, rejected_logratio: Tensor, beta: float) -> Tensor:
    """Per-pair DPO loss −log σ(β Δπ) (Rafailov et al. 2023; TRL's "sigmoid")."""
    return -F.logsigmoid(beta * (chosen_logratio - rejected_logratio))


def rpo_loss(chosen_logratio: Tensor, rejected_logratio: Tensor, reward_gap: Tensor, beta: float,
             eta: float) -> Tensor:
    """Per-pair RPO loss: KL( Bernoulli(σ(η Δr)) ‖ Bernoulli(σ(β Δπ)) ), Δr = r(x, y_c) − r(x, y_l).

    The report writes it as D(a ‖ b) = σ(b) log(σ(b)/σ(a)) + (1 − σ(b)) log((1 − σ(b))/(1 − σ(a)))
    with a = β Δπ and b = η Δr: the policy's preference probability is pulled towards the reward
    model's, so a pair with a small reward gap is not pushed apart as hard as a clear one.
    Everything in log-sigmoids (log(1 − σ(z)) = log σ(−z)), finite for any margin."""
    policy = beta * (chosen_logratio - rejected_logratio)
    target = eta * reward_gap.to(policy.dtype)
    p = torch.sigmoid(target)
    return (p * (F.logsigmoid(target) - F.logsigmoid(policy))
            + (1 - p) * (F.logsigmoid(-target) - F.logsigmoid(-policy)))


def bradley_terry_loss(chosen_reward: Tensor, rejected_reward: Tensor, margin: Tensor | None = None) -> Tensor:
    """Per-pair −log σ(r_c − r_l); with `margin` (a preference strength ≥ 0, as HelpSteer2-Preference
    annotates) the scaled form −m log σ(r_c − r_l), which weighs clear preferences more."""
    loss = -F.logsigmoid(chosen_reward - rejected_reward)
    return loss if margin is None else margin.to(loss.dtype) * loss
