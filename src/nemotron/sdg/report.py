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


def _content(value: object) -> str | None:
    """The text of a reply stored as a string or as a message list ([{"role": "assistant", ...}])."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        return str(value[-1].get("content", ""))
    return None


def record_text(record: dict) -> str:
    """The text a record is about: the reply of an SFT record, the chosen reply of a pair, else its
    prompt or topic."""
    chosen = _content(record.get("chosen"))
    if chosen is not None:
        return chosen
    messages = record.get("messages")
    if isinstance(messages, list) and messages:
        return messages[-1]["content"] if messages[-1]["role"] == "assistant" else transcript(messages)
    for key in ("prompt", "topic", "document"):
        if isinstance(record.get(key), str):
            return record[key]
    return ""


def format_report(out_dir: str | Path) -> str:
    run, summary = load_run(out_dir)
    stages = summary.get("stages") or {}
    lines = [f"pipeline {run['name']} in {out_dir}", ""]
    header = f"{'stage':<22}{'kind':<22}{'units':>12}{'failed':>8}{'made':>9}{'kept':>9}{'calls':>9}" \
             f"{'cached':>9}{'tokens in':>12}{'tokens out':>12}"
    lines += [header, "-" * len(header)]
    totals: Counter = Counter()
    for stage in run["stages"]:
        s = stages.get(stage["name"])
        if s is None:  # no summary of it yet: a run stopped before its end, or one still going
            data = Path(out_dir) / "data" / f"{stage['name']}.jsonl"
            note = f"(unfinished: {sum(1 for _ in read_jsonl(data))} records so far)" if data.exists() else \
                "(not run yet)"
            lines.append(f"{stage['name']:<22}{stage['kind']:<22}{note:>12}")
            continue
        u = s["usage"]
        totals.update(u)
        lines.append(f"{stage['name']:<22}{stage['kind']:<22}{s['units_done']:>6}/{s['units']:<5}{s['units_failed']:>8}"
                     f"{s['records_generated']:>9}{s['records_kept']:>9}{u.get('calls', 0):>9}"
                     f"{u.get('cached_calls', 0):>9}{u.get('prompt_tokens', 0):>12}{u.get('completion_tokens', 0):>12}")
    lines += ["", f"total: {totals['calls']} model calls ({totals['cached_calls']} from the cache on resumes), "
                  f"{totals['reward_calls']} reward calls, {totals['prompt_tokens']} prompt tokens, "
                  f"{totals['completion_tokens']} generated tokens", ""]
    lines += _requests(summary.get("models") or {})
    lines.append("rejections:")
    any_rejection = False
    for stage in run["stages"]:
        s = stages.get(stage["name"]) or {}
        for reason, count in (s.get("rejections") or {}).items():
            lines.append(f"  {stage['name']:<22}{reason:<28}{count:>8}")
            any_rejection = True
    if not any_rejection:
        lines.append("  none")
    parse_lines = []
    for stage in run["stages"]:
        p = (stages.get(stage["name"]) or {}).get("parse") or {}
        if p.get("by_method") or p.get("failures"):
            methods = ", ".join(f"{m} {n}" for m, n in sorted(p["by_method"].items()))
            parse_lines.append(f"  {stage['name']:<22}parsed: {methods or '-'}; failures {p['failures']}; "
                               f"items {p['items']}; ungrounded items dropped {p['rejected_items']}")
    if parse_lines:
        lines += ["", "list parsing:", *parse_lines]
    failed = [(n, s["last_run"]) for n, s in stages.items() if s.get("last_run", {}).get("failed_units")]
    if failed:
        lines += ["", "units that gave up (retried by the next run of the same command):"]
        for name, last in failed:
            lines.append(f"  {name}: {last['failed_units']} units")
            lines += [f"    {count} x {error}" for error, count in last["errors"].items()]
    outputs = run.get("outputs") or {}
    if outputs:
        lines += ["", "datasets:"]
        for name in outputs:
            path = Path(out_dir) / f"{name}.jsonl"
            lines.append(f"  {path}: {sum(1 for _ in read_jsonl(path))} records" if path.exists() else
                         f"  {path}: not written yet")
    status = summary.get("status")
    if status:
        lines += ["", f"status: exit {status['exit']}: {status['message']}"]
    elif not summary:
        lines += ["", "status: the run has not finished (stopped, or still running); rerun the same command to "
                      "resume it"]
    return "\n".join(lines)


def _requests(models: dict) -> list[str]:
    """Requests, retries, given-up calls and errors by HTTP status (or kind), per model."""
    if not models:
        return []
    lines = ["requests:"]
    for alias, m in models.items():
        errors = ", ".join(f"{kind} x{n}" for kind, n in m["errors"].items()) or "none"
        lines.append(f"  {alias:<12}{m['requests']:>8} sent, {m['completed']} answered, {m['retries']} retries, "
                     f"{m['given_up']} given up; errors: {errors}")
        for url, e in (m.get("endpoints") or {}).items():
            errors = ", ".join(f"{kind} x{n}" for kind, n in e["errors"].items()) or "none"
            lines.append(f"    {url}: {e['requests']} sent, marked down {e['marked_down']} times; errors: {errors}")
    return [*lines, ""]


def plot(out_dir: str | Path) -> list[Path]:
    """PNGs under DIR/report/: reward score histograms, lengths per stage, and for preference data the
    chosen vs rejected rewards and their margin. Their paths."""
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
    pairs: list[tuple[float, float]] = []
    for stage in run["stages"]:
        for record in read_jsonl(out / "data" / f"{stage['name']}.jsonl"):
            lengths.setdefault(stage["name"], []).append(len(record_text(record).split()))
            for attribute, value in reward_values(record).items():
                rewards.setdefault(attribute, []).append(value)
            if isinstance(record.get("chosen_reward"), (int, float)) and \
                    isinstance(record.get("rejected_reward"), (int, float)):
                pairs.append((record["chosen_reward"], record["rejected_reward"]))
    written = []
    if rewards:
        written.append(_grid(plt, rewards, "#76b900", "score", False, "reward scores of kept records",
                             out / "report" / "rewards.png"))
    if lengths:
        written.append(_grid(plt, lengths, "#5b8db8", "words", True, "length of kept records",
                             out / "report" / "lengths.png"))
    if pairs:
        written.append(_preference(plt, pairs, out / "report" / "preference.png"))
    plt.close("all")
    return written


def _grid(plt, series: dict[str, list], color: str, xlabel: str, integer_x: bool, title: str, path: Path) -> Path:
    """One histogram per named series in a grid of at most four columns; counts on integer ticks."""
    from matplotlib.ticker import MaxNLocator

    columns = min(4, len(series))
    rows = -(-len(series) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.9 * rows + 0.6), squeeze=False)
    for ax, (name, values) in zip(axes.flat, series.items()):
        if integer_x:
            low, high = min(values), max(values)
            step = max(1, -(-(high - low + 1) // 30))
            bins = [low - 0.5 + i * step for i in range((high - low) // step + 2)]
        else:
            bins = 20
        ax.hist(values, bins=bins, color=color, edgecolor="white", linewidth=0.5)
        ax.set_title(f"{name} (n={len(values)})", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("records")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if max(values) - min(values) < 4:  # a narrow range would get fractional ticks
                middle = (max(values) + min(values)) / 2
                ax.set_xlim(middle - 3, middle + 3)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(series):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def _preference(plt, pairs: list[tuple[float, float]], path: Path) -> Path:
    """Chosen vs rejected reward (overlaid histograms) and the margin chosen - rejected."""
    from matplotlib.ticker import MaxNLocator

    chosen, rejected = [c for c, _ in pairs], [r for _, r in pairs]
    margins = [c - r for c, r in pairs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    low, high = min(chosen + rejected), max(chosen + rejected)
    bins = [low + (high - low) * i / 20 for i in range(21)] if high > low else 10
    left.hist(rejected, bins=bins, color="#c0504d", alpha=0.6, label="rejected")
    left.hist(chosen, bins=bins, color="#76b900", alpha=0.6, label="chosen")
    left.set_title(f"reward of chosen vs rejected (n={len(pairs)})", fontsize=10)
    left.set_xlabel("reward (weighted scalar)")
    left.legend()
    right.hist(margins, bins=20, color="#5b8db8")
    right.axvline(0, color="black", linewidth=0.8)
    right.set_title(f"margin chosen - rejected ({sum(m <= 0 for m in margins)} pairs <= 0)", fontsize=10)
    right.set_xlabel("reward margin")
    for ax in (left, right):
        ax.set_ylabel("pairs")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
