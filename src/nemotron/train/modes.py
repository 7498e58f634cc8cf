"""Running a model in evaluation mode for a while (no dropout), then as it was."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model.eval()` inside the block; its training flag as before afterwards (errors included)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
