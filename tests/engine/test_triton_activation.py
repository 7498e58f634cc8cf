"""The one-kernel squared ReLU against the model's two in-place ops (relu_, square_): bitwise equal,
NaN, infinities and overflow included. Triton's CPU interpreter here, compiled on GPUs."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton sees the kernel: run it on the CPU
triton = pytest.importorskip("triton")

from nemotron.engine.triton_activation import BLOCK, relu_squared_triton_, use_triton_activation  # noqa: E402
from nemotron.model.nemotron import build_model, relu_squared_  # noqa: E402

from tests.conftest import TINY_CONFIG, kernel_test_model  # noqa: E402
from tests.hopper_build import build_for_hopper, needs_ptxas  # noqa: E402

DTYPES = [torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # the interpreter's fp16 overflow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 96), (3, 5, 512), (1, BLOCK + 7)])  # a decode row, a chunk, a tail
def test_kernel_is_bitwise_relu_then_square(dtype, shape):
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape))) * 300).to(dtype)  # fp16 overflows
    x.view(-1)[:4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
    x = x.to(DEVICE)
    expected = relu_squared_(x.clone())
    got = x.clone()
    out = relu_squared_triton_(got)
    assert out.data_ptr() == got.data_ptr()  # in place
    assert torch.equal(out.isnan(), expected.isnan()) and out.isnan().any()
    assert torch.equal(out.nan_to_num(), expected.nan_to_num()) and out.isinf().any()


def test_fp32_and_strided_inputs_go_to_the_pytorch_ops():
    x = torch.randn(4, 6, device=DEVICE)
    assert torch.equal(relu_squared_triton_(x.clone()), relu_squared_(x.clone()))
    strided = torch.randn(6, 4, device=DEVICE, dtype=torch.float16).t()
    assert torch.equal(relu_squared_triton_(strided.clone()), relu_squared_(strided.clone()))


def test_a_model_with_the_kernel_gives_the_same_logits():
    model, ids = kernel_test_model(DEVICE, seed=4)
    with torch.inference_mode():
        expected = model(ids)
        for layer in model.model.layers:  # use_triton_activation, without its CUDA-only check
            layer.mlp.activation_ = relu_squared_triton_
        assert torch.equal(model(ids), expected)
    fresh = use_triton_activation(build_model(TINY_CONFIG).to(DEVICE, torch.float16))  # on CUDA only
    expected_activation = relu_squared_triton_ if DEVICE == "cuda" else relu_squared_
    assert all(layer.mlp.activation_ is expected_activation for layer in fresh.model.layers)


COMPILE_FOR_HOPPER = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from nemotron.engine import triton_activation

source = ASTSource(triton_activation._relu_squared_kernel, {"x_ptr": "*bf16", "n": "i32", "BLOCK": "constexpr"},
                   constexprs={"BLOCK": triton_activation.BLOCK})
assert triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}).asm["cubin"]
"""


@needs_ptxas
def test_squared_relu_kernel_compiles_for_hopper_in_bfloat16():
    build_for_hopper(COMPILE_FOR_HOPPER)
