"""Learning-rate schedule: linear warmup, then cosine decay to a floor."""
from __future__ import annotations

import math
from dataclasses import dataclass

from nemotron.errors import ConfigError


@dataclass(slots=True, frozen=True)
class ScheduleConfig:
    peak_lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # the floor, as a fraction of peak_lr

    def __post_init__(self) -> None:
        if not self.peak_lr > 0:
            raise ConfigError(f"ScheduleConfig.peak_lr must be positive, got {self.peak_lr}")
        if self.total_steps <= 0:
            raise ConfigError(f"ScheduleConfig.total_steps must be positive, got {self.total_steps}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ConfigError(f"ScheduleConfig.warmup_steps must be in [0, total_steps={self.total_steps}], "
                             f"got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"ScheduleConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


def learning_rate(config: ScheduleConfig, step: int) -> float:
    """The rate for optimizer step `step` (0-based): rises linearly to peak_lr over the first
    warmup_steps steps, then follows a half cosine down to peak_lr * min_lr_ratio at total_steps."""
    if step < config.warmup_steps:
        return config.peak_lr * (step + 1) / config.warmup_steps
    floor = config.peak_lr * config.min_lr_ratio
    decay_steps = config.total_steps - config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / decay_steps) if decay_steps else 1.0
    return floor + (config.peak_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
