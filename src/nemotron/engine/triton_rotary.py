"""Partial rotary embedding on GPUs as one Triton kernel, in place on the fused q/k heads.

`apply_partial_rotary_` (nemotron.model.nemotron) is four kernels per layer on a GPU: the roll, two
multiplies and the add, each rounding to the model's dtype. Here one program per (token, head)
loads the head's rotary channels once and does the same three roundings in the same order
(x·cos, roll(x)·sin, their sum, each rounded to the 16-bit dtype as PyTorch's elementwise kernels
round), so the result is bitwise the one of the four-kernel path. That needs the kernel built without
floating-point contraction: by default the compiler narrowed the products and the sum to bf16 ops and
fused one product into the sum (`fma.rn.bf16`, one rounding where PyTorch has two), and on an H200
the outputs differed from the four ops' in the last bit (gpu_suite.sh, tests).

`use_triton_rotary` sets it on every attention layer of a 16-bit model on CUDA: a transform over the
model, like the Triton norms (nemotron.engine.triton_norm). Runs on CPU under TRITON_INTERPRET=1
for tests.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor, nn

from nemotron.model.nemotron import NemotronAttention, apply_partial_rotary_, override_on_cuda


@triton.jit
def _rotary_kernel(x_ptr, cos_ptr, sin_ptr, num_heads, stride_xb, stride_xt, stride_xh, stride_cb, stride_ct,
                   tokens_per_seq, ROTARY: tl.constexpr):
    token = tl.program_id(0)
    head = tl.program_id(1)
    b, t = token // tokens_per_seq, token % tokens_per_seq
    half: tl.constexpr = ROTARY // 2
    dims = tl.arange(0, ROTARY)
    partner = (dims + half) % ROTARY  # roll by half: out[i] takes x[i - half], i.e. x[(i + half) % R]
    base = x_ptr + b.to(tl.int64) * stride_xb + t * stride_xt + head * stride_xh
    x = tl.load(base + dims)
    rolled = tl.load(base + partner)
    cos = tl.load(cos_ptr + b.to(tl.int64) * stride_cb + t * stride_ct + dims)
    sin = tl.load(sin_ptr + b.to(tl.int64) * stride_cb + t * stride_ct + dims)
    dtype = x_ptr.dtype.element_ty
    rotated_part = (rolled.to(tl.float32) * sin.to(tl.float32)).to(dtype)
    cos_part = (x.to(tl.float32) * cos.to(tl.float32)).to(dtype)
    tl.store(base + dims, (cos_part.to(tl.float32) + rotated_part.to(tl.float32)).to(dtype))


# Launch options: no multiply-add fusion (the roundings above are the point); one warp per head.
LAUNCH_OPTIONS = {"num_warps": 1, "enable_fp_fusion": False}


def rotary_(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """apply_partial_rotary_ in one kernel: x (B, T, H, D) with unit stride over D, rotated in place
    on its first rotary_dim channels; cos / signed_sin (B, T, 1, rotary_dim) as the model makes them."""
    b, t, heads, dim = x.shape
    rotary = cos.shape[-1]
    if x.numel() == 0:
        return x
    if (x.dtype not in (torch.bfloat16, torch.float16) or x.stride(3) != 1 or cos.stride(3) != 1
            or signed_sin.stride() != cos.stride() or rotary & (rotary - 1) or rotary > dim):
        # fp32 (its sum could be contracted into an FMA here) and layouts the kernel does not index
        return apply_partial_rotary_(x, cos, signed_sin)
    _rotary_kernel[(b * t, heads)](x, cos, signed_sin, heads, x.stride(0), x.stride(1), x.stride(2),
                                   cos.stride(0), cos.stride(1), t, ROTARY=rotary, **LAUNCH_OPTIONS)
    return x


def use_triton_rotary(model: nn.Module) -> nn.Module:
    """Inference transform, in place: every attention layer on CUDA rotates q / k with `rotary_`
    (which leaves fp32 activations to the PyTorch ops). Anything else is left as it is."""
    return override_on_cuda(model, NemotronAttention, "rotate_", rotary_)
