"""`serve --tp/--pp` refuses a layout before starting any rank: one the model cannot be cut into, or one
whose busiest GPU would need more memory than the GPUs have (with the planner's per-GPU figures)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from nemotron.cli.main import main
from nemotron.engine.llm_engine import EngineConfig
from nemotron.errors import ConfigError
from nemotron.parallel.launch import RankOptions, check_fits
from nemotron.parallel.runtime import ParallelConfig


def _options(spec: str, tp: int, pp: int = 1) -> RankOptions:
    return RankOptions(spec, EngineConfig(parallel=ParallelConfig(tp, pp)), dtype="bfloat16", device="cuda")


@pytest.fixture
def h100s(monkeypatch):
    """Sixteen 80 GB GPUs, as far as the check can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 16)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=80 * 10**9))


def test_340b_in_bf16_needs_two_nodes_of_80gb_gpus(h100s):
    with pytest.raises(ConfigError) as info:
        check_fits(_options("nemotron-4-340b", 8))
    message = str(info.value)
    assert "tp 8 x pp 1 does not fit" in message and "these GPUs have 80.0 GB" in message
    assert "weights 85." in message and "KV cache" in message and "overhead 0.5 GB" in message
    check_fits(_options("nemotron-4-340b", 8, 2))  # the model card's layout fits


def test_a_layout_the_model_cannot_take_fails_the_command_before_serving(capsys):
    assert main(["serve", "tiny", "--tp", "3", "--device", "cpu", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "tensor parallel size 3 must divide the number of attention heads (4)" in err
    assert "serving" not in err  # refused before the server started
