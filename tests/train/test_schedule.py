import math

import pytest

from nemotron.errors import ConfigError
from nemotron.train.schedule import ScheduleConfig, learning_rate


def test_warmup_is_linear_up_to_the_peak():
    config = ScheduleConfig(peak_lr=1e-3, total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(config, 0) == pytest.approx(1e-4)
    assert learning_rate(config, 4) == pytest.approx(5e-4)
    assert learning_rate(config, 9) == pytest.approx(1e-3)


def test_cosine_decays_to_the_floor_and_stays_there():
    config = ScheduleConfig(peak_lr=1e-3, total_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(config, 10) == pytest.approx(1e-3)
    assert learning_rate(config, 60) == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # half way: cos(pi/2) = 0
    assert learning_rate(config, 35) == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert learning_rate(config, 110) == pytest.approx(1e-4)
    assert learning_rate(config, 500) == pytest.approx(1e-4)
    rates = [learning_rate(config, s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_no_warmup_starts_at_the_peak():
    assert learning_rate(ScheduleConfig(2e-3, 50), 0) == pytest.approx(2e-3)


@pytest.mark.parametrize("kwargs", [dict(peak_lr=0, total_steps=10), dict(peak_lr=1e-3, total_steps=0),
                                    dict(peak_lr=1e-3, total_steps=10, warmup_steps=11),
                                    dict(peak_lr=1e-3, total_steps=10, min_lr_ratio=1.5)])
def test_bad_values_name_the_field(kwargs):
    with pytest.raises(ConfigError, match="ScheduleConfig"):
        ScheduleConfig(**kwargs)
