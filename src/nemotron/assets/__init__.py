"""Files shipped inside the package: the embedded demo model."""
from __future__ import annotations

from pathlib import Path

from nemotron.errors import NemotronError

DEMO_MODEL_DIR = Path(__file__).parent / "demo"


def default_model_dir() -> Path:
    """The model used when the user names none."""
    if not (DEMO_MODEL_DIR / "config.json").is_file():
        raise NemotronError(f"no model given, and the embedded demo model is missing from {DEMO_MODEL_DIR}; "
                            f"name a model (directory, .nemo file or preset) or build it with `nemotron train demo`")
    return DEMO_MODEL_DIR
