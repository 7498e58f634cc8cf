"""Next-token sampling for a batch whose rows each carry their own knobs.

The steps and their order follow vLLM's sampler, with NeMo's steps (`sample_sequence_batch`,
nemo/collections/nlp/modules/common/text_generation_utils.py) where both have them: block EOS
before the minimum length → presence / frequency penalties → (greedy rows: repetition penalty,
argmax here) → temperature → repetition penalty → min-p → top-k (ties with the k-th value kept) →
top-p (the token whose cumulative probability first exceeds p is kept) → draw. Each step is a pure
(B, V) → (B, V) function of per-row tensors, so one call serves a batch that mixes greedy and
sampled requests with different settings. All arithmetic is float32.

Penalties, as vLLM and OpenAI define them: presence and frequency penalties count the tokens
generated so far (not the prompt) and move raw logits before temperature,
logit[j] -= count_j × frequency + (count_j > 0) × presence; the repetition penalty covers prompt and
output. All three apply to greedy rows too (vLLM's, and OpenAI's temperature 0). The repetition
penalty divides, so it commutes with temperature: applying it after temperature (NeMo's place)
draws exactly what vLLM's order would. min_p drops tokens whose probability (after temperature) is
below min_p × the most likely token's.

Deliberate differences from NeMo:
- repetition penalty always applies (NeMo only tracks used tokens when compute_logprob is on),
  covers the whole prompt plus everything generated (NeMo skips the first prompt position) and
  moves negative logits down too (NeMo divides every logit, raising negative ones); NeMo's greedy
  ignores it, so the NeMo server sends greedy requests without one;
- the minimum length also blocks the row's stop_token_ids, not only EOS (as vLLM's min_tokens);
- top-p keeps every token tied with the last kept one, where NeMo splits ties by sort order;
- logits beyond `vocab_size` (padding of the output layer) are dropped, not set to -inf, so
  log-probabilities are normalised over real tokens only;
- a seeded row draws from its own generator, so its tokens do not depend on the rest of the batch
  (NeMo seeds the global RNG once per request batch).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from numbers import Integral, Real

import torch
from torch import Tensor

from nemotron.errors import NemotronError

__all__ = [
    "RequestOutputKind",
    "SamplingParams",
    "SamplingParamsError",
    "SamplingTensors",
    "apply_presence_frequency_penalties",
    "apply_repetition_penalty",
    "apply_temperature",
    "block_eos_before_min_tokens",
    "derive_seed",
    "draw",
    "draw_uniforms",
    "log_probs",
    "make_generator",
    "min_p_filter",
    "process_logits",
    "sample",
    "top_k_filter",
    "top_p_filter",
]

MAX_TEMPERATURE = 100.0
GREEDY_BELOW = 1e-5  # vLLM's _SAMPLING_EPS: temperatures below it sample greedily
MAX_ADDITIVE_PENALTY = 2.0  # presence / frequency penalties: OpenAI's and vLLM's range is [-2, 2]
_NEG_INF = float("-inf")


class SamplingParamsError(NemotronError, ValueError):
    """A sampling parameter is out of range; the message names the field."""


class RequestOutputKind(IntEnum):
    """What each output `AsyncLLM.generate` yields holds (vLLM's enum, same values):
    CUMULATIVE everything generated so far, DELTA what this step added, FINAL_ONLY one output at the end."""

    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass(slots=True)
class SamplingParams:
    """Per-request generation settings, named and defaulted as vLLM's `SamplingParams`.

    Defaults are the plain model distribution (temperature 1, no top-k, no top-p, no penalty), as in
    vLLM and OpenAI's API; servers map their own defaults onto these (the NeMo server's top_p 0.9).

    n: completions per prompt (`LLM.generate`, `AsyncLLM.generate` and the servers run each as an
        engine request of its own, seeded from `seed` and its index).
    temperature: 0 ≤ t ≤ 100; 0 (or below 1e-5, as vLLM) is greedy (argmax): top_k, top_p and min_p are then ignored, the
        penalties and min_tokens still apply (as vLLM; NeMo's greedy ignores its repetition penalty).
    top_p: keep the most likely tokens up to and including the one whose cumulative probability
        first exceeds p; 1 = off.
    top_k: keep the k most likely tokens and any tied with the k-th; 0 (or vLLM's -1) = off.
    min_p: 0 ≤ min_p ≤ 1; tokens less likely than min_p × the most likely token are dropped; 0 = off.
    repetition_penalty: ≥ 1; tokens already in prompt or output have positive logits divided and
        negative logits multiplied by it.
    presence_penalty, frequency_penalty: in [-2, 2] (OpenAI's); each token generated so far (the
        prompt does not count) has its logit lowered by frequency_penalty × its count plus
        presence_penalty once; negative values encourage repeats.
    max_tokens: at most this many tokens are generated (vLLM's default 16); None: up to the end of
        the model's context.
    min_tokens: EOS and stop_token_ids are blocked until this many tokens were generated, and no stop
        string ends in their text (vLLM's; one that starts there and ends later matches).
    stop: strings that end generation (matched on the text, also across tokens; not part of it).
    include_stop_str_in_output: the matched stop string ends the text instead (vLLM's).
    stop_before_min_tokens: stop strings match within min_tokens too (NeMo's end_strings, which its
        min_tokens_to_generate does not hold back; only EOS is blocked).
    stop_token_ids: token ids that end generation (their text is not shown).
    ignore_eos: EOS does not end generation (and is therefore not blocked before min_tokens).
    seed: rows with a seed draw from their own generator, reproducibly; None = global RNG.
    logprobs: None = none; k ≥ 0 = each generated token's log-probability under the unprocessed
        model distribution (temperature 1, no filtering, like NeMo's compute_logprob and vLLM) and
        its k most likely alternatives; -1 = the whole vocabulary.
    prompt_logprobs: the same for every prompt token after the first (scoring, OpenAI `echo`),
        computed during prefill; such requests do not reuse prefix-cached blocks.
    output_kind: what `AsyncLLM.generate` yields (RequestOutputKind); `LLM.generate` returns finished
        outputs whatever it says.
    best_of, use_beam_search: refused unless best_of == n and use_beam_search is false (vLLM V1 dropped
        both); run n completions and rank them by cumulative_logprob instead.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    stop_before_min_tokens: bool = False
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    seed: int | None = None
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE
    best_of: int | None = None
    use_beam_search: bool = False

    def __post_init__(self) -> None:
        for name in ("ignore_eos", "stop_before_min_tokens", "include_stop_str_in_output"):
            if not isinstance(getattr(self, name), bool):
                raise SamplingParamsError(f"{name} must be true or false, got {getattr(self, name)!r}")
        self.n = _integer("n", self.n, minimum=1)
        if self.best_of is not None and self.best_of != self.n:
            raise SamplingParamsError(f"best_of={self.best_of} is not supported (vLLM V1 dropped it); ask for "
                                      "n completions and rank them by cumulative_logprob")
        if self.use_beam_search:
            raise SamplingParamsError("use_beam_search is not supported: this engine samples (vLLM V1 dropped beam "
                                      "search from SamplingParams)")
        try:
            self.output_kind = RequestOutputKind(self.output_kind)
        except ValueError:
            raise SamplingParamsError(f"output_kind must be a RequestOutputKind, got {self.output_kind!r}") from None
        if self.max_tokens is not None:
            self.max_tokens = _integer("max_tokens", self.max_tokens, minimum=0)
        self.min_tokens = _integer("min_tokens", self.min_tokens, minimum=0)
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise SamplingParamsError(f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})")
        self.temperature = _real("temperature", self.temperature)
        if not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise SamplingParamsError(f"temperature must be in [0, {MAX_TEMPERATURE:g}] (0 is greedy), "
                                      f"got {self.temperature}")
        if self.temperature < GREEDY_BELOW:  # vLLM's: logits / 1e-38 overflow, every positive one ties
            self.temperature = 0.0
        self.top_k = _integer("top_k", self.top_k, minimum=-1)
        self.top_k = max(self.top_k, 0)  # vLLM spells "off" -1
        self.top_p = _real("top_p", self.top_p)
        if not 0 < self.top_p <= 1:
            raise SamplingParamsError(f"top_p must be in (0, 1], got {self.top_p}")
        self.repetition_penalty = _real("repetition_penalty", self.repetition_penalty)
        if self.repetition_penalty < 1:
            raise SamplingParamsError(f"repetition_penalty must be >= 1.0, got {self.repetition_penalty}")
        for name in ("presence_penalty", "frequency_penalty"):
            setattr(self, name, _real(name, getattr(self, name)))
            if abs(getattr(self, name)) > MAX_ADDITIVE_PENALTY:
                raise SamplingParamsError(f"{name} must be in [-{MAX_ADDITIVE_PENALTY:g}, {MAX_ADDITIVE_PENALTY:g}], "
                                          f"got {getattr(self, name)}")
        self.min_p = _real("min_p", self.min_p)
        if not 0 <= self.min_p <= 1:
            raise SamplingParamsError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.stop is None:
            self.stop = []
        elif isinstance(self.stop, str):  # vLLM takes one string too
            self.stop = [self.stop]
        if not isinstance(self.stop, (list, tuple)) or not all(isinstance(s, str) and s for s in self.stop):
            raise SamplingParamsError(f"stop must be a string or a list of non-empty strings, got {self.stop!r}")
        self.stop = list(self.stop)
        if self.stop_token_ids is None:  # vLLM's default
            self.stop_token_ids = []
        if not isinstance(self.stop_token_ids, (list, tuple)):
            raise SamplingParamsError(f"stop_token_ids must be a list of token ids, got {self.stop_token_ids!r}")
        self.stop_token_ids = [_integer("stop_token_ids", t, minimum=0) for t in self.stop_token_ids]
        if self.seed is not None:
            self.seed = _integer("seed", self.seed, minimum=0)
            if self.seed >= 2**64:
                raise SamplingParamsError(f"seed must be below 2**64, got {self.seed}")
        for name in ("logprobs", "prompt_logprobs"):
            if getattr(self, name) is not None:
                setattr(self, name, _integer(name, getattr(self, name), minimum=-1))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def derive_seed(seed: int | None, index: int) -> int | None:
    """The seed of completion `index` of a seeded request with n > 1: reproducible, and different
    from its siblings (index 0 keeps the request's seed)."""
    if seed is None or index == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _integer(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise SamplingParamsError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise SamplingParamsError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise SamplingParamsError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(slots=True)
class SamplingTensors:
    """The knobs of one batch composition as (B,) tensors, plus the per-step state they need.

    Greedy rows get neutral sampling knobs (temperature 1, no filter) but keep their penalties, so
    their processed logits are their penalised, EOS-masked logits and one argmax serves them. The
    `use_*` flags and the optional tensors (None when no row needs them) let `sample` skip steps no
    row needs without a device sync.
    """

    vocab_size: int
    greedy: Tensor  # (B,) bool
    temperature: Tensor  # (B,) float32
    top_k: Tensor  # (B,) int64, 0 = off
    top_p: Tensor  # (B,) float32, 1 = off
    repetition_penalty: Tensor  # (B,) float32
    presence_penalty: Tensor | None  # (B,) float32; None (like the two below) when no row uses it
    frequency_penalty: Tensor | None  # (B,) float32
    min_p: Tensor | None  # (B,) float32, 0 = off
    min_new_tokens: Tensor  # (B,) int64
    generated_counts: Tensor  # (B,) int64, advanced by record()
    stop_mask: Tensor | None  # (B, V) bool: tokens blocked before min_new_tokens
    seen_mask: Tensor | None  # (B, V) bool: tokens of prompt + output, for the repetition penalty
    # Presence / frequency: each token's penalty so far, count × frequency + (count > 0) × presence,
    # kept up to date by record() so that a step subtracts it in one pass; and which tokens were generated.
    output_penalty: Tensor | None  # (B, V) float32
    generated_mask: Tensor | None  # (B, V) bool
    all_greedy: bool
    max_top_k: int  # 0 when no sampled row uses top-k
    use_top_p: bool
    max_logprobs: int  # most alternatives any row asked for; -1 when no row wants logprobs

    @classmethod
    def from_params(
        cls,
        params: Sequence[SamplingParams],
        vocab_size: int,
        device: torch.device | str = "cpu",
        *,
        eos_id: int | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
        generated_counts: Sequence[int] | None = None,
    ) -> SamplingTensors:
        """Pack per-row params. token_ids (prompt + tokens generated so far, per row) is needed when a
        row has a penalty; generated_counts (defaults to zeros) says how many of a row's token_ids
        are output, which the presence and frequency penalties count."""
        if not params:
            raise ValueError("from_params needs at least one row")
        if eos_id is not None and not 0 <= eos_id < vocab_size:
            raise ValueError(f"eos_id {eos_id} is outside the vocabulary of {vocab_size}")
        counts = [0] * len(params) if generated_counts is None else list(generated_counts)
        if len(counts) != len(params):
            raise ValueError(f"generated_counts has {len(counts)} rows, params has {len(params)}")
        sampled = [not p.greedy for p in params]

        def per_row(values: list, dtype: torch.dtype) -> Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        penalties = [p.repetition_penalty for p in params]
        additive = any(p.presence_penalty or p.frequency_penalty for p in params)
        if (additive or any(x > 1 for x in penalties)) and (token_ids is None or len(token_ids) != len(params)):
            raise ValueError("penalties need token_ids (prompt + output) for every row")
        seen_mask = _row_mask(token_ids, vocab_size, device, "token_ids") if any(x > 1 for x in penalties) else None
        presence = per_row([p.presence_penalty for p in params], torch.float32) if additive else None
        frequency = per_row([p.frequency_penalty for p in params], torch.float32) if additive else None
        output_penalty = generated_mask = None
        if additive:
            outputs = [row[len(row) - c:] if c else [] for row, c in zip(token_ids, counts)]
            output_counts = _row_counts(outputs, vocab_size, device)  # (B, V)
            generated_mask = output_counts > 0
            output_penalty = output_counts * frequency.unsqueeze(1) + generated_mask * presence.unsqueeze(1)
        min_ps = [p.min_p if s else 0.0 for p, s in zip(params, sampled)]
        stop_mask = None
        if any(p.min_tokens > 0 for p in params):
            stops = [
                ([] if p.ignore_eos or eos_id is None else [eos_id]) + p.stop_token_ids for p in params
            ]
            stop_mask = _row_mask(stops, vocab_size, device, "stop_token_ids")
        top_ks = [min(p.top_k, vocab_size) if s else 0 for p, s in zip(params, sampled)]
        top_ps = [p.top_p if s else 1.0 for p, s in zip(params, sampled)]
        wanted = [-1 if p.logprobs is None else vocab_size if p.logprobs == -1 else p.logprobs for p in params]
        return cls(
            vocab_size=vocab_size,
            greedy=per_row([not s for s in sampled], torch.bool),
            temperature=per_row([p.temperature if s else 1.0 for p, s in zip(params, sampled)], torch.float32),
            top_k=per_row(top_ks, torch.int64),
            top_p=per_row(top_ps, torch.float32),
            repetition_penalty=per_row(penalties, torch.float32),
            presence_penalty=presence,
            frequency_penalty=frequency,
            min_p=per_row(min_ps, torch.float32) if any(p > 0 for p in min_ps) else None,
            min_new_tokens=per_row([p.min_tokens for p in params], torch.int64),
            generated_counts=per_row(counts, torch.int64),
            stop_mask=stop_mask,
            seen_mask=seen_mask,
            output_penalty=output_penalty,
            generated_mask=generated_mask,
            all_greedy=not any(sampled),
            max_top_k=max(top_ks),
            use_top_p=any(p < 1 for p in top_ps),
            max_logprobs=max(wanted),
        )

    def __len__(self) -> int:
        return self.greedy.shape[0]

    def record(self, token_ids: Tensor) -> None:
        """Advance the per-step state by one generated token per row (token_ids: (B,))."""
        self.generated_counts += 1
        if self.seen_mask is not None:
            self.seen_mask.scatter_(1, token_ids.view(-1, 1).to(self.seen_mask.device), True)
        if self.output_penalty is not None:  # O(B): only the new tokens' entries change
            ids = token_ids.view(-1, 1).to(self.output_penalty.device)  # (B, 1)
            first = ~self.generated_mask.gather(1, ids)  # (B, 1): presence counts once
            added = self.frequency_penalty.unsqueeze(1) + first * self.presence_penalty.unsqueeze(1)
            self.output_penalty.scatter_add_(1, ids, added)
            self.generated_mask.scatter_(1, ids, True)


def _row_mask(ids: Sequence[Sequence[int]], vocab_size: int, device: torch.device | str, what: str) -> Tensor:
    """(B, V) bool mask with mask[b, t] set for every t in ids[b]."""
    rows = [b for b, row in enumerate(ids) for _ in row]
    cols = [t for row in ids for t in row]
    if cols and not 0 <= min(cols) <= max(cols) < vocab_size:
        raise ValueError(f"{what} holds a token id outside the vocabulary of {vocab_size}")
    mask = torch.zeros(len(ids), vocab_size, dtype=torch.bool, device=device)
    mask[torch.tensor(rows, dtype=torch.long, device=device), torch.tensor(cols, dtype=torch.long, device=device)] = True
    return mask


def _row_counts(ids: Sequence[Sequence[int]], vocab_size: int, device: torch.device | str) -> Tensor:
    """(B, V) float32 with counts[b, t] = how often t occurs in ids[b]."""
    counts = torch.zeros(len(ids), vocab_size, dtype=torch.float32, device=device)
    rows = [b for b, row in enumerate(ids) for _ in row]
    cols = [t for row in ids for t in row]
    if cols:
        if not 0 <= min(cols) <= max(cols) < vocab_size:
            raise ValueError(f"token_ids holds a token id outside the vocabulary of {vocab_size}")
        index = (torch.tensor(rows, dtype=torch.long, device=device), torch.tensor(cols, dtype=torch.long, device=device))
        counts.index_put_(index, torch.ones(len(cols), device=device), accumulate=True)
    return counts


# --- the steps, in order -------------------------------------------------------------------------


def block_eos_before_min_tokens(
    logits: Tensor, generated_counts: Tensor, min_new_tokens: Tensor, stop_mask: Tensor
) -> Tensor:
    """-inf on a row's stop tokens (EOS, stop_token_ids) while it has fewer than min_new_tokens."""
    blocked = (generated_counts < min_new_tokens).unsqueeze(1) & stop_mask  # (B, V)
    return logits.masked_fill(blocked, _NEG_INF)


def apply_presence_frequency_penalties(logits: Tensor, output_penalty: Tensor) -> Tensor:
    """OpenAI's penalties on raw logits: logit[j] -= count_j × frequency + (count_j > 0) × presence,
    count_j being how often token j was generated so far; output_penalty (B, V) holds that sum
    (SamplingTensors keeps it)."""
    return logits - output_penalty


def apply_temperature(logits: Tensor, temperature: Tensor) -> Tensor:
    scaled = logits / temperature.unsqueeze(1)  # (B, V)
    # A tiny temperature can overflow a logit to +inf, which would make softmax NaN.
    return scaled.clamp(max=torch.finfo(scaled.dtype).max)


def apply_repetition_penalty(logits: Tensor, penalty: Tensor, seen_token_mask: Tensor) -> Tensor:
    """CTRL's penalty, made sign-aware: seen tokens always become less likely."""
    p = penalty.unsqueeze(1)  # (B, 1)
    # The selections write into the quotient: two float32 (B, V) temporaries live at once, not four
    # (sampling_workspace_bytes counts the sampler's copies; an H200 measured one too many here).
    penalised = logits / p
    torch.where(logits > 0, penalised, logits * p, out=penalised)
    return torch.where(seen_token_mask, penalised, logits, out=penalised)


def min_p_filter(logits: Tensor, min_p: Tensor) -> Tensor:
    """Drop tokens whose probability is below min_p × the row's largest probability (vLLM's min_p),
    compared in log space: logit < max logit + log(min_p). min_p 0 = off (log 0 = -inf keeps all)."""
    threshold = logits.amax(dim=-1, keepdim=True) + min_p.log().unsqueeze(1)  # (B, 1)
    return logits.masked_fill(logits < threshold, _NEG_INF)


def top_k_filter(logits: Tensor, top_k: Tensor, max_k: int | None = None) -> Tensor:
    """Keep each row's top_k largest logits and every logit tied with the k-th; top_k 0 = off.

    max_k (≥ every row's k) bounds the topk call; pass it to avoid a device sync.
    """
    vocab = logits.shape[-1]
    k = top_k.clamp(max=vocab)
    if max_k is None:
        max_k = int(k.max())
    max_k = min(max_k, vocab)
    if max_k == 0:
        return logits
    largest = logits.topk(max_k, dim=-1).values  # (B, max_k), descending
    kth = largest.gather(1, (k - 1).clamp(min=0).unsqueeze(1))  # (B, 1)
    kth = torch.where(k.unsqueeze(1) > 0, kth, _NEG_INF)
    return logits.masked_fill(logits < kth, _NEG_INF)


def top_p_filter(logits: Tensor, top_p: Tensor, candidates: int = 1024) -> Tensor:
    """Nucleus filter: keep tokens in descending order up to and including the first whose
    cumulative probability exceeds p (so at least one), plus any tied with it; top_p 1 = off.

    The nucleus is searched among the `candidates` largest logits first and the full row is
    sorted only when some nucleus reaches past them (a sort of 256k entries costs ~20× a top-k).
    """
    vocab = logits.shape[-1]
    k = min(candidates, vocab)
    ordered = logits.topk(k, dim=-1).values  # (B, k), descending
    cumulative = (ordered - logits.logsumexp(dim=-1, keepdim=True)).exp().cumsum(dim=-1)  # (B, k)
    p = top_p.unsqueeze(1)  # (B, 1)
    if k < vocab and not bool(((cumulative[:, -1:] > p) | (p >= 1)).all()):
        return top_p_filter(logits, top_p, candidates=vocab)
    # Position i survives while the mass before it is ≤ p; position 0 always survives.
    kept = 1 + (cumulative[:, :-1] <= p).sum(dim=-1, keepdim=True)  # (B, 1)
    threshold = ordered.gather(1, kept - 1)  # (B, 1)
    # Rounding can push the total past 1, so rows with p = 1 are switched off explicitly.
    threshold = torch.where(p >= 1, _NEG_INF, threshold)
    return logits.masked_fill(logits < threshold, _NEG_INF)


_ARGMAX_BLOCK = 128
_SCALAR_ARGMAX_MAX = 16384  # logits up to this many: torch's scalar loop (~10 us) beats the blocked ops


def row_argmax(x: Tensor) -> Tensor:
    """x.argmax(dim=-1) for (B, V): the first index of each row's maximum (NaN counts as largest).

    torch's CPU argmax is a scalar loop (~0.6 ms for 32 x 32k logits); a vectorised amax over
    blocks of the row, then argmax inside the winning block only, gives the same index ~10x faster.
    Below ~16k logits (one row of a small vocabulary) the loop is faster than the blocked path's
    eight ops, each of which costs more than the loop's work when its code comes back cold.
    """
    batch, vocab = x.shape
    if x.device.type != "cpu" or x.numel() <= _SCALAR_ARGMAX_MAX or vocab < 4 * _ARGMAX_BLOCK:
        return x.argmax(dim=-1)
    main = vocab - vocab % _ARGMAX_BLOCK
    blocks = x[:, :main].reshape(batch, main // _ARGMAX_BLOCK, _ARGMAX_BLOCK)
    block_max = blocks.amax(dim=-1)  # (B, blocks); amax propagates NaN as argmax ranks it
    best_block = block_max.argmax(dim=-1)  # (B,): the first block holding the row's maximum
    rows = torch.arange(batch, device=x.device)
    ids = best_block * _ARGMAX_BLOCK + blocks[rows, best_block].argmax(dim=-1)
    if main < vocab:  # the tail wins only when strictly larger: ties go to the earlier index
        best = block_max[rows, best_block]
        tail_max, tail_ids = x[:, main:].max(dim=-1)
        tail_wins = (tail_max > best) | (tail_max.isnan() & ~best.isnan())
        ids = torch.where(tail_wins, tail_ids + main, ids)
    return ids


def draw(probs: Tensor, uniforms: Tensor) -> Tensor:
    """One token per row by inverting the row's CDF at uniforms[b] ∈ [0, 1). probs: (B, V)."""
    cdf = probs.cumsum(dim=-1)  # (B, V)
    target = uniforms.unsqueeze(1) * cdf[:, -1:]  # (B, 1); scaling absorbs rounding of the total
    ids = torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=probs.shape[-1] - 1)
    # At the very top of the CDF rounding can land on a filtered token; take the mode instead.
    possible = probs.gather(1, ids.unsqueeze(1)).squeeze(1) > 0
    return torch.where(possible, ids, row_argmax(probs))


def draw_uniforms(generators: Sequence[torch.Generator | None], device: torch.device | str) -> Tensor:
    """(B,) uniforms: rows with a (CPU) generator draw from it, the others from the global RNG."""
    uniforms = torch.rand(len(generators))
    seeded = [b for b, g in enumerate(generators) if g is not None]
    if seeded:  # one scalar per seeded row: the only per-row work, as generators cannot be batched
        uniforms[seeded] = torch.cat([torch.rand(1, generator=generators[b]) for b in seeded])
    return uniforms.to(device)


def make_generator(seed: int | None) -> torch.Generator | None:
    """The per-request generator `sample` expects (CPU, so results match across devices)."""
    return None if seed is None else torch.Generator(device="cpu").manual_seed(seed)


# --- putting it together ------------------------------------------------------------------------


def process_logits(logits: Tensor, tensors: SamplingTensors) -> Tensor:
    """The logits each row is drawn from (float32, (B, V)); greedy rows only get the EOS mask and
    their penalties (their temperature is 1 and their filters off)."""
    t = tensors
    if t.stop_mask is not None:
        logits = block_eos_before_min_tokens(logits, t.generated_counts, t.min_new_tokens, t.stop_mask)
    if t.output_penalty is not None:
        logits = apply_presence_frequency_penalties(logits, t.output_penalty)
    if t.all_greedy:
        if t.seen_mask is not None:
            logits = apply_repetition_penalty(logits, t.repetition_penalty, t.seen_mask)
        return logits
    logits = apply_temperature(logits, t.temperature)
    if t.seen_mask is not None:
        logits = apply_repetition_penalty(logits, t.repetition_penalty, t.seen_mask)
    if t.min_p is not None:
        logits = min_p_filter(logits, t.min_p)
    if t.max_top_k:
        logits = top_k_filter(logits, t.top_k, t.max_top_k)
    if t.use_top_p:
        logits = top_p_filter(logits, t.top_p)
    return logits


def sample(
    logits: Tensor, tensors: SamplingTensors, generators: Sequence[torch.Generator | None],
    logp: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Next token per row and its log-probability under the unprocessed model distribution.

    logits: (B, V') in any float dtype, V' ≥ tensors.vocab_size (extra columns are padding);
    logp: their `log_probs`, when the caller needs the whole rows anyway (not computed twice).
    Returns token_ids (B,) int64 and logprobs (B,) float32.
    """
    if logits.dim() != 2 or logits.shape[0] != len(tensors) or len(generators) != len(tensors):
        raise ValueError(
            f"logits {tuple(logits.shape)}, {len(tensors)} rows of params and {len(generators)} generators disagree"
        )
    if logits.shape[1] < tensors.vocab_size:
        raise ValueError(f"logits have {logits.shape[1]} columns, fewer than the vocabulary of {tensors.vocab_size}")
    logits = logits[:, : tensors.vocab_size].float()  # (B, V)
    processed = process_logits(logits, tensors)
    token_ids = row_argmax(processed)
    if not tensors.all_greedy:
        drawn = draw(processed.softmax(dim=-1), draw_uniforms(generators, logits.device))
        token_ids = torch.where(tensors.greedy, token_ids, drawn)
    # log_softmax is one kernel; logsumexp is composite (max, subtract, exp, sum, log, add: ~100 us a
    # step at batch 1 when its code is cold, against ~20 us).
    logp = logits.log_softmax(dim=-1) if logp is None else logp
    return token_ids, logp.gather(1, token_ids.unsqueeze(1)).squeeze(1)


def log_probs(logits: Tensor, vocab_size: int | None = None) -> Tensor:
    """(B, V) float32 log-probabilities of the unprocessed distribution (NeMo's full_logprob)."""
    return logits[:, :vocab_size].float().log_softmax(dim=-1)
