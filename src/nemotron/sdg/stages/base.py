"""The contract of a stage and the context one unit of work runs in.

A stage turns input records into output records, one *unit* at a time (usually one input record;
some kinds fan out, e.g. one unit per topic and level). A unit is the grain of resumption: its
result (records, rejections, usage) is written as one line once the unit is done, and a unit is
never run again after that. Everything random in a unit derives from its seed, and every model
call gets its own seed, so a unit redone after a crash asks the same questions and (through the
call cache) gets the same answers.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from nemotron.errors import NemotronError
from nemotron.sdg.backends.base import ChatBackend, Messages, RewardBackend, Sampling
from nemotron.sdg.parsing import ParsedList, ParseStats, keep_grounded, parse_list
from nemotron.sdg.prompts import PromptBook
from nemotron.sdg.store import content_id

if TYPE_CHECKING:
    from nemotron.sdg.config import StageSpec

# Fields that describe a record rather than its content; not carried into derived records.
META_FIELDS = frozenset({"id", "parent", "stage", "reward", "chosen_scores", "rejected_scores"})


class StageInputError(NemotronError, ValueError):
    """An input record lacks what a stage reads: the config wires stages together wrongly."""


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (a pipeline seed, a stage, a unit id, a call number)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class Unit:
    id: str
    input: dict | None  # the input record; None for source stages
    extra: dict = field(default_factory=dict)  # what else tells units of one input apart (a level ...)


@dataclass(slots=True)
class Models:
    """The backends a stage may call (already wrapped with the call cache)."""

    generator: ChatBackend | None
    reward: RewardBackend | None = None
    judge: ChatBackend | None = None
    user: ChatBackend | None = None  # plays the user in dialogues and follow-up turns


class UnitContext:
    """Model calls for one unit, with its seeds, counters and rejections."""

    def __init__(self, stage: Stage, unit: Unit, models: Models, seed: int, sampling: Sampling) -> None:
        self.stage = stage
        self.unit = unit
        self.models = models
        self.seed = seed
        self.sampling = sampling
        self._rng: random.Random | None = None
        self.usage = {"calls": 0, "cached_calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "reward_calls": 0}
        self.parse = ParseStats()
        self.rejected: list[dict] = []
        self._calls = 0

    @property
    def rng(self) -> random.Random:
        """The unit's random source, seeded from its seed (made when first used: most units draw nothing)."""
        if self._rng is None:
            self._rng = random.Random(self.seed)
        return self._rng

    # ---- model calls ----
    async def chat(self, messages: Messages, *, judge: bool = False, user: bool = False, **overrides: Any) -> str:
        backend = self.models.judge if judge else self.models.user if user else self.models.generator
        self._calls += 1
        sampling = Sampling(**{**_fields(self.sampling), "seed": derive_seed(self.seed, self._calls), **overrides})
        result = await backend.chat(messages, sampling)
        self.usage["calls"] += 1
        self.usage["cached_calls"] += result.cached
        self.usage["prompt_tokens"] += result.prompt_tokens
        self.usage["completion_tokens"] += result.completion_tokens
        return result.text.strip()

    async def ask(self, prompt: str, **overrides: Any) -> str:
        return await self.chat([{"role": "user", "content": prompt}], **overrides)

    async def score(self, messages: Messages) -> dict[str, float]:
        self.usage["reward_calls"] += 1
        return await self.models.reward.score(messages)

    async def ask_list(self, prompt: str, count: int | None, **overrides: Any) -> list[str]:
        """Items of a list the model is asked for: parsed locally, else reformatted by the model
        (items it invents are dropped), else none: a parse failure is counted, never raised."""
        response = await self.ask(prompt, **overrides)
        parsed = parse_list(response)
        rejected: list[str] = []
        if not parsed.ok and self.stage.reformat:
            reformatted = parse_list(await self.ask(self.stage.prompts.render("reformat_list", response=response),
                                                    temperature=0.0))
            if reformatted.ok:
                kept, rejected = keep_grounded(reformatted.items, response)
                parsed = ParsedList(kept, "reformat") if kept else ParsedList([], "none")
                for item in rejected:
                    self.reject("ungrounded item", "the reformatted list had an item not in the reply", item)
        self.parse.record(parsed, 0)
        self.parse.rejected_items += len(rejected)
        if not parsed.ok:
            self.reject("parse failure", "no list found in the model's reply", response)
            return []
        items = list(dict.fromkeys(parsed.items))  # repeated items within one reply
        return items[:count] if count else items

    def reject(self, reason: str, detail: str = "", text: str = "") -> None:
        self.rejected.append({"reason": reason, "detail": detail, "text": text[:500]})

    # ---- records ----
    def record(self, **fields: Any) -> dict:
        """An output record: the input's content fields carried over, then `fields`; its id is a
        hash of the stage, the unit and the content."""
        carried = {k: v for k, v in (self.unit.input or {}).items() if k not in META_FIELDS}
        record = {**carried, **fields}
        record_id = content_id(self.stage.name, self.unit.id, record)
        return {"id": record_id, "parent": (self.unit.input or {}).get("id"), "stage": self.stage.name, **record}


