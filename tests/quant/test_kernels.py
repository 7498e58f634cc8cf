"""The Triton int8 / int4 kernels against a matmul with the dequantized weights (Triton's CPU
interpreter here, in float16: the interpreter mishandles bfloat16; on a GPU both dtypes, compiled)."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton sees the kernels: run them on the CPU
triton = pytest.importorskip("triton")

from nemotron.quant.kernels import int4_matmul, int8_matmul  # noqa: E402
from nemotron.quant.linear import Int4Linear, Int8Linear  # noqa: E402
from tests.hopper_build import build_for_hopper, needs_ptxas  # noqa: E402

DTYPES = [torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])
TILES = None if DEVICE == "cuda" else {"BLOCK_N": 16}  # autotuned on GPUs; small fixed tiles interpreted


def quantized(cls, out_features: int, in_features: int):
    torch.manual_seed(out_features + in_features)
    return cls.from_float(torch.nn.Linear(in_features, out_features, bias=False)).to(DEVICE)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 5, 20])  # decode batch sizes, one past a 16-row tile
@pytest.mark.parametrize("out_features, in_features", [(40, 256), (24, 192)])  # N off the tile, K off BLOCK_K
def test_int8_kernel(dtype, rows, out_features, in_features):
    q = quantized(Int8Linear, out_features, in_features)
    x = torch.randn(rows, in_features, device=DEVICE).to(dtype)
    tiles = TILES and {**TILES, "BLOCK_K": 128}
    out = int8_matmul(x, q.weight, q.weight_scale, tiles)
    expected = x.float() @ q.dequantize().t()
    assert out.dtype == dtype and out.shape == (rows, out_features)
    assert torch.allclose(out.float(), expected, atol=2e-2, rtol=1e-2)


@pytest.mark.skipif(DEVICE != "cpu", reason="fixed tiles: the interpreter's check of both one-row kernels")
@pytest.mark.parametrize("gemv", [0, 1])
@pytest.mark.parametrize("lead", [(), (1, 1)])
@pytest.mark.parametrize("out_features, in_features", [(40, 256), (24, 192)])  # N off the tile, K off BLOCK_K
def test_int8_one_row_as_gemv_or_tile(gemv, lead, out_features, in_features):
    q = quantized(Int8Linear, out_features, in_features)
    x = torch.randn(*lead, in_features, device=DEVICE).to(torch.float16)
    out = int8_matmul(x, q.weight, q.weight_scale, {"BLOCK_N": 16, "BLOCK_K": 128, "GEMV": gemv})
    assert out.shape == (*lead, out_features)
    assert torch.allclose(out.float(), x.float() @ q.dequantize().t(), atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead, rows", [((), 1), ((1,), 1), ((2,), 1), ((2,), 5), ((2,), 20)])  # one row: GEMV kernel
def test_int4_kernel(dtype, lead, rows):
    q = quantized(Int4Linear, 40, 384)
    x = torch.randn(*lead, rows, 384, device=DEVICE).to(dtype)  # leading dims are flattened and restored
    out = int4_matmul(x, q.weight_packed, q.weight_scale, TILES)
    expected = x.float() @ q.dequantize().t()
    assert out.shape == (*lead, rows, 40) and out.dtype == dtype
    assert torch.allclose(out.float(), expected, atol=2e-2, rtol=1e-2)


def q4_0_layout(out_features: int, in_features: int) -> Int4Linear:
    """Random codes in GGUF Q4_0's layout (groups of 32: byte j holds element j low, j + 16 high)."""
    torch.manual_seed(in_features)
    halves = torch.randint(0, 16, (out_features, in_features // 32, 2, 16))
    q = Int4Linear.empty(in_features, out_features, DEVICE, group_size=32)
    q.weight_packed.copy_((halves[:, :, 0] | halves[:, :, 1] << 4).to(torch.uint8).reshape(out_features, -1))
    q.weight_scale.copy_(torch.rand(out_features, in_features // 32) * 0.01 + 1e-3)
    return q


@pytest.mark.skipif(DEVICE != "cpu", reason="fixed tiles: the interpreter's check of each GEMV step size")
@pytest.mark.parametrize("step_groups", [1, 2, 4])
@pytest.mark.parametrize("in_features, group", [(384, 128), (160, 32)])  # 3 / 5 groups: a last step part empty
def test_int4_gemv_reads_several_groups_per_step(step_groups, in_features, group):
    q = quantized(Int4Linear, 40, in_features) if group == 128 else q4_0_layout(40, in_features)
    x = torch.randn(1, in_features, device=DEVICE).to(torch.float16)
    out = int4_matmul(x, q.weight_packed, q.weight_scale, {"BLOCK_N": 16, "STEP_GROUPS": step_groups})
    assert torch.allclose(out.float(), x.float() @ q.dequantize().t(), atol=2e-2, rtol=1e-2)


@pytest.mark.skipif(DEVICE != "cuda", reason="the module forward takes the kernel path on CUDA only")
@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
def test_module_forward_uses_the_kernel_on_cuda(cls):
    q = quantized(cls, 256, 512)
    x = torch.randn(3, 512, device=DEVICE, dtype=torch.bfloat16)
    assert torch.allclose(q(x).float(), x.float() @ q.dequantize().t(), atol=5e-2, rtol=2e-2)



COMPILE_FOR_HOPPER = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from nemotron.quant import kernels

common = {"x_ptr": "*bf16", "out_ptr": "*bf16", "M": "i32", "N": "i32", "K": "i32", "stride_xm": "i32",
          "stride_om": "i32", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr"}
for kernel, weight, scale, meta in ((kernels._int8_kernel, "*i8", "*fp32", {"BLOCK_K": 256}),
                                    (kernels._int4_kernel, "*u8", "*fp16", {"GROUP": 128})):
    signature = {**common, "w_ptr": weight, "scale_ptr": scale, **dict.fromkeys(meta, "constexpr")}
    signature = {name: signature[name] for name in kernel.arg_names}
    source = ASTSource(kernel, signature, constexprs={"BLOCK_M": 16, "BLOCK_N": 64, **meta})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 3})
    assert compiled.asm["cubin"]
signature = {"x_ptr": "*bf16", "w_ptr": "*u8", "scale_ptr": "*fp16", "out_ptr": "*bf16", "N": "i32", "K": "i32",
             "BLOCK_N": "constexpr", "GROUP": "constexpr", "STEP_GROUPS": "constexpr"}
source = ASTSource(kernels._int4_gemv_kernel, signature, constexprs={"BLOCK_N": 16, "GROUP": 128, "STEP_GROUPS": 4})
assert triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 3}).asm["cubin"]
signature = {"x_ptr": "*bf16", "w_ptr": "*i8", "scale_ptr": "*fp32", "out_ptr": "*bf16", "N": "i32", "K": "i32",
             "BLOCK_N": "constexpr", "BLOCK_K": "constexpr", "GEMV": "constexpr"}
for constexprs in ({"BLOCK_N": 8, "BLOCK_K": 1024, "GEMV": 1}, {"BLOCK_N": 64, "BLOCK_K": 256, "GEMV": 0}):
    source = ASTSource(kernels._int8_row_kernel, signature, constexprs=constexprs)
    assert triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 3}).asm["cubin"]
"""


@needs_ptxas
def test_kernels_compile_for_hopper_in_bfloat16():
    """What the interpreter cannot run: bfloat16, compiled to an sm_90 binary (no GPU needed). In a
    fresh process, because the interpreter patches triton.language for the rest of this one."""
    build_for_hopper(COMPILE_FOR_HOPPER)
