"""One stage while a pipeline runs: its units as their inputs arrive, and its collection in order.

A stage reads the kept records of its input stages, in the order the config lists them and, within
one input, in that stage's collection order: the same records a stage would read from its inputs'
finished data files, but handed over one by one as they are collected. Units start as soon as
their input record is here. Collection walks the units in input order and stops at the first unit
without a result, so what each stage keeps (dedup included) does not depend on which unit
finished first. With a `limit`, an input's records are taken only once the inputs before it are
complete (the first `limit` records of the concatenation are wanted); a stage whose kind sets
`waits_for_inputs` takes its inputs only when they are all complete.

Collection in order would hold every later record back behind one slow unit (a unit sleeping in
backoff for seconds). So a finished unit's records also go downstream at once, early, through
the same filters applied in finishing order; the stage after starts their units right away. Only
the in-order collection decides what a stage keeps and which units the next stage collects: a
record released early that the in-order pass drops (a duplicate of an earlier record that
finished later) costs the calls of its units, never a record in the output.
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nemotron.sdg.backends import Sampling
from nemotron.sdg.collect import Collector, RecordFilter
from nemotron.sdg.stages import Models, Stage, Unit
from nemotron.sdg.store import RecordStore, write_atomic


@dataclass(slots=True)
class _Input:
    records: list[dict] = field(default_factory=list)  # received so far, in order
    taken: int = 0  # how many have been turned into units
    complete: bool = False  # the input stage has collected everything


class StageFlow:
    def __init__(self, index: int, stage: Stage, models: Models, sampling: Sampling, store: RecordStore,
                 out: Path) -> None:
        self.index, self.stage, self.models, self.sampling, self.store, self.out = \
            index, stage, models, sampling, store, out
        self.downstream: list[tuple[StageFlow, int]] = []  # (stage reading us, our position among its inputs)
        self.inputs = [_Input() for _ in stage.spec.inputs] or [_Input(complete=True)]
        self.units: list[list[Unit]] = [[] for _ in self.inputs]  # per input, in collection order
        self.results: dict[str, dict] = {}
        self.failed: dict[str, str] = {}
        self.ready: deque[Unit] = deque()  # units to run
        self.pending: list[dict] = []  # result lines not yet written
        self.collector = Collector(stage)
        # Early release skips near-dedup (the costly part): a near duplicate let through early costs
        # its units' calls at most; the in-order collection still drops it.
        self.early_filter = RecordFilter(stage, dataclasses.replace(stage.spec.filters, near_dedup=False))
        self._known: set[str] = set()
        self.records_taken = 0
        self.units_run = 0
        self.failures: Counter = Counter()
        self.done = False
        self._queued: set[str] = set()
        self._cursor = (0, 0)  # (input, unit) collection has reached
        self._first_start: float | None = None
        self._seconds = 0.0
        # How a finished stage's data files are written (the scheduler writes them off its loop).
        self.write_file: Callable[[Path, list[dict]], object] = write_atomic

    # ---- counts for progress ----
    @property
    def units_known(self) -> int:
        return len(self._known)

    @property
    def takes_early(self) -> bool:
        return self.stage.spec.limit is None and not self.stage.waits_for_inputs

    @property
    def units_finished(self) -> int:
        return sum(1 for units in self.units for u in units if u.id in self.results or u.id in self.failed)

    # ---- inputs ----
    def load(self) -> None:
        """Read the units finished by earlier runs (every stage's, before any stage starts)."""
        self.results = {line["id"]: line for line in self.store}

    def start(self) -> None:
        """A source stage makes its units; collection goes as far as earlier runs got."""
        if not self.stage.spec.inputs:
            self._add_units(0, self.stage.units([]))
        self._advance()

    def receive(self, position: int, record: dict) -> None:
        self.inputs[position].records.append(record)
        self._take()

    def input_complete(self, position: int) -> None:
        self.inputs[position].complete = True
        self._take()
        self._advance()

    def _limit_reached(self) -> bool:
        limit = self.stage.spec.limit
        return limit is not None and self.records_taken >= limit

    def _take(self) -> None:
        if self.stage.waits_for_inputs and not all(i.complete for i in self.inputs):
            return
        ordered = self.stage.spec.limit is not None
        for position, source in enumerate(self.inputs):
            if ordered and not all(i.complete for i in self.inputs[:position]):
                return
            while source.taken < len(source.records) and not self._limit_reached():
                record = source.records[source.taken]
                source.taken += 1
                self.records_taken += 1
                self._add_units(position, self.stage.units([record]))

    def receive_early(self, record: dict) -> None:
        """A record released before its stage collected it in order: start its units."""
        self._queue(self.stage.units([record]))

    def _add_units(self, position: int, units: list[Unit]) -> None:
        self.units[position].extend(units)
        self._queue(units)

    def _queue(self, units: list[Unit]) -> None:
        for unit in units:
            self._known.add(unit.id)
            if unit.id not in self.results and unit.id not in self._queued:
                self._queued.add(unit.id)
                self.ready.append(unit)

    def _closed(self, position: int) -> bool:
        source = self.inputs[position]
        return self._limit_reached() or (source.complete and source.taken == len(source.records))

    # ---- results ----
    def started_unit(self) -> None:
        if self._first_start is None:
            self._first_start = time.monotonic()
        self.units_run += 1

    def finish_unit(self, unit: Unit, line: dict) -> None:
        self.results[unit.id] = line
        self.pending.append(line)
        early = [flow for flow, _ in self.downstream if flow.takes_early]
        if early:
            for record in line["records"]:
                if self.early_filter(record) is None:
                    for flow in early:
                        flow.receive_early(record)
        self._advance()

    def fail(self, unit: Unit, error: str) -> None:
        self.failed[unit.id] = error
        self.failures[error[:200]] += 1
        self._advance()

    def take_pending(self) -> list[dict]:
        batch, self.pending = self.pending, []
        return batch

    def _advance(self) -> None:
        """Collect every unit that is next in order and finished; hand kept records downstream."""
        position, index = self._cursor
        while position < len(self.units):
            units = self.units[position]
            if index < len(units):
                unit = units[index]
                if unit.id in self.results:
                    kept = self.collector.add(unit, self.results[unit.id])
                elif unit.id in self.failed:
                    kept = self.collector.add(unit, None)
                else:
                    break
                index += 1
                self._cursor = (position, index)
                for flow, slot in self.downstream:
                    for record in kept:
                        flow.receive(slot, record)
                continue
            if not self._closed(position):
                break
            position, index = position + 1, 0
            self._cursor = (position, index)
        else:
            if not self.done:
                self._complete()

    def _complete(self) -> None:
        self.done = True
        if self._first_start is not None:
            self._seconds = time.monotonic() - self._first_start
        out, name = self.collector.out, self.stage.name
        self.write_file(self.out / "data" / f"{name}.jsonl", list(out.kept))
        self.write_file(self.out / "rejected" / f"{name}.jsonl", list(out.rejected))
        for flow, slot in self.downstream:
            flow.input_complete(slot)

    def summary(self) -> dict:
        out = self.collector.out
        return {
            "kind": self.stage.kind, "inputs": self.records_taken, "units": self.units_known,
            "units_done": out.units_done, "units_failed": out.units_pending, "records_generated": out.generated,
            "records_kept": len(out.kept), "rejections": out.reasons(), "usage": dict(out.usage),
            "parse": out.parse.to_dict(), "complete": self.done,
            "last_run": {"units_run": self.units_run, "seconds": round(self._seconds, 3),
                         "failed_units": sum(self.failures.values()), "errors": dict(self.failures.most_common(20))},
        }