def _fields(sampling: Sampling) -> dict:
    return {"temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": sampling.max_tokens,
            "stop": sampling.stop}


class Stage:
    """One kind of stage. Subclasses set `kind`, `options` (name -> default) and implement `run`."""

    kind: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}
    source: ClassVar[bool] = False  # makes records from nothing (no input stage)
    uses_generator: ClassVar[bool] = True
    uses_reward: ClassVar[bool] = False
    uses_judge: ClassVar[bool] = False  # asks an LLM judge (judge_model, default: the generator)
    waits_for_inputs: ClassVar[bool] = False  # needs its inputs complete (not record by record) to start
    prompt_names: ClassVar[tuple[str, ...]] = ()  # prompts whose text is part of the stage's identity
    text_field: ClassVar[str] = "prompt"  # what length filters and dedup read
    default_count: ClassVar[int | None] = None
    default_sampling: ClassVar[dict[str, Any]] = {}  # under the stage's own `sampling`, over the pipeline's

    def __init__(self, spec: StageSpec, base_dir: Path = Path(".")) -> None:
        self.spec = spec
        self.base_dir = base_dir  # relative paths in options are read from here (the config's folder)
        self.name = spec.name
        self.opts = {**self.options, **spec.options}
        self.prompts = PromptBook(spec.prompts)
        self.count = spec.count or self.default_count
        self.reformat = bool(self.opts.get("reformat", True))

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            known = sorted(cls.options) or "none"
            raise ValueError(f"unknown option(s) {unknown} for kind {cls.kind!r} (its options: {known})")
        for name, value in options.items():
            default = cls.options[name]
            kind = type(default)
            ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool)) or (
                kind is float and isinstance(value, int) and not isinstance(value, bool))
            if not ok:
                raise ValueError(f"option {name!r} must be {kind.__name__}, got {value!r}")
            if kind is int and value < 1:  # every integer option counts something
                raise ValueError(f"option {name!r} must be >= 1, got {value}")
        return dict(options)

    def fingerprint(self) -> dict:
        """What a unit's result depends on, besides its input: stored with the results, and a
        rerun with different settings is refused rather than mixed in."""
        return {"kind": self.kind, "count": self.count, "options": self.opts,
                "prompts": self.prompts.fingerprint([*self.prompt_names, "reformat_list"]),
                "sampling": {**self.default_sampling, **self.spec.sampling}}

    def units(self, inputs: list[dict]) -> list[Unit]:
        return [Unit(content_id(self.name, record["id"]), record) for record in inputs]

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Load what the stage's checks need (slow imports, models) before the run starts."""

    def text(self, record: dict) -> str:
        return str(record[self.text_field])

    def check(self, record: dict) -> tuple[str, str] | None:
        """A stage's own keep-or-drop rule at collection time: (reason, detail) to drop."""
        return None


def require_text(record: dict, field_name: str, stage: str) -> str:
    value = record.get(field_name)
    if not isinstance(value, str) or not value.strip():
        raise StageInputError(f"stage {stage}: input record {record.get('id')} has no text field {field_name!r} "
                              f"(its fields: {sorted(record)})")
    return value


def last_user_messages(record: dict, stage: str) -> Messages:
    """The conversation a reply is wanted for: `messages` (ending with the user) or a `prompt`."""
    messages = record.get("messages")
    if isinstance(messages, list) and messages:
        if messages[-1].get("role") != "user":
            raise StageInputError(f"stage {stage}: record {record.get('id')} does not end with a user turn")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    return [{"role": "user", "content": require_text(record, "prompt", stage)}]


StageFactory = Callable[["StageSpec"], Stage]
