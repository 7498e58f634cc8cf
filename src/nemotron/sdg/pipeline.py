"""Run a pipeline config into an output directory; run it again to resume.

    DIR/run.json                the pipeline's stages and outputs (for `nemotron sdg report`)
    DIR/cache.sqlite            every completed model call, by content hash
    DIR/units/<stage>.jsonl     one line per finished unit: its records, rejections, usage
    DIR/data/<stage>.jsonl      the stage's kept records, in input order (rewritten at stage end)
    DIR/rejected/<stage>.jsonl  what was dropped and why (parse failures, filters, duplicates ...)
    DIR/summary.json            counts, rejection reasons, token usage per stage
    DIR/failures.jsonl          units whose model calls failed for good this run (retried next run)
    DIR/<output>.jsonl          the datasets named under `outputs`

Stages run in order; within a stage a pool of workers takes units from the todo list, so the
model backends always have the next call ready (the sliding window itself is the backend's). A
unit's model calls go through the cache; its result line is appended, batched, with write + fsync.
A kill loses at most the units not yet written, whose calls the cache then answers at once.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TextIO

from nemotron.errors import NemotronError
from nemotron.sdg.backends import BackendError, CachedChat, CachedReward, Sampling
from nemotron.sdg.cache import CallCache
from nemotron.sdg.collect import collect
from nemotron.sdg.config import PipelineConfig
from nemotron.sdg.progress import Progress
from nemotron.sdg.stages import STAGE_KINDS, Models, Stage, Unit, UnitContext, derive_seed
from nemotron.sdg.store import RecordStore, dumps, read_jsonl, write_atomic

# A request the server refuses for its content (too long, malformed) fails the same way every
# time: the unit is recorded as done with that rejection instead of being retried forever.
PERMANENT_STATUSES = frozenset({400, 413, 422})


class StageChangedError(NemotronError):
    """A rerun whose stage settings differ from those the directory was produced with."""


def write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n")
    tmp.replace(path)


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
        for sub in ("units", "data", "rejected"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        write_json(self.out / "run.json", {
            "name": self.config.name, "stages": [{"name": s.name, "kind": s.kind} for s in self.config.stages],
            "outputs": {k: list(v) for k, v in self.config.outputs.items()}})
        summary_path = self.out / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        cache = CallCache(self.out / "cache.sqlite")
        try:
            cached = {name: (CachedChat if hasattr(b, "chat") else CachedReward)(b, cache)
                      for name, b in self.backends.items()}
            for spec in self.config.stages:
                stage = STAGE_KINDS[spec.kind](spec, self.base_dir)
                summary[spec.name] = await self._run_stage(stage, cached)
                write_json(summary_path, summary)
        finally:
            cache.close()
        for name, sources in self.config.outputs.items():
            records = (r for source in sources for r in read_jsonl(self.out / "data" / f"{source}.jsonl"))
            write_atomic(self.out / f"{name}.jsonl", records)
        return summary

    # ---- one stage ----
    def _models(self, stage: Stage, cached: dict) -> Models:
        spec = stage.spec

        def get(alias: str | None):
            if alias is None:
                return None
            if alias not in cached:
                raise NemotronError(f"stage {spec.name}: no backend for model {alias!r}")
            return cached[alias]

        generator = get(spec.model) if stage.uses_generator else None
        return Models(generator, get(spec.reward_model), get(spec.judge_model) or generator)

    def _sampling(self, stage: Stage) -> Sampling:
        return Sampling(**{**self.config.sampling, **stage.default_sampling, **stage.spec.sampling})

    def _check_fingerprint(self, stage: Stage, sampling: Sampling, models: Models) -> None:
        fingerprint = {**stage.fingerprint(), "seed": self.config.seed, "sampling": sampling.payload(),
                       "models": [m.model if m else None for m in (models.generator, models.reward, models.judge)]}
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

    async def _run_stage(self, stage: Stage, cached: dict) -> dict:
        spec = stage.spec
        inputs = [r for source in spec.inputs for r in read_jsonl(self.out / "data" / f"{source}.jsonl")]
        if spec.limit is not None:
            inputs = inputs[:spec.limit]
        units = stage.units(inputs)
        models = self._models(stage, cached)
        sampling = self._sampling(stage)
        self._check_fingerprint(stage, sampling, models)
        used = [m for m in dict.fromkeys((models.generator, models.reward, models.judge)) if m is not None]
        requests_before = {id(m): (m.stats.requests, m.stats.retries) for m in used}
        store = RecordStore(self.out / "units" / f"{stage.name}.jsonl")
        try:
            todo = [u for u in units if u.id not in store]
            started = time.monotonic()
            failures = await self._run_units(stage, todo, store, models, sampling, used, len(units))
            results = {line["id"]: line for line in store}
        finally:
            store.close()
        collected = collect(stage, units, results)
        write_atomic(self.out / "data" / f"{stage.name}.jsonl", collected.kept)
        write_atomic(self.out / "rejected" / f"{stage.name}.jsonl", collected.rejected)
        return {
            "kind": stage.kind, "inputs": len(inputs), "units": len(units), "units_done": collected.units_done,
            "units_failed": collected.units_pending, "records_generated": collected.generated,
            "records_kept": len(collected.kept), "rejections": collected.reasons(), "usage": dict(collected.usage),
            "parse": collected.parse.to_dict(),
            "last_run": {"units_run": len(todo), "seconds": round(time.monotonic() - started, 3),
                         "failed_units": sum(failures.values()), "errors": dict(failures.most_common(20)),
                         "requests": sum(m.stats.requests - requests_before[id(m)][0] for m in used),
                         "retries": sum(m.stats.retries - requests_before[id(m)][1] for m in used)},
        }

    async def _run_unit(self, stage: Stage, unit: Unit, models: Models, sampling: Sampling) -> dict | str:
        """The unit's result line, or the error that failed it (a string)."""
        ctx = UnitContext(stage, unit, models, derive_seed(self.config.seed, stage.name, unit.id), sampling)
        try:
            records = await stage.run(unit, ctx)
        except BackendError as err:
            if err.status not in PERMANENT_STATUSES:
                return str(err)
            ctx.reject("refused", f"the model server refused a request: {err}")
            records = []
        return {"id": unit.id, "input": (unit.input or {}).get("id"), "records": records, "rejected": ctx.rejected,
                "usage": ctx.usage, "parse": ctx.parse.to_dict()}

    async def _run_units(self, stage: Stage, todo: list[Unit], store: RecordStore, models: Models,
                         sampling: Sampling, used: list, total: int) -> Counter:
        failures: Counter = Counter()
        pending: list[dict] = []
        window = self.config.unit_window or max(4, 2 * sum(m.concurrency for m in used))
        gauges = lambda: (sum(m.in_flight for m in used), sum(m.concurrency for m in used),  # noqa: E731
                          sum(m.stats.completion_tokens for m in used))
        progress = Progress(stage.name, total, total - len(todo), gauges, enabled=self.progress, stream=self.stream)
        todo_iter = iter(todo)

        writing = asyncio.Lock()
        writes: list[asyncio.Future] = []

        async def flush() -> None:
            # fsync off the event loop: calls in flight keep being served while a batch is written.
            # Shielded: a cancelled run still lets a batch already handed to the thread finish.
            async with writing:
                if pending:
                    batch = pending[:]
                    pending.clear()
                    writes.append(asyncio.ensure_future(asyncio.to_thread(store.append, batch)))
                    await asyncio.shield(writes[-1])
                last_flush[0] = time.monotonic()

        async def worker() -> None:
            for unit in todo_iter:
                outcome = await self._run_unit(stage, unit, models, sampling)
                if isinstance(outcome, str):
                    failures[outcome[:200]] += 1
                    entry = {"stage": stage.name, "unit": unit.id, "error": outcome, "time": time.time()}
                    with open(self.out / "failures.jsonl", "a") as f:
                        f.write(dumps(entry) + "\n")
                else:
                    pending.append(outcome)
                    if len(pending) >= self.config.flush_every and not writing.locked():
                        await flush()
                progress.advance()

        async def ticker() -> None:
            while True:
                await asyncio.sleep(min(self.config.flush_interval, 0.5))
                if pending and time.monotonic() - last_flush[0] >= self.config.flush_interval:
                    await flush()
                progress.tick()

        last_flush = [time.monotonic()]
        workers = [asyncio.ensure_future(worker()) for _ in range(min(window, len(todo)))]
        tick = asyncio.ensure_future(ticker())
        try:
            await asyncio.gather(*workers)
        finally:
            for task in (*workers, tick):
                task.cancel()
            await asyncio.gather(*workers, tick, return_exceptions=True)
            await asyncio.gather(*writes, return_exceptions=True)  # one append at a time on the file
            store.append(pending)
            pending.clear()
            progress.close()
        return failures


async def run_pipeline(config: PipelineConfig, out_dir: str | Path, api_keys: dict[str, str | None] | None = None, *,
                       base_dir: Path = Path("."), progress: bool = True) -> dict:
    """Open the config's backends, run, close them."""
    from nemotron.sdg.backends import open_backend

    used = {alias for s in config.stages for alias in
            ((s.model if STAGE_KINDS[s.kind].uses_generator else None), s.reward_model, s.judge_model) if alias}
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
