"""Keep-or-drop decisions on generated records: reward thresholds and length bounds.

Every filter is a small frozen dataclass called on one value and returning a `FilterResult`; the
reason of a rejection is a sentence a person can read in `nemotron sdg report`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from nemotron.model.config import REWARD_ATTRIBUTES, REWARD_WEIGHTS


@dataclass(frozen=True, slots=True)
class FilterResult:
    kept: bool
    reason: str | None = None  # None when kept

    @classmethod
    def keep(cls) -> FilterResult:
        return cls(True, None)

    @classmethod
    def drop(cls, reason: str) -> FilterResult:
        return cls(False, reason)


def reward_scores(scores: Mapping[str, float] | Sequence[float]) -> dict[str, float]:
    """Attribute -> score, from a mapping or a sequence in REWARD_ATTRIBUTES order."""
    if isinstance(scores, Mapping):
        unknown = set(scores) - set(REWARD_ATTRIBUTES)
        if unknown:
            raise ValueError(f"unknown reward attributes {sorted(unknown)}; known: {list(REWARD_ATTRIBUTES)}")
        return {k: float(v) for k, v in scores.items()}
    if len(scores) != len(REWARD_ATTRIBUTES):
        raise ValueError(f"expected {len(REWARD_ATTRIBUTES)} reward scores, got {len(scores)}")
    return {k: float(v) for k, v in zip(REWARD_ATTRIBUTES, scores)}


def reward_scalar(scores: Mapping[str, float] | Sequence[float],
                  weights: Sequence[float] = REWARD_WEIGHTS) -> float:
    """Weighted sum of the attributes. Every attribute with a non-zero weight must be present."""
    by_name = reward_scores(scores)
    missing = [a for a, w in zip(REWARD_ATTRIBUTES, weights) if w and a not in by_name]
    if missing:
        raise ValueError(f"reward scalar needs attributes {missing}")
    return sum(w * by_name[a] for a, w in zip(REWARD_ATTRIBUTES, weights) if w)


@dataclass(frozen=True, slots=True)
class RewardFilter:
    """Keep a record when each listed attribute reaches its minimum and, if `min_scalar` is set, the
    weighted scalar reaches it too."""

    min_per_attribute: Mapping[str, float] = field(default_factory=dict)
    min_scalar: float | None = None
    weights: tuple[float, ...] = REWARD_WEIGHTS

    def __post_init__(self) -> None:
        unknown = set(self.min_per_attribute) - set(REWARD_ATTRIBUTES)
        if unknown:
            raise ValueError(f"min_per_attribute: unknown reward attributes {sorted(unknown)}")
        if len(self.weights) != len(REWARD_ATTRIBUTES):
            raise ValueError(f"weights: expected {len(REWARD_ATTRIBUTES)} values, got {len(self.weights)}")

    def __call__(self, scores: Mapping[str, float] | Sequence[float]) -> FilterResult:
        by_name = reward_scores(scores)
        for attribute, minimum in self.min_per_attribute.items():
            if attribute not in by_name:
                raise ValueError(f"reward scores lack attribute {attribute!r} needed by the filter")
            if by_name[attribute] < minimum:
                return FilterResult.drop(f"reward {attribute} {by_name[attribute]:.3f} < min {minimum:g}")
        if self.min_scalar is not None:
            scalar = reward_scalar(by_name, self.weights)
            if scalar < self.min_scalar:
                return FilterResult.drop(f"reward scalar {scalar:.3f} < min {self.min_scalar:g}")
        return FilterResult.keep()


LENGTH_UNITS = ("chars", "words", "tokens")


@dataclass(frozen=True, slots=True)
class LengthFilter:
    """Keep texts with min_len <= length <= max_len (either bound optional) in `unit`. Tokens are
    counted by `tokenizer`, a callable returning the token list (or the count) for a text."""

    unit: str = "words"
    min_len: int | None = None
    max_len: int | None = None
    tokenizer: Callable[[str], Sequence[object] | int] | None = None

    def __post_init__(self) -> None:
        if self.unit not in LENGTH_UNITS:
            raise ValueError(f"unit must be one of {LENGTH_UNITS}, got {self.unit!r}")
        if self.unit == "tokens" and self.tokenizer is None:
            raise ValueError("unit 'tokens' needs a tokenizer callable")
        if self.min_len is not None and self.max_len is not None and self.min_len > self.max_len:
            raise ValueError(f"min_len {self.min_len} > max_len {self.max_len}")

    def length(self, text: str) -> int:
        if self.unit == "chars":
            return len(text)
        if self.unit == "words":
            return len(text.split())
        counted = self.tokenizer(text)  # type: ignore[misc]  (checked in __post_init__)
        return counted if isinstance(counted, int) else len(counted)

    def __call__(self, text: str) -> FilterResult:
        n = self.length(text)
        if self.min_len is not None and n < self.min_len:
            return FilterResult.drop(f"too short: {n} {self.unit} < min {self.min_len}")
        if self.max_len is not None and n > self.max_len:
            return FilterResult.drop(f"too long: {n} {self.unit} > max {self.max_len}")
        return FilterResult.keep()


def first_rejection(results: Iterable[FilterResult]) -> FilterResult:
    """The first rejection among `results` (evaluated lazily), or a keep."""
    for result in results:
        if not result.kept:
            return result
    return FilterResult.keep()
