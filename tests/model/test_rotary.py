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


def _small_model():
    from nemotron.model.config import ModelConfig
    from nemotron.model.nemotron import NemotronModel

    config = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                         num_kv_heads=1, head_dim=16, max_position_embeddings=300)
    with torch.device("meta"):
        return NemotronModel(config)


def _independent_cos_sin(positions: torch.Tensor, rotary_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The HF Llama form in float64: angle p * theta^(-2i / d), cos / sin repeated over both halves."""
    inv_freq = theta ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    angles = positions[..., None].double() * inv_freq  # (B, T, rotary_dim / 2)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), -1)[:, :, None], torch.cat((-sin, sin), -1)[:, :, None]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rotary_rows_from_the_table_are_the_computed_ones(dtype):
    model = _small_model()
    config = model.config
    positions = torch.tensor([[0, 1, 2], [7, 150, 299]])
    expected = rotary_cos_sin(positions, config.rotary_dim, config.rope_theta, dtype)
    with torch.no_grad():
        table = model.rotary(positions, dtype, bounded=True)
        longer = model.rotary(torch.arange(400)[None], dtype, bounded=False)  # past the table: computed
    assert all(torch.equal(a, b) for a, b in zip(table, expected))
    assert table[0].shape == (2, 3, 1, config.rotary_dim)
    for ours, reference in zip(longer, _independent_cos_sin(torch.arange(400)[None], config.rotary_dim,
                                                             config.rope_theta)):
        # float32 angles up to 400 rad: ~1e-5 off the float64 ones
        torch.testing.assert_close(ours.double(), reference, atol=2e-5 if dtype == torch.float32 else 8e-3, rtol=0)


def test_explicit_positions_past_the_context_extrapolate_without_autograd():
    from nemotron.model.config import ModelConfig
    from nemotron.model.nemotron import NemotronModel

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                         num_kv_heads=1, head_dim=16, max_position_embeddings=8)
    model = NemotronModel(config).eval()
    ids = torch.randint(0, 64, (1, 4))
    inside, past = torch.arange(4)[None] + 2, torch.arange(4)[None] + 6  # 6..9 runs past the 8 positions
    with torch.no_grad():
        table_path = model(ids, inside)
        past_out = model(ids, past)
    with torch.enable_grad():  # the computed path
        computed_inside = model(ids, inside).detach()
        computed_past = model(ids, past).detach()
    assert torch.equal(table_path, computed_inside)
    assert torch.equal(past_out, computed_past)
