"""The Triton LayerNorm1p (and its fused residual add) against the model's three-op norm: Triton's CPU
interpreter here, compiled on GPUs. Skipped where triton is not installed."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton sees the kernel: run it on the CPU
triton = pytest.importorskip("triton")

from nemotron.engine.triton_norm import TritonLayerNorm1p, layernorm1p, use_triton_norms  # noqa: E402
from nemotron.model.nemotron import LayerNorm1p  # noqa: E402
from tests.hopper_build import build_for_hopper, needs_ptxas  # noqa: E402



def norm_with_weights(hidden: int, seed: int) -> LayerNorm1p:
    gen = torch.Generator().manual_seed(seed)
    norm = LayerNorm1p(hidden, 1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(hidden, generator=gen) * 0.3)
        norm.bias.copy_(torch.randn(hidden, generator=gen) * 0.3)
    return norm


@pytest.mark.parametrize("shape", [(1, 1, 96), (2, 5, 256), (7, 100)])  # 96: a row narrower than its block
@pytest.mark.parametrize("dtype", [torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else []))
def test_norm_and_fused_add_match_the_three_op_norm(shape, dtype):
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(*shape, generator=gen) * 3 + 1).to(dtype).to(DEVICE)
    residual = torch.randn(*shape, generator=gen).to(dtype).to(DEVICE)
    norm = norm_with_weights(shape[-1], 2).to(DEVICE, dtype)
    fused = TritonLayerNorm1p.sharing(norm)
    ulps = {"atol": 2 * torch.finfo(dtype).eps, "rtol": 2 * torch.finfo(dtype).eps}  # the reductions' order aside
    with torch.inference_mode():
        assert fused.weight is norm.weight and fused.bias is norm.bias
        torch.testing.assert_close(fused(x), norm(x), **ulps)
        total, normed = fused.add_and_norm(x.clone(), residual)
        expected_total, expected = norm.add_and_norm(x.clone(), residual)
    assert torch.equal(total, expected_total)  # the sum is rounded to the model's dtype as the add in place is
    torch.testing.assert_close(normed, expected, **ulps)
    assert normed.dtype == dtype and normed.shape == x.shape


def test_norms_are_normalised_in_fp32_from_the_rounded_sum():
    """Large offsets: a mean taken in 16 bits would lose the small deviations."""
    x = (torch.full((1, 256), 1000.0) + torch.linspace(-1, 1, 256)).half().to(DEVICE)
    residual = torch.full((1, 256), 24.0).half().to(DEVICE)
    scale, bias = torch.ones(256, device=DEVICE), torch.zeros(256, device=DEVICE)
    total, normed = layernorm1p(x, scale, bias, 1e-5, residual)
    reference = torch.nn.functional.layer_norm(total.float(), (256,), eps=1e-5)
    torch.testing.assert_close(normed.float(), reference, atol=2e-3, rtol=0)


def test_with_autograd_on_the_norm_is_the_differentiable_three_op_one():
    norm = norm_with_weights(96, 3).to(DEVICE, torch.float16)
    fused = TritonLayerNorm1p.sharing(norm)
    x = torch.randn(2, 96).half().to(DEVICE)
    fused(x).float().sum().backward()
    assert norm.weight.grad is not None and torch.isfinite(norm.weight.grad).all()


def test_the_transform_takes_16_bit_norms_on_cuda_only():
    model = torch.nn.Sequential(LayerNorm1p(64, 1e-5), LayerNorm1p(64, 1e-5).half())
    use_triton_norms(model)  # on the CPU: nothing
    assert [type(m) for m in model] == [LayerNorm1p, LayerNorm1p]
    if DEVICE == "cuda":
        use_triton_norms(model.cuda())
        assert [type(m) for m in model] == [LayerNorm1p, TritonLayerNorm1p]  # fp32 weights: one op already


COMPILE_FOR_HOPPER = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from nemotron.engine import triton_norm

for residual in (False, True):
    signature = {"x_ptr": "*bf16", "residual_ptr": "*bf16", "sum_ptr": "*bf16", "out_ptr": "*bf16",
                 "scale_ptr": "*fp32", "bias_ptr": "*fp32", "N": "i32", "eps": "fp32",
                 "HAS_RESIDUAL": "constexpr", "BLOCK": "constexpr"}
    source = ASTSource(triton_norm._layernorm1p_kernel, signature, constexprs={"HAS_RESIDUAL": residual, "BLOCK": 4096})
    assert triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8}).asm["cubin"]
"""


@needs_ptxas
def test_norm_kernel_compiles_for_hopper_in_bfloat16():
    build_for_hopper(COMPILE_FOR_HOPPER)


def test_a_model_on_triton_norms_gives_the_logits_of_the_plain_one():
    """The decoder layers' wiring: input norm, then the attention's residual add fused into the second
    norm; logits as the three-op norms give them, up to 16-bit rounding."""
    from nemotron.model.nemotron import build_model, init_random_weights
    from tests.conftest import TINY_CONFIG

    model = build_model(TINY_CONFIG)
    init_random_weights(model, seed=4, std=0.1)
    for norm in [m for m in model.modules() if isinstance(m, LayerNorm1p)]:
        with torch.no_grad():
            norm.weight.normal_(0, 0.2)
            norm.bias.normal_(0, 0.2)
    model = model.to(DEVICE, torch.float16)
    ids = torch.randint(4, TINY_CONFIG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    with torch.inference_mode():
        expected = model(ids).float()
        for parent in list(model.modules()):  # use_triton_norms, without its CUDA-only check
            for name, child in list(parent.named_children()):
                if type(child) is LayerNorm1p:
                    setattr(parent, name, TritonLayerNorm1p.sharing(child))
        assert sum(isinstance(m, TritonLayerNorm1p) for m in model.modules()) == 2 * TINY_CONFIG.num_layers + 1
        logits = model(ids).float()
    torch.testing.assert_close(logits, expected, atol=1e-2, rtol=1e-2)  # equal in the interpreter
    assert (logits.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9
