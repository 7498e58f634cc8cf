"""Run a pipeline config into an output directory; run it again to resume.

    DIR/run.json                the pipeline's stages and outputs (for `nemotron sdg report`)
    DIR/cache.sqlite            every completed model call, by content hash
    DIR/units/<stage>.jsonl     one line per finished unit: its records, rejections, usage
    DIR/data/<stage>.jsonl      the stage's kept records, in input order (written when the stage ends)
    DIR/rejected/<stage>.jsonl  what was dropped and why (parse failures, filters, duplicates ...)
    DIR/summary.json            per stage: counts, rejection reasons, token usage; per model: requests,
                                retries, errors by HTTP status; the run's status and exit code (status.py)
    DIR/failures.jsonl          units whose model calls failed for good this run (retried next run)
    DIR/<output>.jsonl          the datasets named under `outputs`

All stages run at once: a unit starts as soon as its input record exists (flows.py: each stage
collects its units in input order, and hands records on as they come); one window bounds the
units at work across the pipeline, a unit sleeping in backoff giving its place up (scheduler.py).
A unit's result line is appended, batched, with write + fsync, after the cache has committed the
answers it used (both on the cache's writer thread): a kill loses at most the units not yet
written, whose calls the cache then answers at once (but those of the last 50 ms, which are asked
again).
"""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from nemotron.errors import NemotronError
from nemotron.sdg.backends import BackendError, CachedChat, CachedReward, Sampling
from nemotron.sdg.cache import CallCache
from nemotron.sdg.config import PipelineConfig
from nemotron.sdg.flows import StageFlow
from nemotron.sdg.progress import Progress
from nemotron.sdg.scheduler import Scheduler
from nemotron.sdg.stages import STAGE_KINDS, Models, Stage, Unit, UnitContext, derive_seed
from nemotron.sdg.status import run_status
from nemotron.sdg.store import RecordStore, make_dirs, read_jsonl, write_atomic, write_json

# A request the server refuses for its content (too long, malformed) fails the same way every
# time: the unit is recorded as done with that rejection instead of being retried forever.
PERMANENT_STATUSES = frozenset({400, 413, 422})


class StageChangedError(NemotronError):
    """A rerun whose stage settings differ from those the directory was produced with."""


class Pipeline:
    def __init__(self, config: PipelineConfig, out_dir: str | Path, backends: dict, *, base_dir: Path = Path("."),
                 progress: bool = True, stream: TextIO | None = None) -> None:
        """`backends` maps the config's model names to backends (uncached; the pipeline adds the cache)."""
        self.config = config
        self.out = Path(out_dir)
        self.backends = backends
        self.base_dir = base_dir
        self.progress = progress
        self.stream = stream or sys.stderr

    async def run(self) -> dict:
        make_dirs(self.out, ("units", "data", "rejected"))
        write_json(self.out / "run.json", {
            "name": self.config.name, "stages": [{"name": s.name, "kind": s.kind} for s in self.config.stages],
            "outputs": {k: list(v) for k, v in self.config.outputs.items()}, "seed": self.config.seed,
            "models": {alias: b.model for alias, b in self.backends.items()},
            "config_sha256": config_hash(self.config)})
        cache = CallCache(self.out / "cache.sqlite")
        flows: list[StageFlow] = []
        started = time.monotonic()
        try:
            cached = {name: (CachedChat if hasattr(b, "chat") else CachedReward)(b, cache)
                      for name, b in self.backends.items()}
            for i, spec in enumerate(self.config.stages):
                stage = STAGE_KINDS[spec.kind](spec, self.base_dir)
                models, sampling = self._models(stage, cached), self._sampling(stage)
                self._check_fingerprint(stage, sampling, models)
                flows.append(StageFlow(i, stage, models, sampling, RecordStore(self.out / "units" / f"{spec.name}.jsonl"),
                                       self.out))
            by_name = {f.stage.name: f for f in flows}
            for flow in flows:
                for j, source in enumerate(flow.stage.spec.inputs):
                    by_name[source].downstream.append((flow, j))
            for flow in flows:  # slow loads (NLTK, langdetect) now, not while calls are in flight
                await asyncio.to_thread(flow.stage.prepare)
            # Everything made so far (imported modules, NLTK's and langdetect's tables: millions of
            # objects) leaves the garbage collector's view for the run: each full collection would
            # otherwise walk it all again, stalling every call in flight for up to a second. A call
            # allocates hundreds of short-lived objects, so the young generation is collected every
            # 50,000 allocations rather than 700 (a sixth of the client's CPU went to collections).
            gc.collect()
            gc.freeze()
            thresholds = gc.get_threshold()
            gc.set_threshold(max(thresholds[0], 50_000), *thresholds[1:])
            try:
                await self._run_flows(flows, list({id(c.backend): c for c in cached.values()}.values()), cache)
            finally:
                gc.set_threshold(*thresholds)
                gc.unfreeze()
        finally:
            cache.close()
            for flow in flows:
                flow.store.close()
        summary = {"pipeline": self.config.name, "seconds": round(time.monotonic() - started, 3),
                   "stages": {f.stage.name: f.summary() for f in flows},
                   "models": {name: _model_summary(b) for name, b in self.backends.items()}}
        summary["status"] = run_status(summary)
        write_json(self.out / "summary.json", summary)
        for name, sources in self.config.outputs.items():
            records = (r for source in sources for r in read_jsonl(self.out / "data" / f"{source}.jsonl"))
            write_atomic(self.out / f"{name}.jsonl", records)
        return summary

    # ---- stage settings ----
    def _models(self, stage: Stage, cached: dict) -> Models:
        spec = stage.spec

        def get(alias: str | None):
            if alias is None:
                return None
            if alias not in cached:
                raise NemotronError(f"stage {spec.name}: no backend for model {alias!r}")
            return cached[alias]

        generator = get(spec.model) if stage.uses_generator else None
        return Models(generator, get(spec.reward_model), get(spec.judge_model) or generator,
                      get(spec.user_model) or generator)

    def _sampling(self, stage: Stage) -> Sampling:
        return Sampling(**{**self.config.sampling, **stage.default_sampling, **stage.spec.sampling})

    def _check_fingerprint(self, stage: Stage, sampling: Sampling, models: Models) -> None:
        fingerprint = {**stage.fingerprint(), "seed": self.config.seed, "sampling": sampling.payload(),
                       "models": [m.model if m else None for m in (models.generator, models.reward, models.judge)]}
        if models.user is not models.generator:
            fingerprint["user_model"] = models.user.model
        fingerprint = json.loads(json.dumps(fingerprint))
        path = self.out / "units" / f"{stage.name}.meta.json"
        if path.exists():
            stored = json.loads(path.read_text())["fingerprint"]
            if stored != fingerprint:
                changed = sorted(k for k in set(stored) | set(fingerprint) if stored.get(k) != fingerprint.get(k))
                raise StageChangedError(
                    f"stage {stage.name}: its settings changed ({', '.join(changed)}) since {self.out} was made; "
                    f"use a new --out directory, or delete {self.out / 'units' / stage.name}.* to redo that stage")
        else:
            write_json(path, {"fingerprint": fingerprint})

    # ---- running units ----
    async def _run_unit(self, flow: StageFlow, unit: Unit) -> dict | str:
        """The unit's result line, or the error that failed it (a string)."""
        stage = flow.stage
        ctx = UnitContext(stage, unit, flow.models, derive_seed(self.config.seed, stage.name, unit.id), flow.sampling)
        try:
            records = await stage.run(unit, ctx)
        except BackendError as err:
            if err.status not in PERMANENT_STATUSES:
                return str(err)
            ctx.reject("refused", f"the model server refused a request: {err}")
            records = []
        return {"id": unit.id, "input": (unit.input or {}).get("id"), "records": records, "rejected": ctx.rejected,
                "usage": ctx.usage, "parse": ctx.parse.to_dict()}

    async def _run_flows(self, flows: list[StageFlow], used: list, cache: CallCache) -> None:
        gauges = lambda: (sum(m.in_flight for m in used), sum(m.concurrency for m in used),  # noqa: E731
                          sum(m.stats.completion_tokens for m in used))
        progress = Progress(self.config.name, 0, 0, gauges, enabled=self.progress, stream=self.stream)
        await Scheduler(self.config, flows, used, self._run_unit, self.out, progress, cache.after_commit).run()


