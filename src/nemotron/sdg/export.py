"""Datasets of a run as Parquet (`nemotron sdg export DIR --format parquet`).

Nested fields (chat `messages`, reward score maps, constraints) become Arrow lists and structs;
a column whose values disagree in type from row to row is stored as JSON text instead.
"""
from __future__ import annotations

import json
from pathlib import Path

from nemotron.errors import NemotronError
from nemotron.sdg.report import load_run
from nemotron.sdg.store import read_jsonl

FORMATS = ("parquet",)


def _column(pa, values: list):
    try:
        array = pa.array(values)
        if not _has_empty_struct(pa, array.type):  # Parquet cannot store a struct without fields
            return array
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    return pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values], pa.string())


def _has_empty_struct(pa, arrow_type) -> bool:
    if pa.types.is_struct(arrow_type):
        return arrow_type.num_fields == 0 or any(_has_empty_struct(pa, f.type) for f in arrow_type)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _has_empty_struct(pa, arrow_type.value_type)
    return False


def to_parquet(records: list[dict], path: Path) -> Path:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise NemotronError("Parquet export needs pyarrow: pip install 'nemotron[sdg]'") from None
    names = list(dict.fromkeys(k for r in records for k in r))
    table = pa.table({n: _column(pa, [r.get(n) for r in records]) for n in names}) if records else pa.table({})
    pq.write_table(table, path)
    return path


def export(out_dir: str | Path, fmt: str = "parquet") -> list[Path]:
    """Every dataset named under the pipeline's `outputs` (every stage's data when there are none)."""
    if fmt not in FORMATS:
        raise NemotronError(f"unknown export format {fmt!r}; known: {FORMATS}")
    out = Path(out_dir)
    run, _ = load_run(out)
    sources = [out / f"{name}.jsonl" for name in run.get("outputs") or {}] or \
        [out / "data" / f"{s['name']}.jsonl" for s in run["stages"]]
    written = []
    for source in sources:
        if not source.exists():
            raise NemotronError(f"{source} does not exist yet: run the pipeline to the end first")
        written.append(to_parquet(list(read_jsonl(source)), source.with_suffix(".parquet")))
    return written
