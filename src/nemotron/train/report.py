"""`nemotron train report OUT`: a training run's curves from OUT/metrics.jsonl, as one PNG."""
from __future__ import annotations

import json
from pathlib import Path

from nemotron.train.data import DataError

# Panels in this order, each with the series drawn on it; anything else numeric gets its own panel.
PANELS = (("loss", ("loss", "valid_loss")), ("accuracy", ("accuracy",)), ("reward margin", ("margin",)),
          ("attribute MSE", ("mse",)), ("learning rate", ("lr",)), ("tokens/s", ("tokens_per_s",)))


def read_metrics(out_dir: str | Path) -> list[dict]:
    path = Path(out_dir) / "metrics.jsonl"
    if not path.is_file():
        raise DataError(f"{path} does not exist: is {out_dir} a training output directory?")
    records = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise DataError(f"{path}:{line_no} is not valid JSON") from None
    if not records:
        raise DataError(f"{path} is empty: the run has not logged a step yet")
    return records


def draw_curves(out_dir: str | Path, png: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    records = read_metrics(out_dir)
    keys = {k for r in records for k, v in r.items() if k != "step" and isinstance(v, (int, float))}
    panels = [(title, [s for s in series if s in keys]) for title, series in PANELS]
    known = {s for _, series in PANELS for s in series}
    panels = [p for p in panels if p[1]] + [(k, [k]) for k in sorted(keys - known)]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    for ax, (title, series) in zip(axes.flat, panels):
        for name in series:
            points = [(r["step"], r[name]) for r in records if name in r]
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        if len(series) > 1:
            ax.legend()
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    figure.suptitle(f"training run {Path(out_dir).resolve().name}")
    figure.tight_layout()
    path = Path(png) if png else Path(out_dir) / "curves.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
