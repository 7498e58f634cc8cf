"""Squared ReLU on GPUs as one Triton kernel, in place on the up-projection's output.

`relu_squared_` (nemotron.model.nemotron) is two kernels per layer on a GPU: `relu_` and `square_`,
each a pass over the FFN-wide activation. Here one pass reads each value once and writes relu(x)²
rounded once to the 16-bit dtype, as `square_` rounds (the product of two 16-bit values is exact in
fp32), so the result is bitwise the two-kernel one, NaN included (relu keeps a NaN; so does this).

`use_triton_activation` sets it on every MLP of a 16-bit model on CUDA: a transform over the model,
like the Triton norms and rotary embedding. Runs on CPU under TRITON_INTERPRET=1 for tests.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor, nn

from nemotron.model.nemotron import NemotronMLP, override_on_cuda, relu_squared_

BLOCK = 1024  # elements per program


@triton.jit
def _relu_squared_kernel(x_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    x = tl.load(x_ptr + offsets, mask=inside).to(tl.float32)
    kept = tl.where(x < 0, 0.0, x)  # relu: negatives to 0, NaN kept (a NaN is not < 0)
    tl.store(x_ptr + offsets, (kept * kept).to(x_ptr.dtype.element_ty), mask=inside)


def relu_squared_triton_(x: Tensor) -> Tensor:
    """relu_squared_ in one kernel, in place; fp32 and non-contiguous inputs take the PyTorch ops."""
    if x.dtype not in (torch.bfloat16, torch.float16) or not x.is_contiguous() or x.numel() == 0:
        return relu_squared_(x)
    _relu_squared_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, x.numel(), BLOCK=BLOCK, num_warps=4)
    return x


def use_triton_activation(model: nn.Module) -> nn.Module:
    """Inference transform, in place: every MLP on CUDA squares its ReLU with `relu_squared_triton_`
    (which leaves fp32 activations to the PyTorch ops). Anything else is left as it is."""
    return override_on_cuda(model, NemotronMLP, "activation_", relu_squared_triton_)
