"""Quantized linear modules: error bounds of each format, exact packing, fusion, CPU forward paths."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nemotron.quant.linear import FP8_MAX, GROUP_SIZE, SCHEMES, Fp8Linear, Int4Linear, Int8Linear


def linear(out_features: int = 48, in_features: int = 256, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(in_features, out_features, bias=False)
    with torch.no_grad():
        layer.weight[3] *= 40  # rows of very different magnitude: per-row / per-group scales must follow
        layer.weight[5, :GROUP_SIZE] = 0  # an all-zero group (int4) must not divide by zero
    return layer


def test_int8_error_is_at_most_half_a_step_of_its_row():
    layer = linear()
    q = Int8Linear.from_float(layer)
    assert q.weight.dtype == torch.int8 and q.weight_scale.shape == (48,)
    error = (q.dequantize() - layer.weight).abs()
    assert torch.all(error <= q.weight_scale[:, None] / 2 + 1e-7)
    # the largest weight of a row maps to ±127
    assert torch.equal(q.weight.abs().amax(dim=1)[[0, 3]], torch.tensor([127, 127], dtype=torch.int8))


def test_int4_error_is_at_most_half_a_step_of_its_group():
    layer = linear()
    q = Int4Linear.from_float(layer)
    assert q.weight_packed.shape == (48, 128) and q.weight_packed.dtype == torch.uint8
    assert q.weight_scale.shape == (48, 2) and q.weight_scale.dtype == torch.float16
    step = q.weight_scale.float().repeat_interleave(GROUP_SIZE, dim=1)  # (N, K)
    error = (q.dequantize() - layer.weight).abs()
    assert torch.all(error <= step / 2 + 1e-6)
    assert torch.all(q.dequantize()[5, :GROUP_SIZE] == 0) and not q.dequantize().isnan().any()


def test_int4_packing_layout_is_split_halves_of_each_group():
    """Integer weights on the grid come back exactly, and byte j of a group holds elements j and j + 64."""
    codes = torch.randint(-7, 8, (4, 2 * GROUP_SIZE), generator=torch.Generator().manual_seed(1))
    codes[:, 0] = 7  # every group's absmax is 7: scale exactly 1
    codes[:, GROUP_SIZE] = -7
    layer = nn.Linear(2 * GROUP_SIZE, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(codes.float())
    q = Int4Linear.from_float(layer)
    assert torch.equal(q.weight_scale, torch.ones(4, 2, dtype=torch.float16))
    assert torch.equal(q.dequantize(), codes.float())
    byte = q.weight_packed[2, GROUP_SIZE // 2 + 10]  # second group, j = 10
    assert int(byte) & 0xF == int(codes[2, GROUP_SIZE + 10]) + 8
    assert int(byte) >> 4 == int(codes[2, GROUP_SIZE + 10 + GROUP_SIZE // 2]) + 8


def test_fp8_weights_use_the_e4m3_range_per_row():
    layer = linear()
    q = Fp8Linear.from_float(layer)
    assert q.weight.dtype == torch.float8_e4m3fn
    assert torch.allclose(q.weight.float().abs().amax(dim=1)[[0, 3]], torch.tensor([FP8_MAX, FP8_MAX]))
    relative = (q.dequantize() - layer.weight).abs() / layer.weight.abs().clamp_min(1e-3)
    big = layer.weight.abs() > q.weight_scale[:, None] * 2 ** -6  # normal e4m3 numbers: 3 mantissa bits
    assert torch.all(relative[big] <= 2 ** -4 + 1e-6)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_weight_only_forward_is_a_matmul_with_the_dequantized_weight(scheme):
    layer = linear()
    q = SCHEMES[scheme].from_float(layer)
    x = torch.randn(2, 3, 256)
    assert torch.allclose(q(x), F.linear(x, q.dequantize()), atol=1e-5)
    assert q(x.bfloat16()).dtype == torch.bfloat16


def test_fp8_forward_quantizes_activations_per_token():
    layer = linear()
    q = Fp8Linear.from_float(layer)
    x = torch.randn(5, 256)
    x[1] *= 100  # per-token scales: a loud token does not crush the others' resolution
    scale = x.abs().amax(dim=1, keepdim=True) / FP8_MAX
    x_fp8 = (x / scale).to(torch.float8_e4m3fn).float() * scale
    expected = x_fp8 @ q.dequantize().t()
    assert torch.allclose(q(x), expected, rtol=1e-5, atol=1e-4)
    assert (q(x) - layer(x)).norm() / layer(x).norm() < 0.06  # both operands at 3 mantissa bits


@pytest.mark.parametrize("scheme", ["int8", "int4", "fp8"])
def test_concat_is_the_modules_side_by_side(scheme):
    parts = [SCHEMES[scheme].from_float(linear(n, seed=n)) for n in (32, 16, 16)]
    fused = SCHEMES[scheme].concat(parts)
    x = torch.randn(3, 256)
    assert fused.out_features == 64
    assert torch.equal(fused(x), torch.cat([p(x) for p in parts], dim=-1))


def test_bias_and_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="bias"):
        Int8Linear.from_float(nn.Linear(128, 8))
    with pytest.raises(ValueError, match="divisible by 128"):
        Int4Linear.from_float(nn.Linear(96, 8, bias=False))
