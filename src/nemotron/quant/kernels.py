"""Triton kernels for weight-only int8 / int4 matmuls with 16-bit activations (the CUDA decode path).

out (M, N) = x (M, K) · dequant(W)ᵀ, reading W as stored: int8 (N, K) with one float32 scale per row,
or int4 packed two per byte (N, K/2) with one float16 scale per group of 128 (layout: linear.py).
A program computes one (BLOCK_M, BLOCK_N) output tile while streaming K; weights are converted to
the activations' dtype in registers and fed to `tl.dot` (fp32 accumulation). One input row (batch-1
decode) takes its own kernels: int4 a GEMV (sums, no 16-row tile), measured faster there; int8 the GEMV
or the tile, autotuned per shape, as each won on some of the 8B shape's layers. Decode is bound by the bytes
of W read, so reading 1 or ½ byte per weight instead of 2 is the whole speed-up. Tile sizes are
autotuned per (N, K, BLOCK_M) on first use; the engine's CUDA-graph warm-up triggers that before
capture. Runs on CPU under TRITON_INTERPRET=1 (tests pass fixed tile sizes there).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _int8_tile(x_ptr, w_ptr, scale_ptr, out_ptr, M, N, K, stride_xm, stride_om, pid_m, pid_n,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Output tile (pid_m, pid_n): x rows against BLOCK_N weight rows through `tl.dot`."""
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    row_ok, col_ok = rows < M, cols < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = k0 + ks < K
        x = tl.load(x_ptr + rows[:, None] * stride_xm + (k0 + ks)[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)  # (BM, BK)
        w = tl.load(w_ptr + cols[None, :] * K + (k0 + ks)[:, None],
                    mask=col_ok[None, :] & k_ok[:, None], other=0)  # (BK, BN) int8
        acc += tl.dot(x, w.to(x.dtype))
    scale = tl.load(scale_ptr + cols, mask=col_ok, other=0.0)  # (BN,) float32
    tl.store(out_ptr + rows[:, None] * stride_om + cols[None, :], (acc * scale[None, :]).to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _int8_kernel(x_ptr, w_ptr, scale_ptr, out_ptr, M, N, K, stride_xm, stride_om,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    _int8_tile(x_ptr, w_ptr, scale_ptr, out_ptr, M, N, K, stride_xm, stride_om, tl.program_id(0), tl.program_id(1),
               BLOCK_M, BLOCK_N, BLOCK_K)


@triton.jit
def _int8_row_kernel(x_ptr, w_ptr, scale_ptr, out_ptr, N, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     GEMV: tl.constexpr):
    """One input row (batch-1 decode), either way, so the autotuner picks per shape: GEMV, each program
    BLOCK_N whole weight rows read along K and reduced with sums; or the 16-row `tl.dot` tile of which
    one row is real. On an H200 at the 8B shape each won somewhere (GPU us, gpu_suite.sh profile-kernels:
    GEMV / tile): qkv 9.3 / 11.6, o 7.0 / 8.0, down 26.5 / 35.5 (tuned 27.9), up 24.3 / 19.9, LM head
    317.8 / 254.9."""
    if GEMV:
        cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        ks = tl.arange(0, BLOCK_K)
        col_ok = cols < N
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k_ok = k0 + ks < K
            x = tl.load(x_ptr + k0 + ks, mask=k_ok, other=0.0).to(tl.float32)  # (BK,)
            w = tl.load(w_ptr + cols[:, None] * K + (k0 + ks)[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0)
            acc += w.to(tl.float32) * x[None, :]
        scale = tl.load(scale_ptr + cols, mask=col_ok, other=0.0)
        tl.store(out_ptr + cols, (tl.sum(acc, axis=1) * scale).to(out_ptr.dtype.element_ty), mask=col_ok)
    else:
        _int8_tile(x_ptr, w_ptr, scale_ptr, out_ptr, 1, N, K, K, N, 0, tl.program_id(0), 16, BLOCK_N, BLOCK_K)


@triton.jit
def _int4_kernel(x_ptr, w_ptr, scale_ptr, out_ptr, M, N, K, stride_xm, stride_om,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP: tl.constexpr):
    HALF: tl.constexpr = GROUP // 2
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    hs = tl.arange(0, HALF)
    row_ok, col_ok = rows < M, cols < N
    num_groups = K // GROUP
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for g in range(0, num_groups):
        x_lo = tl.load(x_ptr + rows[:, None] * stride_xm + (g * GROUP + hs)[None, :],
                       mask=row_ok[:, None], other=0.0)  # (BM, 64): the group's first half
        x_hi = tl.load(x_ptr + rows[:, None] * stride_xm + (g * GROUP + HALF + hs)[None, :],
                       mask=row_ok[:, None], other=0.0)  # (BM, 64): its second half
        packed = tl.load(w_ptr + cols[None, :] * (K // 2) + (g * HALF + hs)[:, None],
                         mask=col_ok[None, :], other=0)  # (64, BN) uint8
        lo = (packed & 0xF).to(tl.int8) - 8
        hi = (packed >> 4).to(tl.int8) - 8
        part = tl.dot(x_lo, lo.to(x_lo.dtype)) + tl.dot(x_hi, hi.to(x_hi.dtype))  # (BM, BN)
        scale = tl.load(scale_ptr + cols * num_groups + g, mask=col_ok, other=0.0).to(tl.float32)
        acc += part * scale[None, :]
    tl.store(out_ptr + rows[:, None] * stride_om + cols[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _int4_gemv_kernel(x_ptr, w_ptr, scale_ptr, out_ptr, N, K, BLOCK_N: tl.constexpr, GROUP: tl.constexpr,
                      STEP_GROUPS: tl.constexpr):
    """One input row (batch-1 decode): each program reads BLOCK_N whole rows of packed weights along K,
    STEP_GROUPS groups per iteration, and reduces with sums instead of a 16-row `tl.dot` tile of which
    one row is real. On an H200 at the 8B shape, one group per iteration took 62-79% of `_int4_kernel`'s
    GPU time on every layer but read only 0.7-1.7 TB/s (gpu_suite.sh, profile-kernels): a program had
    BLOCK_N x 64 bytes in flight per iteration. More groups per iteration put more loads in flight;
    the autotuner picks how many."""
    HALF: tl.constexpr = GROUP // 2
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    hs = tl.arange(0, HALF)
    steps = tl.arange(0, STEP_GROUPS)
    col_ok = cols < N
    num_groups = K // GROUP
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for g0 in range(0, num_groups, STEP_GROUPS):
        g = g0 + steps  # (S,): this iteration's groups; past the last one masked
        g_ok = g < num_groups
        # (S, HALF): the first and second halves of this iteration's groups
        x_lo = tl.load(x_ptr + g[:, None] * GROUP + hs[None, :], mask=g_ok[:, None], other=0.0).to(tl.float32)
        x_hi = tl.load(x_ptr + g[:, None] * GROUP + HALF + hs[None, :], mask=g_ok[:, None], other=0.0).to(tl.float32)
        offsets = cols[:, None, None] * (K // 2) + (g[:, None] * HALF + hs[None, :])[None, :, :]  # (BN, S, HALF)
        packed = tl.load(w_ptr + offsets, mask=col_ok[:, None, None] & g_ok[None, :, None], other=0)
        lo = ((packed & 0xF).to(tl.int8) - 8).to(tl.float32)
        hi = ((packed >> 4).to(tl.int8) - 8).to(tl.float32)
        part = tl.sum(lo * x_lo[None, :, :] + hi * x_hi[None, :, :], axis=2)  # (BN, S)
        scale = tl.load(scale_ptr + cols[:, None] * num_groups + g[None, :], mask=col_ok[:, None] & g_ok[None, :],
                        other=0.0).to(tl.float32)  # (BN, S)
        acc += tl.sum(part * scale, axis=1)
    tl.store(out_ptr + cols, acc.to(out_ptr.dtype.element_ty), mask=col_ok)


_WARPS_STAGES = ((4, 3), (4, 4), (8, 4))
_int8_tuned = triton.autotune(
    [triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
     for n in (32, 64, 128) for k in (128, 256) for w, s in _WARPS_STAGES],
    key=["N", "K", "BLOCK_M"])(_int8_kernel)
_int8_row_tuned = triton.autotune(
    [triton.Config({"BLOCK_N": n, "BLOCK_K": k, "GEMV": 1}, num_warps=w, num_stages=3)
     for n in (4, 8, 16) for k in (512, 1024) for w in (4, 8)]
    + [triton.Config({"BLOCK_N": n, "BLOCK_K": 256, "GEMV": 0}, num_warps=4, num_stages=s)
       for n in (32, 64) for s in (3, 4)],
    key=["N", "K"])(_int8_row_kernel)
_int4_tuned = triton.autotune(
    [triton.Config({"BLOCK_N": n}, num_warps=w, num_stages=s) for n in (32, 64, 128) for w, s in _WARPS_STAGES],
    key=["N", "K", "BLOCK_M"])(_int4_kernel)

# BLOCK_N x STEP_GROUPS at most 64: (BN, S, 64) bytes unpacked to two fp32 tiles stay in registers;
# 8 warps for the larger tiles. Nine configs (the GPU's first call to each shape tries them all).
_int4_gemv_tuned = triton.autotune(
    [triton.Config({"BLOCK_N": n, "STEP_GROUPS": g}, num_warps=4 if n * g <= 32 else 8, num_stages=3)
     for n in (8, 16, 32) for g in (1, 2, 4, 8) if n * g <= 64],
    key=["N", "K"])(_int4_gemv_kernel)


def int8_matmul(x: Tensor, weight: Tensor, scale: Tensor, tiles: dict[str, int] | None = None) -> Tensor:
    """x (..., K) 16-bit, weight (N, K) int8, scale (N,) float32 -> (..., N). `tiles`: fixed BLOCK_N /
    BLOCK_K (and for one row GEMV, default 0) instead of autotuning."""
    if x.numel() == x.shape[-1]:  # one row: the GEMV or the tile, whichever the autotuner found faster
        kernel = _int8_row_kernel if tiles else _int8_row_tuned
        n, k = weight.shape
        out = torch.empty(n, dtype=x.dtype, device=x.device)
        grid = lambda cfg: (triton.cdiv(n, cfg["BLOCK_N"]),)  # noqa: E731
        fixed = ({"BLOCK_N": tiles["BLOCK_N"], "BLOCK_K": tiles["BLOCK_K"], "GEMV": tiles.get("GEMV", 0)}
                 if tiles else {})
        kernel[grid](x.reshape(k).contiguous(), weight, scale, out, n, k, **fixed)
        return out.reshape(*x.shape[:-1], n)
    kernel = _int8_kernel if tiles else _int8_tuned
    return _launch(kernel, x, weight, scale, weight.shape[0], tiles or {})


def int4_matmul(x: Tensor, packed: Tensor, scale: Tensor, tiles: dict[str, int] | None = None) -> Tensor:
    """x (..., K) 16-bit, packed (N, K/2) uint8, scale (N, K/128) float16 -> (..., N). `tiles`: fixed
    BLOCK_N (and for one row STEP_GROUPS, default 1) instead of autotuning."""
    group = 2 * packed.shape[1] // scale.shape[1]
    if x.numel() == x.shape[-1]:  # one row: the GEMV kernel
        kernel = _int4_gemv_kernel if tiles else _int4_gemv_tuned
        n, k = packed.shape[0], x.shape[-1]
        out = torch.empty(n, dtype=x.dtype, device=x.device)
        grid = lambda cfg: (triton.cdiv(n, cfg["BLOCK_N"]),)  # noqa: E731
        fixed = {"BLOCK_N": tiles["BLOCK_N"], "STEP_GROUPS": tiles.get("STEP_GROUPS", 1)} if tiles else {}
        kernel[grid](x.reshape(k).contiguous(), packed, scale, out, n, k, GROUP=group, **fixed)
        return out.reshape(*x.shape[:-1], n)
    kernel = _int4_kernel if tiles else _int4_tuned
    return _launch(kernel, x, packed, scale, packed.shape[0], {**(tiles or {}), "GROUP": group})


def _launch(kernel, x: Tensor, weight: Tensor, scale: Tensor, n: int, meta: dict[str, int]) -> Tensor:
    k = x.shape[-1]
    rows = x.reshape(-1, k).contiguous()  # (M, K)
    m = rows.shape[0]
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    block_m = 16 if m <= 16 else 64  # tl.dot's smallest tile is 16; decode batches are small
    grid = lambda cfg: (triton.cdiv(m, cfg["BLOCK_M"]), triton.cdiv(n, cfg["BLOCK_N"]))  # noqa: E731
    kernel[grid](rows, weight, scale, out, m, n, k, rows.stride(0), out.stride(0), BLOCK_M=block_m, **meta)
    return out.reshape(*x.shape[:-1], n)