def config_hash(config: PipelineConfig) -> str:
    """SHA-256 of what the data depends on: stages, models' names, sampling, seed (not endpoints,
    concurrency or API keys, which change how fast, not what)."""
    stages = [dataclasses.asdict(s) for s in config.stages]
    models = {alias: [m.model, m.kind] for alias, m in sorted(config.models.items())}
    blob = json.dumps({"seed": config.seed, "sampling": config.sampling, "stages": stages, "models": models,
                       "outputs": config.outputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _model_summary(backend) -> dict:
    stats = backend.stats
    summary = {"model": backend.model, "requests": stats.requests, "completed": stats.completed,
               "retries": stats.retries, "given_up": stats.failures, "errors": dict(sorted(stats.errors.items()))}
    endpoints = getattr(backend, "endpoint_stats", None)
    if endpoints is not None:
        summary["endpoints"] = endpoints()
    return summary


async def run_pipeline(config: PipelineConfig, out_dir: str | Path, api_keys: dict[str, str | None] | None = None, *,
                       base_dir: Path = Path("."), progress: bool = True) -> dict:
    """Open the config's backends, run, close them."""
    from nemotron.sdg.backends import open_backend

    used = {alias for s in config.stages for alias in
            ((s.model if STAGE_KINDS[s.kind].uses_generator else None), s.reward_model, s.judge_model, s.user_model)
            if alias}
    backends = {}
    try:
        for alias in sorted(used):
            backends[alias] = open_backend(config.models[alias], (api_keys or {}).get(alias), seed=config.seed)
        return await Pipeline(config, out_dir, backends, base_dir=base_dir, progress=progress).run()
    finally:
        for backend in backends.values():
            await backend.aclose()


async def run_stage(kind: str, records: list[dict], out_dir: str | Path, backends: dict, *, seed: int = 0,
                    models: dict | None = None, **stage: object) -> list[dict]:
    """One stage kind on the given records, alone (the Python face of a one-stage config):

        pairs = await run_stage("preference", [{"prompt": "2+2?", "answer": "4"}], "out/",
                                {"generator": chat}, n=4)

    `stage` holds the stage's keys as a config would (count, options, filters ...); `models` the
    config's model entries (default: a chat "generator" and, if given, a "reward" backend).
    Resumable like any run: the same call with the same `out_dir` reuses its work."""
    from nemotron.sdg.config import parse_config

    models = models or {name: {"model": b.model, "kind": "chat" if hasattr(b, "chat") else "reward"}
                        for name, b in backends.items()}
    seeds = {"name": "inputs", "kind": "seeds", "items": records, "field": "prompt", "filters": {"dedup": False}}
    config = parse_config({"name": kind, "seed": seed, "models": models,
                           "stages": [seeds, {"name": kind, "kind": kind, "input": "inputs", **stage}]})
    await Pipeline(config, out_dir, backends, progress=False).run()
    return list(read_jsonl(Path(out_dir) / "data" / f"{kind}.jsonl"))


__all__ = ["PERMANENT_STATUSES", "Pipeline", "StageChangedError", "run_pipeline", "run_stage"]
