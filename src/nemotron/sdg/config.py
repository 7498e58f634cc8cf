"""A pipeline as YAML: models, default sampling, stages (each with counts, prompts, filters), outputs.

    name: sft_prompts
    seed: 0
    models:
      generator: {model: nvidia/nemotron-4-340b-instruct, endpoint: http://127.0.0.1:8000/v1}
      reward: {model: nvidia/nemotron-4-340b-reward, kind: reward, endpoint: http://127.0.0.1:8001/v1}
    sampling: {temperature: 0.7, top_p: 0.95, max_tokens: 1024}
    stages:
      - {name: topics, kind: macro_topics, count: 20}
      - {name: questions, kind: open_questions, input: topics, count: 5}
      - name: answers
        kind: responses
        input: questions
        reward_model: reward
        filters: {min_reward: {helpfulness: 3.0}, length: {unit: words, min: 5}}
    outputs:
      sft: [answers]

Keys a stage kind does not define are errors, as are unknown stages, models and prompts; every
message names where in the file the problem is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nemotron.errors import NemotronError
from nemotron.model.config import REWARD_ATTRIBUTES
from nemotron.sdg.backends.base import Sampling
from nemotron.sdg.filters import LENGTH_UNITS
from nemotron.sdg.loop import EVENT_LOOPS
from nemotron.sdg.prompts import PromptBook

MODEL_KINDS = ("chat", "reward")
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "stop")


class PipelineConfigError(NemotronError, ValueError):
    """A pipeline config that cannot run; the message says where and why."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str  # the alias stages refer to
    model: str  # the name sent to the endpoint, part of every cache key
    kind: str = "chat"
    endpoint: str | tuple | None = None  # an OpenAI-compatible base URL, or several (replicas) ...
    engine: str | None = None  # ... or a model directory run in-process
    api_key_env: str | None = None  # environment variable holding the API key (never the key itself)
    max_concurrency: int = 32
    adaptive: bool = True
    max_attempts: int = 6
    timeout: float = 600.0
    dtype: str | None = None  # engine only
    device: str | None = None  # engine only

    def __post_init__(self) -> None:
        where = f"models.{self.name}"
        if self.kind not in MODEL_KINDS:
            raise PipelineConfigError(f"{where}.kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        if self.endpoint and self.engine:
            raise PipelineConfigError(f"{where}: give endpoint or engine, not both")
        if self.endpoint:
            from nemotron.sdg.backends.http import parse_endpoints

            if isinstance(self.endpoint, list):
                object.__setattr__(self, "endpoint", tuple(self.endpoint))
            try:
                parse_endpoints(self.endpoint)
            except ValueError as err:
                raise PipelineConfigError(f"{where}.endpoint: {err}") from None
        if self.max_concurrency < 1 or self.max_attempts < 1 or self.timeout <= 0:
            raise PipelineConfigError(f"{where}: max_concurrency and max_attempts must be >= 1, timeout > 0")


@dataclass(frozen=True, slots=True)
class FilterSpec:
    min_reward: dict[str, float] = field(default_factory=dict)
    min_reward_scalar: float | None = None
    length_unit: str = "words"
    min_length: int | None = None
    max_length: int | None = None
    exact_dedup: bool = True
    near_dedup: bool = True
    dedup_threshold: float = 0.7

    @property
    def needs_reward(self) -> bool:
        return bool(self.min_reward) or self.min_reward_scalar is not None


@dataclass(frozen=True, slots=True)
class StageSpec:
    name: str
    kind: str
    inputs: tuple[str, ...] = ()
    count: int | None = None  # items asked for per unit (kinds that make lists)
    limit: int | None = None  # at most this many input records are used
    model: str = "generator"
    reward_model: str | None = None
    judge_model: str | None = None
    user_model: str | None = None  # plays the user (dialogues, follow-up turns); default: model
    sampling: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    filters: FilterSpec = field(default_factory=FilterSpec)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    name: str
    stages: tuple[StageSpec, ...]
    models: dict[str, ModelSpec]
    seed: int = 0
    sampling: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unit_window: int | None = None  # units worked on at once, whole pipeline (default: 2 x the models' windows)
    flush_every: int = 64  # finished units written per fsync'd batch ...
    flush_interval: float = 1.0  # ... or after this many seconds
    event_loop: str = "auto"  # auto (uvloop where installed) | uvloop | asyncio (loop.py)

    def stage(self, name: str) -> StageSpec:
        for spec in self.stages:
            if spec.name == name:
                return spec
        raise KeyError(name)


def read_config(path: str | Path) -> Any:
    """The YAML of a config file, unchecked (`parse_config` checks it)."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PipelineConfigError(f"no pipeline config at {path}") from None
    except yaml.YAMLError as err:
        raise PipelineConfigError(f"{path} is not valid YAML: {err}") from None


def load_config(path: str | Path) -> PipelineConfig:
    return parse_config(read_config(path), where=str(path))


def _keys(data: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(data, dict):
        raise PipelineConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise PipelineConfigError(f"{where}: unknown key(s) {unknown}; allowed: {list(allowed)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise PipelineConfigError(f"{where}: missing key(s) {missing}")
    return data


def _positive_int(value: Any, where: str, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PipelineConfigError(f"{where} must be an integer >= 1, got {value!r}")
    return value


def check_sampling(values: Any, where: str) -> dict[str, Any]:
    values = dict(_keys(values or {}, where, SAMPLING_KEYS))
    try:
        Sampling(**values)
    except (TypeError, ValueError) as err:
        raise PipelineConfigError(f"{where}: {err}") from None
    if "stop" in values and isinstance(values["stop"], str):
        values["stop"] = [values["stop"]]
    return values


def _filters(data: Any, where: str) -> FilterSpec:
    data = _keys(data or {}, where, ("min_reward", "min_reward_scalar", "length", "dedup"))
    min_reward = dict(data.get("min_reward") or {})
    for name, value in min_reward.items():
        if name not in REWARD_ATTRIBUTES or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PipelineConfigError(f"{where}.min_reward: {name}: {value!r} (attributes: {list(REWARD_ATTRIBUTES)})")
    scalar = data.get("min_reward_scalar")
    if scalar is not None and (isinstance(scalar, bool) or not isinstance(scalar, (int, float))):
        raise PipelineConfigError(f"{where}.min_reward_scalar must be a number, got {scalar!r}")
    length = _keys(data.get("length") or {}, f"{where}.length", ("unit", "min", "max"))
    unit = length.get("unit", "words")
    if unit not in LENGTH_UNITS or unit == "tokens":
        raise PipelineConfigError(f"{where}.length.unit must be 'words' or 'chars', got {unit!r}")
    dedup = data.get("dedup", True)
    if isinstance(dedup, bool):
        dedup = {"exact": dedup, "near": dedup}
    dedup = _keys(dedup, f"{where}.dedup", ("exact", "near", "threshold"))
    threshold = dedup.get("threshold", 0.7)
    if not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise PipelineConfigError(f"{where}.dedup.threshold must be in (0, 1], got {threshold!r}")
    return FilterSpec(min_reward={k: float(v) for k, v in min_reward.items()},
                      min_reward_scalar=None if scalar is None else float(scalar), length_unit=unit,
                      min_length=_positive_int(length.get("min"), f"{where}.length.min"),
                      max_length=_positive_int(length.get("max"), f"{where}.length.max"),
                      exact_dedup=bool(dedup.get("exact", True)), near_dedup=bool(dedup.get("near", True)),
                      dedup_threshold=float(threshold))


STAGE_KEYS = ("name", "kind", "input", "count", "limit", "model", "reward_model", "judge_model", "user_model",
              "sampling", "prompts", "filters")


def _stage(data: Any, where: str, previous: str | None) -> StageSpec:
    from nemotron.sdg.stages import STAGE_KINDS

    if not isinstance(data, dict):
        raise PipelineConfigError(f"{where} must be a mapping")
    for key in ("name", "kind"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise PipelineConfigError(f"{where}: '{key}' is required (a string)")
    where = f"{where} ({data['name']})"
    kind = STAGE_KINDS.get(data["kind"])
    if kind is None:
        raise PipelineConfigError(f"{where}: unknown kind {data['kind']!r}; known: {sorted(STAGE_KINDS)}")
    options = {k: v for k, v in data.items() if k not in STAGE_KEYS}
    try:
        options = kind.check_options(options)
        PromptBook(data.get("prompts"))
    except ValueError as err:
        raise PipelineConfigError(f"{where}: {err}") from None
    raw_input = data.get("input", None if kind.source else previous)
    inputs = (raw_input,) if isinstance(raw_input, str) else tuple(raw_input or ())
    if kind.source and inputs:
        raise PipelineConfigError(f"{where}: a {data['kind']} stage takes no input")
    if not kind.source and not inputs:
        raise PipelineConfigError(f"{where}: 'input' is required (the stage whose records it reads)")
    spec = StageSpec(
        name=data["name"], kind=data["kind"], inputs=inputs,
        count=_positive_int(data.get("count"), f"{where}.count"),
        limit=_positive_int(data.get("limit"), f"{where}.limit"),
        model=data.get("model", "generator"), reward_model=data.get("reward_model"),
        judge_model=data.get("judge_model"), user_model=data.get("user_model"), sampling=check_sampling(data.get("sampling"), f"{where}.sampling"),
        prompts=dict(data.get("prompts") or {}), options=options,
        filters=_filters(data.get("filters"), f"{where}.filters"),
    )
    try:
        kind(spec)  # the kind's own checks of its options (a domain, judge names, constraint types ...)
    except ValueError as err:
        raise PipelineConfigError(f"{where}: {err}") from None
    return spec


def _model(name: str, data: Any) -> ModelSpec:
    data = _keys(data, f"models.{name}", tuple(f for f in ModelSpec.__dataclass_fields__ if f != "name"), ("model",))
    try:
        return ModelSpec(name=name, **data)
    except TypeError as err:
        raise PipelineConfigError(f"models.{name}: {err}") from None


def parse_config(data: Any, where: str = "config") -> PipelineConfig:
    data = _keys(data, where, ("name", "seed", "models", "sampling", "stages", "outputs", "unit_window",
                               "flush_every", "flush_interval", "event_loop"), ("stages",))
    models = {name: _model(name, spec) for name, spec in (data.get("models") or {}).items()}
    if not isinstance(data["stages"], list) or not data["stages"]:
        raise PipelineConfigError(f"{where}: 'stages' must be a non-empty list")
    stages: list[StageSpec] = []
    for i, raw in enumerate(data["stages"]):
        stage = _stage(raw, f"stages[{i}]", stages[-1].name if stages else None)
        if any(s.name == stage.name for s in stages):
            raise PipelineConfigError(f"stages[{i}]: duplicate stage name {stage.name!r}")
        for source in stage.inputs:
            if source not in {s.name for s in stages}:
                raise PipelineConfigError(f"stages[{i}] ({stage.name}): input {source!r} is not an earlier stage")
        _check_models(stage, models, f"stages[{i}] ({stage.name})")
        stages.append(stage)
    outputs = {}
    for name, sources in (data.get("outputs") or {}).items():
        sources = (sources,) if isinstance(sources, str) else tuple(sources or ())
        unknown = [s for s in sources if s not in {st.name for st in stages}]
        if unknown or not sources or not str(name).replace("_", "").replace("-", "").isalnum():
            raise PipelineConfigError(f"outputs.{name}: needs a plain name and a list of stages (unknown: {unknown})")
        outputs[str(name)] = sources
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PipelineConfigError(f"seed must be an integer >= 0, got {seed!r}")
    flush_interval = data.get("flush_interval", 1.0)
    if not isinstance(flush_interval, (int, float)) or flush_interval <= 0:
        raise PipelineConfigError(f"flush_interval must be > 0, got {flush_interval!r}")
    event_loop = data.get("event_loop", "auto")
    if event_loop not in EVENT_LOOPS:
        raise PipelineConfigError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}, got {event_loop!r}")
    return PipelineConfig(
        name=str(data.get("name", "pipeline")), stages=tuple(stages), models=models, seed=seed,
        sampling=check_sampling(data.get("sampling"), "sampling"), outputs=outputs,
        unit_window=_positive_int(data.get("unit_window"), "unit_window"),
        flush_every=_positive_int(data.get("flush_every", 64), "flush_every", allow_none=False),
        flush_interval=float(flush_interval), event_loop=event_loop,
    )


def _check_models(stage: StageSpec, models: dict[str, ModelSpec], where: str) -> None:
    from nemotron.sdg.stages import STAGE_KINDS

    kind = STAGE_KINDS[stage.kind]
    wanted = [("model", stage.model, "chat")] if kind.uses_generator else []
    wanted += [("reward_model", stage.reward_model, "reward"), ("judge_model", stage.judge_model, "chat"),
               ("user_model", stage.user_model, "chat")]
    for key, alias, model_kind in wanted:
        if alias is None:
            continue
        if alias not in models:
            raise PipelineConfigError(f"{where}: {key} {alias!r} is not defined under models "
                                      f"(defined: {sorted(models)})")
        if models[alias].kind != model_kind:
            raise PipelineConfigError(f"{where}: {key} {alias!r} is a {models[alias].kind} model; "
                                      f"a {model_kind} model is needed")
    if stage.filters.needs_reward and stage.reward_model is None:
        raise PipelineConfigError(f"{where}: reward thresholds in filters need a reward_model")
    if stage.reward_model is not None and not kind.uses_reward:
        raise PipelineConfigError(f"{where}: a {stage.kind} stage does not score with a reward model")
