"""Ready-made pipelines for the recipes of the Nemotron-4 340B report (`nemotron sdg configs`)."""
from __future__ import annotations

from pathlib import Path

import yaml

_HERE = Path(__file__).parent


def names() -> list[str]:
    return sorted(p.stem for p in _HERE.glob("*.yaml"))


def config_path(name: str) -> Path:
    path = _HERE / f"{name}.yaml"
    if not path.exists():
        raise KeyError(f"no ready-made pipeline {name!r}; known: {names()}")
    return path


def describe(name: str) -> str:
    """The first line of the config's leading comment."""
    first = config_path(name).read_text().splitlines()[0]
    return first.lstrip("# ").strip() if first.startswith("#") else ""


def load(name: str) -> dict:
    return yaml.safe_load(config_path(name).read_text())
