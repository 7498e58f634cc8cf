"""LayerNorm1p on GPUs as one Triton kernel, with the residual add before it fused in.

LayerNorm1p computes in fp32 (nemotron.model.nemotron), so on a bf16 model it is three kernels: the
cast up, the norm, the cast down. In a decoder layer the second norm also follows the attention's
residual add: four kernels for one row at batch 1. The 8B shape's batch-1 step on an H200 ran 65
norm kernels of 8.5 µs each, besides the casts around them (gpu_suite.sh, profile-engine). Here each norm
is one kernel, and `add_and_norm` is one kernel that writes both the sum (rounded to the model's
dtype, as the add in place was) and the normed sum computed from that rounded sum: the numbers of
the three-op path, up to the order of the fp32 reductions.

`use_triton_norms` swaps the modules in when the engine takes a 16-bit model on CUDA: a transform,
like the CPU kernels' (nemotron.quant.cpu), that leaves the model's own code path alone elsewhere.
Runs on CPU under TRITON_INTERPRET=1 for tests.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor, nn

from nemotron.model.nemotron import LayerNorm1p, replace_modules

MAX_HIDDEN = 16384  # one program holds a row; wider rows (Nemotron-4 340B: 18,432) keep the torch norm


@triton.jit
def _layernorm1p_kernel(x_ptr, residual_ptr, sum_ptr, out_ptr, scale_ptr, bias_ptr, N, eps,
                        HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    ok = cols < N
    x = tl.load(x_ptr + row * N + cols, mask=ok, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(residual_ptr + row * N + cols, mask=ok, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(sum_ptr.dtype.element_ty)  # the add's rounding
        tl.store(sum_ptr + row * N + cols, x, mask=ok)
    x = x.to(tl.float32)
    mean = tl.sum(x, axis=0) / N
    centred = tl.where(ok, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / N + eps)
    scale = tl.load(scale_ptr + cols, mask=ok, other=0.0)
    bias = tl.load(bias_ptr + cols, mask=ok, other=0.0)
    tl.store(out_ptr + row * N + cols, (centred * rstd * scale + bias).to(out_ptr.dtype.element_ty), mask=ok)


def layernorm1p(x: Tensor, scale: Tensor, bias: Tensor, eps: float, residual: Tensor | None = None,
                ) -> tuple[Tensor | None, Tensor]:
    """x (..., N) 16-bit; scale = 1 + weight and bias in fp32 (N,) -> (x + residual or None, normed).
    With `residual`, x + residual is rounded to x's dtype and normed from there."""
    n = x.shape[-1]
    x = x.contiguous()
    rows = x.numel() // n
    out = torch.empty_like(x)
    total = torch.empty_like(x) if residual is not None else None
    block = triton.next_power_of_2(n)
    _layernorm1p_kernel[(rows,)](
        x, residual.contiguous() if residual is not None else x, total if total is not None else out, out,
        scale, bias, n, eps, HAS_RESIDUAL=residual is not None, BLOCK=block,
        num_warps=4 if block <= 2048 else 8 if block <= 8192 else 16)
    return total, out


class TritonLayerNorm1p(LayerNorm1p):
    """LayerNorm1p in one kernel, sharing the parameters of the norm it replaces. The kernel has no
    backward: with autograd on (the engine's model trained afterwards) the three-op norm runs."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() or x.numel() == 0:
            return super().forward(x)
        scale, bias = self._scale_and_bias()
        return layernorm1p(x, scale, bias, self.eps)[1]

    def add_and_norm(self, x: Tensor, residual: Tensor) -> tuple[Tensor, Tensor]:
        if torch.is_grad_enabled() or x.numel() == 0:
            return super().add_and_norm(x, residual)
        scale, bias = self._scale_and_bias()
        return layernorm1p(x, scale, bias, self.eps, residual)


def use_triton_norms(model: nn.Module) -> nn.Module:
    """Inference transform, in place: every LayerNorm1p with 16-bit weights on CUDA (rows up to
    MAX_HIDDEN wide) -> TritonLayerNorm1p. Anything else is left as it is."""
    def triton_norm(name: str, module: nn.Module) -> TritonLayerNorm1p | None:
        if type(module) is not LayerNorm1p:
            return None
        weight = module.weight
        fits = weight.device.type == "cuda" and weight.dtype in (torch.bfloat16, torch.float16)
        return TritonLayerNorm1p.sharing(module) if fits and weight.shape[0] <= MAX_HIDDEN else None

    replace_modules(model, triton_norm)
    return model
