"""From a stage's unit results to its dataset, deterministically.

Units finish in any order; collection walks them in input order (as they become available, so
the next stage can start on a record before this one ends), applies the stage's own check,
the length and reward filters and exact/near dedup, and rewrites the stage's data and rejection
files in one step each. It reads only files, so a resumed run (or a rerun with new thresholds)
collects the same way, and thresholds can change without calling a model again.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from nemotron.sdg.config import FilterSpec
from nemotron.sdg.dedup import DedupConfig, Deduplicator
from nemotron.sdg.filters import LengthFilter, RewardFilter, reward_scalar
from nemotron.sdg.parsing import ParseStats
from nemotron.sdg.stages.base import Stage, Unit

USAGE_KEYS = ("calls", "cached_calls", "prompt_tokens", "completion_tokens", "reward_calls")


@dataclass(slots=True)
class Collected:
    kept: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    units_done: int = 0
    units_pending: int = 0
    generated: int = 0
    usage: Counter = field(default_factory=Counter)
    parse: ParseStats = field(default_factory=ParseStats)

    def reasons(self) -> dict[str, int]:
        return dict(Counter(r["reason"] for r in self.rejected).most_common())


class RecordFilter:
    """A stage's filters as one keep-or-drop decision per record, in a fixed order."""

    def __init__(self, stage: Stage, spec: FilterSpec) -> None:
        self.stage = stage
        self.length = LengthFilter(spec.length_unit, spec.min_length, spec.max_length) \
            if spec.min_length or spec.max_length else None
        self.reward = RewardFilter(spec.min_reward, spec.min_reward_scalar) if spec.needs_reward else None
        self.dedup = Deduplicator(DedupConfig(threshold=spec.dedup_threshold, exact=spec.exact_dedup,
                                              near=spec.near_dedup)) if spec.exact_dedup or spec.near_dedup else None

    def __call__(self, record: dict) -> dict | None:
        """None to keep; else the rejection entry."""
        own = self.stage.check(record)
        if own is not None:
            return _rejection(record, self.stage, own[0], own[1])
        text = self.stage.text(record)
        if self.length is not None:
            verdict = self.length(text)
            if not verdict.kept:
                return _rejection(record, self.stage, "length filter", verdict.reason)
        if self.reward is not None:
            scores = record.get("reward") or record.get("chosen_scores")
            if scores is None:
                return _rejection(record, self.stage, "reward filter", "the record has no reward scores")
            verdict = self.reward(scores)
            if not verdict.kept:
                return _rejection(record, self.stage, "reward filter", verdict.reason)
        if self.dedup is not None:
            decision = self.dedup.add(record["id"], text)
            if not decision.kept:
                entry = _rejection(record, self.stage, f"{decision.reason} duplicate",
                                   f"{decision.reason} duplicate of {decision.duplicate_of} "
                                   f"(similarity {decision.similarity:.2f})")
                entry.update(duplicate_of=decision.duplicate_of, similarity=decision.similarity)
                return entry
        return None


def _rejection(record: dict, stage: Stage, reason: str, detail: str | None) -> dict:
    return {"stage": stage.name, "record": record["id"], "unit": None, "reason": reason, "detail": detail or "",
            "text": stage.text(record)[:500]}


class Collector:
    """Collection fed one unit at a time, in input order: a pipeline streams each stage's kept
    records to the next stage as soon as the units before them are collected."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.out = Collected()
        self._keep = RecordFilter(stage, stage.spec.filters)

    def add(self, unit: Unit, line: dict | None) -> list[dict]:
        """The unit's kept records; `line` None for a unit with no result (failed, retried next run)."""
        out, stage = self.out, self.stage
        if line is None:
            out.units_pending += 1
            return []
        out.units_done += 1
        out.usage.update({k: line["usage"].get(k, 0) for k in USAGE_KEYS})
        parse = line.get("parse") or {}
        out.parse.merge(ParseStats(Counter(parse.get("by_method", {})), parse.get("failures", 0),
                                   parse.get("items", 0), parse.get("rejected_items", 0)))
        for entry in line["rejected"]:
            out.rejected.append({"stage": stage.name, "record": None, "unit": unit.id, **entry})
        kept = []
        for record in line["records"]:
            out.generated += 1
            rejection = self._keep(record)
            if rejection is None:
                kept.append(record)
            else:
                out.rejected.append(rejection)
        out.kept.extend(kept)
        return kept


def collect(stage: Stage, units: list[Unit], results: dict[str, dict]) -> Collected:
    collector = Collector(stage)
    for unit in units:
        collector.add(unit, results.get(unit.id))
    return collector.out


def reward_values(record: dict) -> dict[str, float]:
    """Attribute scores and the weighted scalar of a record, for reports ({} when unscored)."""
    scores = record.get("reward") or record.get("chosen_scores")
    if not isinstance(scores, dict):
        return {}
    values = dict(scores)
    try:
        values["scalar"] = reward_scalar(scores)
    except ValueError:
        pass
    return values
