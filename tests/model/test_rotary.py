"""The in-place rotary embedding the fused inference path uses is bitwise the out-of-place one."""
from __future__ import annotations

import pytest
import torch

from nemotron.model.nemotron import apply_partial_rotary, apply_partial_rotary_, rotary_cos_sin


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rotary_dim", [32, 64])  # partial (Nemotron's half) and whole heads
def test_in_place_rotary_is_bitwise_the_reference(dtype, rotary_dim):
    torch.manual_seed(rotary_dim)
    x = (torch.randn(2, 5, 6, 64) * 3).to(dtype)
    cos, sin = rotary_cos_sin(torch.arange(5).expand(2, 5) + 1000, rotary_dim, 10000.0, dtype)
    expected = apply_partial_rotary(x, cos, sin)
    fused = torch.randn(2, 5, 9, 64).to(dtype)  # rotated heads inside a wider projection, as in q/k/v
    fused[:, :, :6] = x
    rest = fused[:, :, 6:].clone()
    out = apply_partial_rotary_(fused[:, :, :6], cos, sin)
    assert torch.equal(out, expected) and torch.equal(fused[:, :, :6], expected)
    assert torch.equal(fused[:, :, 6:], rest)  # the value heads beside them are left alone


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rotary_rows_from_the_table_are_the_computed_ones(dtype):
    from nemotron.model.config import ModelConfig
    from nemotron.model.nemotron import NemotronModel

    config = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                         num_kv_heads=1, head_dim=16, max_position_embeddings=300)
    with torch.device("meta"):
        model = NemotronModel(config)
    positions = torch.tensor([[0, 1, 2], [7, 150, 299]])
    expected = rotary_cos_sin(positions, config.rotary_dim, config.rope_theta, dtype)
    with torch.no_grad():
        table = model.rotary(positions, dtype)
        longer = model.rotary(torch.arange(400)[None], dtype, longest=400)  # past the table: computed
    assert all(torch.equal(a, b) for a, b in zip(table, expected))
    assert table[0].shape == (2, 3, 1, config.rotary_dim)
    assert all(torch.equal(a, b) for a, b in zip(
        longer, rotary_cos_sin(torch.arange(400)[None], config.rotary_dim, config.rope_theta, dtype)))
