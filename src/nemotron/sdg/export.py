"""Datasets of a run as Parquet (`nemotron sdg export DIR --format parquet`), or as a folder that
Hugging Face `datasets` loads as it is (`--format hf`): DIR/hf/README.md, a dataset card whose
YAML header lists one config per dataset, and DIR/hf/data/<dataset>.parquet.

    datasets.load_dataset("DIR/hf", "sft")   # the first dataset is the default config

Nested fields (chat `messages`, reward score maps, constraints) become Arrow lists and structs;
a column whose values disagree in type from row to row is stored as JSON text instead.
"""
from __future__ import annotations

import json
from pathlib import Path

from nemotron.errors import NemotronError
from nemotron.sdg.report import load_run
from nemotron.sdg.store import read_jsonl

FORMATS = ("parquet", "hf")


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


def _schema(path: Path) -> list[tuple[str, str]]:
    import pyarrow.parquet as pq

    return [(f.name, str(f.type)) for f in pq.read_schema(path)]


def dataset_card(out: Path, files: dict[str, Path]) -> str:
    """README.md for the hf folder: the `configs` header `datasets` reads, then what a user of the
    data wants to know: how it was made (pipeline, seed, config hash, models), counts, schema."""
    run, summary = load_run(out)
    stages = summary.get("stages") or {}
    header = ["---", "configs:"]
    for i, (name, path) in enumerate(files.items()):
        header += [f"- config_name: {name}", *(["  default: true"] if i == 0 else []),
                   "  data_files:", "  - split: train", f"    path: data/{path.name}"]
    header += ["tags:", "- synthetic", "- nemotron", "---", ""]
    counts = {name: _rows(path) for name, path in files.items()}
    lines = [f"# {run['name']}: synthetic data", "",
             f"Generated with `nemotron sdg run` (the Nemotron-4 340B synthetic data recipe), pipeline "
             f"`{run['name']}`, seed {run.get('seed', '?')}.", "",
             f"- config hash (SHA-256 of stages, model names, sampling and seed): `{run.get('config_sha256', '?')}`",
             f"- run status: {(summary.get('status') or {}).get('message', 'unknown')}", "",
             "## Models", "", "| role | model |", "|---|---|"]
    lines += [f"| {alias} | `{model}` |" for alias, model in (run.get("models") or {}).items()]
    lines += ["", "## Datasets", "", "| config | rows | made by stages |", "|---|---|---|"]
    outputs = run.get("outputs") or {}
    lines += [f"| {name} | {counts[name]} | {', '.join(outputs.get(name, [name]))} |" for name in files]
    lines += ["", "## Stages", "", "| stage | kind | units | records made | kept | rejected (top reasons) |",
              "|---|---|---|---|---|---|"]
    for stage in run["stages"]:
        s = stages.get(stage["name"])
        if s is None:
            continue
        reasons = ", ".join(f"{r} {n}" for r, n in list(s["rejections"].items())[:3]) or "-"
        lines.append(f"| {stage['name']} | {stage['kind']} | {s['units_done']}/{s['units']} | "
                     f"{s['records_generated']} | {s['records_kept']} | {reasons} |")
    lines += ["", "## Schema", ""]
    for name, path in files.items():
        lines += [f"### {name}", "", "| column | type |", "|---|---|"]
        lines += [f"| {column} | `{kind}` |" for column, kind in _schema(path)]
        lines.append("")
    return "\n".join(header + lines)


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def to_hf(out: Path, sources: list[Path]) -> list[Path]:
    folder = out / "hf"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    files = {source.stem: to_parquet(list(read_jsonl(source)), folder / "data" / f"{source.stem}.parquet")
             for source in sources}
    card = folder / "README.md"
    card.write_text(dataset_card(out, files))
    return [card, *files.values()]


def export(out_dir: str | Path, fmt: str = "parquet") -> list[Path]:
    """Every dataset named under the pipeline's `outputs` (every stage's data when there are none)."""
    if fmt not in FORMATS:
        raise NemotronError(f"unknown export format {fmt!r}; known: {FORMATS}")
    out = Path(out_dir)
    run, _ = load_run(out)
    sources = [out / f"{name}.jsonl" for name in run.get("outputs") or {}] or \
        [out / "data" / f"{s['name']}.jsonl" for s in run["stages"]]
    for source in sources:
        if not source.exists():
            raise NemotronError(f"{source} does not exist yet: run the pipeline to the end first")
    if fmt == "hf":
        return to_hf(out, sources)
    return [to_parquet(list(read_jsonl(source)), source.with_suffix(".parquet")) for source in sources]
