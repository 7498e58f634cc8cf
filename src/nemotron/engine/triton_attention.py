"""Paged decode attention as a Triton kernel: one query token per sequence, keys and values read
straight from the block pool through the block table (no gather copy), online softmax.

Grid: one program per (sequence, KV head); it serves that KV head's whole group of query heads, so
each K/V block is loaded once per group (GQA). Rows with context length 0 (padding of a CUDA-graph
batch bucket) produce zeros. Runs on GPUs, and on CPU under TRITON_INTERPRET=1 for tests.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _paged_decode_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, block_tables_ptr, context_lens_ptr,
    scale,
    stride_qb, stride_qh, stride_kslot, stride_kh, stride_ob, stride_oh, stride_bt,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    context_len = tl.load(context_lens_ptr + seq)

    heads = kv_head * GROUP + tl.arange(0, GROUP_PAD)  # query heads of this group
    head_ok = tl.arange(0, GROUP_PAD) < GROUP
    dims = tl.arange(0, DIM_PAD)
    dim_ok = dims < HEAD_DIM
    q = tl.load(q_ptr + seq * stride_qb + heads[:, None] * stride_qh + dims[None, :],
                mask=head_ok[:, None] & dim_ok[None, :], other=0.0).to(tl.float32)  # (G, D)

    running_max = tl.full((GROUP_PAD,), float("-inf"), tl.float32)
    running_sum = tl.zeros((GROUP_PAD,), tl.float32)
    acc = tl.zeros((GROUP_PAD, DIM_PAD), tl.float32)
    offsets = tl.arange(0, BLOCK_SIZE)
    num_blocks = tl.cdiv(context_len, BLOCK_SIZE)
    for j in range(0, num_blocks):
        block = tl.load(block_tables_ptr + seq * stride_bt + j)
        token_ok = j * BLOCK_SIZE + offsets < context_len
        slots = block * BLOCK_SIZE + offsets
        kv_offsets = slots[:, None] * stride_kslot + kv_head * stride_kh + dims[None, :]
        kv_mask = token_ok[:, None] & dim_ok[None, :]
        k = tl.load(k_ptr + kv_offsets, mask=kv_mask, other=0.0).to(tl.float32)  # (BS, D)
        v = tl.load(v_ptr + kv_offsets, mask=kv_mask, other=0.0).to(tl.float32)
        scores = tl.sum(q[:, None, :] * k[None, :, :], axis=2) * scale  # (G, BS)
        scores = tl.where(token_ok[None, :], scores, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(scores, axis=1))
        correction = tl.exp(running_max - new_max)
        p = tl.exp(scores - new_max[:, None])
        running_sum = running_sum * correction + tl.sum(p, axis=1)
        acc = acc * correction[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
        running_max = new_max

    out = acc / tl.where(running_sum > 0, running_sum, 1.0)[:, None]
    tl.store(out_ptr + seq * stride_ob + heads[:, None] * stride_oh + dims[None, :],
             out.to(out_ptr.dtype.element_ty), mask=head_ok[:, None] & dim_ok[None, :])


def paged_decode_attention(q: Tensor, keys: Tensor, values: Tensor, block_tables: Tensor,
                           context_lens: Tensor, block_size: int) -> Tensor:
    """q (B, Hq, D); keys/values (slots, Hkv, D) of one layer; block_tables (B, W) int;
    context_lens (B,) int -> (B, Hq, D)."""
    batch, num_heads, head_dim = q.shape
    num_kv_heads = keys.shape[1]
    group = num_heads // num_kv_heads
    q = q.contiguous()
    out = torch.empty_like(q)
    _paged_decode_kernel[(batch, num_kv_heads)](
        q, keys, values, out, block_tables, context_lens, head_dim ** -0.5,
        q.stride(0), q.stride(1), keys.stride(0), keys.stride(1), out.stride(0), out.stride(1),
        block_tables.stride(0),
        GROUP=group, GROUP_PAD=max(triton.next_power_of_2(group), 1), HEAD_DIM=head_dim,
        DIM_PAD=triton.next_power_of_2(head_dim), BLOCK_SIZE=block_size,
    )
    return out
