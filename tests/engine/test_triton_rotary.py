"""The one-kernel partial rotary embedding against the model's four-op in-place version, on the fused
q/k view the attention layer passes: bitwise equal. Triton's CPU interpreter here, compiled on GPUs."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton sees the kernel: run it on the CPU
triton = pytest.importorskip("triton")

from nemotron.engine.triton_rotary import rotary_, use_triton_rotary  # noqa: E402
from nemotron.model.nemotron import NemotronModel, apply_partial_rotary_  # noqa: E402

from tests.conftest import TINY_CONFIG, kernel_test_model  # noqa: E402
from tests.hopper_build import build_for_hopper, needs_ptxas  # noqa: E402

DTYPES = [torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch, tokens", [(1, 1), (3, 1), (2, 7)])  # decode rows, a prompt chunk
@pytest.mark.parametrize("head_dim, rotary", [(16, 8), (64, 32), (32, 32)])  # partial, and whole heads
def test_kernel_is_bitwise_the_four_op_rotation(dtype, batch, tokens, head_dim, rotary):
    gen = torch.Generator().manual_seed(batch * 10 + tokens)
    hq, hkv = 4, 2
    qkv = (torch.randn(batch, tokens, hq + 2 * hkv, head_dim, generator=gen) * 4).to(dtype).to(DEVICE)
    positions = torch.randint(0, 4000, (batch, tokens), generator=gen).to(DEVICE)
    config = dataclasses.replace(TINY_CONFIG, head_dim=head_dim, rotary_fraction=rotary / head_dim,
                                 max_position_embeddings=4096)
    with torch.device("meta"):
        trunk = NemotronModel(config)
    with torch.inference_mode():
        cos, sin = trunk.rotary(positions, dtype, bounded=True)  # the engine's table rows (views)
        expected = apply_partial_rotary_(qkv.clone()[:, :, :hq + hkv], cos, sin)
        got_qkv = qkv.clone()
        got = rotary_(got_qkv[:, :, :hq + hkv], cos, sin)  # the strided q/k view of the fused projection
    assert got.data_ptr() == got_qkv.data_ptr()  # in place
    assert torch.equal(got, expected)
    assert torch.equal(got_qkv[:, :, hq + hkv:], qkv[:, :, hq + hkv:])  # v untouched


def test_fp32_goes_to_the_pytorch_ops():
    x = torch.randn(1, 2, 3, 16, device=DEVICE)
    cos, sin = torch.randn(1, 2, 1, 8, device=DEVICE), torch.randn(1, 2, 1, 8, device=DEVICE)
    assert torch.equal(rotary_(x.clone(), cos, sin), apply_partial_rotary_(x.clone(), cos, sin))


def test_a_model_with_the_kernel_gives_the_same_logits():
    model, ids = kernel_test_model(DEVICE, seed=3)
    for layer in model.model.layers:
        layer.self_attn.fuse_qkv()  # the fused-projection path the engine runs
    with torch.inference_mode():
        expected = model(ids)
        for layer in model.model.layers:  # use_triton_rotary, without its CUDA-only check
            layer.self_attn.rotate_ = rotary_
        assert torch.equal(model(ids), expected)
    use_triton_rotary(model)  # a no-op off CUDA, the module's own attribute on it
    assert all(("rotate_" in vars(layer.self_attn)) for layer in model.model.layers)


COMPILE_FOR_HOPPER = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from nemotron.engine import triton_rotary

signature = {"x_ptr": "*bf16", "cos_ptr": "*bf16", "sin_ptr": "*bf16", "num_heads": "i32", "stride_xb": "i32",
             "stride_xt": "i32", "stride_xh": "i32", "stride_cb": "i32", "stride_ct": "i32", "tokens_per_seq": "i32",
             "ROTARY": "constexpr"}
for dtype, ptx_type in (("bf16", "bf16"), ("fp16", "f16")):
    types = {**signature, **dict.fromkeys(["x_ptr", "cos_ptr", "sin_ptr"], "*" + dtype)}
    source = ASTSource(triton_rotary._rotary_kernel, types, constexprs={"ROTARY": 64})
    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=triton_rotary.LAUNCH_OPTIONS)
    assert kernel.asm["cubin"]
    # Each product and the sum rounded on its own, as PyTorch's kernels do: no fused multiply-add. With
    # contraction on, an H200 ran fma.rn.bf16 here and missed the four-op result in the last bit.
    ptx = kernel.asm["ptx"]
    assert "fma." not in ptx and "mul.rn." + ptx_type in ptx and "add.rn." + ptx_type in ptx
"""


@needs_ptxas
def test_rotary_kernel_compiles_for_hopper_without_fused_multiply_adds():
    build_for_hopper(COMPILE_FOR_HOPPER)
