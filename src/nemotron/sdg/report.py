"""`nemotron sdg report DIR`: what a run produced, what it dropped and why, what it cost, and PNG
plots of reward scores and lengths. Everything is read from the run's files."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from nemotron.errors import NemotronError
from nemotron.sdg.collect import reward_values
from nemotron.sdg.prompts import transcript
from nemotron.sdg.store import read_jsonl


def load_run(out_dir: str | Path) -> tuple[dict, dict]:
    out = Path(out_dir)
    if not (out / "run.json").exists():
        raise NemotronError(f"{out} is not a pipeline output directory (no run.json)")
    run = json.loads((out / "run.json").read_text())
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return run, summary


def record_text(record: dict) -> str:
    """The text a record is about: the reply of an SFT record, the chosen reply of a pair, else its
    prompt or topic."""
    if isinstance(record.get("chosen"), str):
        return record["chosen"]
    messages = record.get("messages")
    if isinstance(messages, list) and messages:
        return messages[-1]["content"] if messages[-1]["role"] == "assistant" else transcript(messages)
    for key in ("prompt", "topic", "document"):
        if isinstance(record.get(key), str):
            return record[key]
    return ""


def format_report(out_dir: str | Path) -> str:
    run, summary = load_run(out_dir)
    lines = [f"pipeline {run['name']} in {out_dir}", ""]
    header = f"{'stage':<22}{'kind':<22}{'units':>12}{'failed':>8}{'made':>9}{'kept':>9}{'calls':>9}" \
             f"{'cached':>9}{'tokens in':>12}{'tokens out':>12}"
    lines += [header, "-" * len(header)]
    totals: Counter = Counter()
    for stage in run["stages"]:
        s = summary.get(stage["name"])
        if s is None:
            lines.append(f"{stage['name']:<22}{stage['kind']:<22}{'(not run yet)':>12}")
            continue
        u = s["usage"]
        totals.update(u)
        lines.append(f"{stage['name']:<22}{stage['kind']:<22}{s['units_done']:>6}/{s['units']:<5}{s['units_failed']:>8}"
                     f"{s['records_generated']:>9}{s['records_kept']:>9}{u.get('calls', 0):>9}"
                     f"{u.get('cached_calls', 0):>9}{u.get('prompt_tokens', 0):>12}{u.get('completion_tokens', 0):>12}")
    lines += ["", f"total: {totals['calls']} model calls ({totals['cached_calls']} from the cache on resumes), "
                  f"{totals['reward_calls']} reward calls, {totals['prompt_tokens']} prompt tokens, "
                  f"{totals['completion_tokens']} generated tokens", ""]
    lines.append("rejections:")
    any_rejection = False
    for stage in run["stages"]:
        s = summary.get(stage["name"]) or {}
        for reason, count in (s.get("rejections") or {}).items():
            lines.append(f"  {stage['name']:<22}{reason:<28}{count:>8}")
            any_rejection = True
    if not any_rejection:
        lines.append("  none")
    parse_lines = []
    for stage in run["stages"]:
        p = (summary.get(stage["name"]) or {}).get("parse") or {}
        if p.get("by_method") or p.get("failures"):
            methods = ", ".join(f"{m} {n}" for m, n in sorted(p["by_method"].items()))
            parse_lines.append(f"  {stage['name']:<22}parsed: {methods or '-'}; failures {p['failures']}; "
                               f"items {p['items']}; ungrounded items dropped {p['rejected_items']}")
    if parse_lines:
        lines += ["", "list parsing:", *parse_lines]
    failed = [(n, s["last_run"]) for n, s in summary.items() if s.get("last_run", {}).get("failed_units")]
    if failed:
        lines += ["", "failed units (retried by the next run of the same command):"]
        for name, last in failed:
            lines.append(f"  {name}: {last['failed_units']} units")
            lines += [f"    {count} x {error}" for error, count in last["errors"].items()]
    outputs = run.get("outputs") or {}
    if outputs:
        lines += ["", "datasets:"]
        for name in outputs:
            path = Path(out_dir) / f"{name}.jsonl"
            count = sum(1 for _ in read_jsonl(path)) if path.exists() else 0
            lines.append(f"  {path}: {count} records")
    return "\n".join(lines)


def plot(out_dir: str | Path) -> list[Path]:
    """Reward histograms and length distributions as PNGs under DIR/report/; their paths."""
    try:
        import matplotlib
    except ImportError:
        raise NemotronError("plots need matplotlib: pip install 'nemotron[sdg]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    run, _ = load_run(out)
    (out / "report").mkdir(exist_ok=True)
    rewards: dict[str, list[float]] = {}
    lengths: dict[str, list[int]] = {}
    for stage in run["stages"]:
        for record in read_jsonl(out / "data" / f"{stage['name']}.jsonl"):
            lengths.setdefault(stage["name"], []).append(len(record_text(record).split()))
            for attribute, value in reward_values(record).items():
                rewards.setdefault(attribute, []).append(value)
    written = []
    if rewards:
        written.append(_histograms(plt, rewards, "#76b900", "score", "reward scores of kept records",
                                   out / "report" / "rewards.png"))
    if lengths:
        written.append(_histograms(plt, lengths, "#5b8db8", "words", "length of kept records",
                                   out / "report" / "lengths.png"))
    plt.close("all")
    return written


def _histograms(plt, series: dict[str, list], color: str, xlabel: str, title: str, path: Path) -> Path:
    """One histogram per named series, side by side, saved to path."""
    fig, axes = plt.subplots(1, len(series), figsize=(3.2 * len(series), 3), squeeze=False)
    for ax, (name, values) in zip(axes[0], series.items()):
        ax.hist(values, bins=20, color=color)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
    axes[0][0].set_ylabel("records")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return path
