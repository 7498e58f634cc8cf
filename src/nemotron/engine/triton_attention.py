"""Paged decode attention as a Triton kernel: one query token per sequence, keys and values read
straight from the block pool through the block table (no gather copy), online softmax.

Grid: one program per (sequence, KV head, context split); it serves that KV head's whole group of
query heads, so each K/V block is loaded once per group (GQA). A step of its loop gathers 64 keys
(32 in fp32) through the block table and takes both products on the matrix units (tl.dot), the
group's heads padded to 16 rows. The first version took one block (16 keys) a step and multiplied by
broadcasting in float32 registers: 253 registers a thread, two programs per multiprocessor, 16 KB
of K/V in flight on each, and on an H200 (gpu_suite.sh, profile-kernels) 64 sequences of 1,000
tokens took 419 µs a layer, 0.6 TB/s. Built for sm_90 this one takes 168 registers and reads 32 KB
a step (not yet timed on a GPU).

With one split a program walks the whole context and writes the output. A batch-1 step has only
(KV heads) such programs, each walking its blocks one dependent load after another: on an H200 the
8B shape's batch-1 step spent ~30 µs a layer in this kernel, for under 1 MB of K/V (gpu_suite.sh,
profile-engine). So small batches split each context into several parts (flash-decoding): every
program reduces its share of the blocks to a running max, sum and weighted value sum, and a second
small kernel merges the parts. The share is computed from the context length inside the kernel, so
one launch shape serves every length (CUDA graphs replay it unchanged), and the split count is a
run-time argument: a step whose table widened needs no new compilation. Rows with context length 0
(padding of a CUDA-graph batch bucket) produce zeros. Runs on GPUs, and on CPU under
TRITON_INTERPRET=1 for tests.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _paged_decode_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, block_tables_ptr, context_lens_ptr,
    part_max_ptr, part_sum_ptr, part_acc_ptr,
    scale, splits,
    stride_qb, stride_qh, stride_kslot, stride_kh, stride_ob, stride_oh, stride_bt,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCKS_PER_STEP: tl.constexpr, WRITE_PARTS: tl.constexpr, PRECISION: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    context_len = tl.load(context_lens_ptr + seq)

    rows = tl.arange(0, GROUP_PAD)  # the group's query heads, padded to a matrix-unit tile (16 rows)
    heads = kv_head * GROUP + rows
    head_ok = rows < GROUP
    dims = tl.arange(0, DIM_PAD)
    dim_ok = dims < HEAD_DIM
    q = tl.load(q_ptr + seq * stride_qb + heads[:, None] * stride_qh + dims[None, :],
                mask=head_ok[:, None] & dim_ok[None, :], other=0.0)  # (G, D), the model's dtype

    running_max = tl.full((GROUP_PAD,), float("-inf"), tl.float32)
    running_sum = tl.zeros((GROUP_PAD,), tl.float32)
    acc = tl.zeros((GROUP_PAD, DIM_PAD), tl.float32)
    TOKENS: tl.constexpr = BLOCK_SIZE * BLOCKS_PER_STEP
    offsets = tl.arange(0, TOKENS)
    num_blocks = tl.cdiv(context_len, BLOCK_SIZE)
    per_split = tl.cdiv(num_blocks, splits)
    first_block = split * per_split
    last_block = tl.minimum(first_block + per_split, num_blocks)
    for j in range(first_block, last_block, BLOCKS_PER_STEP):
        block_index = j + offsets // BLOCK_SIZE  # (TOKENS,): each token's entry of the block table
        block_ok = block_index < last_block
        blocks = tl.load(block_tables_ptr + seq * stride_bt + block_index, mask=block_ok, other=0)
        token_ok = block_ok & (block_index * BLOCK_SIZE + offsets % BLOCK_SIZE < context_len)
        slots = blocks.to(tl.int64) * BLOCK_SIZE + offsets % BLOCK_SIZE
        kv_offsets = slots[:, None] * stride_kslot + kv_head * stride_kh + dims[None, :]
        kv_mask = token_ok[:, None] & dim_ok[None, :]
        k = tl.load(k_ptr + kv_offsets, mask=kv_mask, other=0.0)  # (TOKENS, D)
        v = tl.load(v_ptr + kv_offsets, mask=kv_mask, other=0.0)
        scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # (G, TOKENS), float32
        scores = tl.where(token_ok[None, :], scores, float("-inf"))
        # Every step holds a valid token (block j's first), so the max is finite from the first step on.
        new_max = tl.maximum(running_max, tl.max(scores, axis=1))
        correction = tl.exp(running_max - new_max)
        p = tl.exp(scores - new_max[:, None])
        running_sum = running_sum * correction + tl.sum(p, axis=1)
        acc = acc * correction[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        running_max = new_max

    if not WRITE_PARTS:  # one split: this program saw the whole context
        out = acc / tl.where(running_sum > 0, running_sum, 1.0)[:, None]
        tl.store(out_ptr + seq * stride_ob + heads[:, None] * stride_oh + dims[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=head_ok[:, None] & dim_ok[None, :])
    else:  # partials, laid out (B, Hq, splits[, DIM_PAD]); a split with no blocks leaves max -inf, sum 0
        part = (seq * tl.num_programs(1) * GROUP + heads) * splits + split  # (G,)
        tl.store(part_max_ptr + part, running_max, mask=head_ok)
        tl.store(part_sum_ptr + part, running_sum, mask=head_ok)
        tl.store(part_acc_ptr + part[:, None] * DIM_PAD + dims[None, :], acc, mask=head_ok[:, None])


@triton.jit
def _merge_splits_kernel(part_max_ptr, part_sum_ptr, part_acc_ptr, out_ptr, stride_ob, stride_oh, splits,
                         SPLITS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                         DIM_PAD: tl.constexpr):
    """One program per (sequence, query head): the splits' partial softmax sums rescaled to one max."""
    seq = tl.program_id(0)
    head = tl.program_id(1)
    parts = tl.arange(0, SPLITS_PAD)
    split_ok = parts < splits
    dims = tl.arange(0, DIM_PAD)
    part = (seq * tl.num_programs(1) + head) * splits + parts  # (S,)
    maxima = tl.load(part_max_ptr + part, mask=split_ok, other=float("-inf"))
    sums = tl.load(part_sum_ptr + part, mask=split_ok, other=0.0)
    accs = tl.load(part_acc_ptr + part[:, None] * DIM_PAD + dims[None, :], mask=split_ok[:, None], other=0.0)
    top = tl.max(maxima, axis=0)
    top = tl.where(top == float("-inf"), 0.0, top)  # an empty context: every weight below is 0
    weights = tl.where(maxima == float("-inf"), 0.0, tl.exp(maxima - top))  # (S,)
    total = tl.sum(sums * weights, axis=0)
    out = tl.sum(accs * weights[:, None], axis=0) / tl.where(total > 0, total, 1.0)  # (D,)
    tl.store(out_ptr + seq * stride_ob + head * stride_oh + dims, out.to(out_ptr.dtype.element_ty),
             mask=dims < HEAD_DIM)


@triton.jit
def _store_kv_kernel(k_ptr, v_ptr, keys_ptr, values_ptr, slots_ptr, stride_kt, stride_vt,
                     ROW: tl.constexpr, ROW_PAD: tl.constexpr):
    """One new token: its key and value rows (KV heads x head_dim, contiguous) into the pool at its slot."""
    token = tl.program_id(0)
    slot = tl.load(slots_ptr + token).to(tl.int64)
    offsets = tl.arange(0, ROW_PAD)
    inside = offsets < ROW
    key = tl.load(k_ptr + token.to(tl.int64) * stride_kt + offsets, mask=inside)
    value = tl.load(v_ptr + token.to(tl.int64) * stride_vt + offsets, mask=inside)
    tl.store(keys_ptr + slot * ROW + offsets, key, mask=inside)
    tl.store(values_ptr + slot * ROW + offsets, value, mask=inside)


def store_kv(keys: Tensor, values: Tensor, slots: Tensor, k: Tensor, v: Tensor) -> None:
    """keys / values (S, Hkv, D) of one layer's pool; k / v (T, Hkv, D) of the new tokens, each token's
    row contiguous (strided views of the fused projection are fine); slots (T,): one kernel for what
    two `index_copy_` did. Padding rows of a CUDA-graph bucket all write the scratch slot."""
    tokens = k.shape[0]
    row = k.shape[1] * k.shape[2]
    if tokens == 0:
        return
    if (k.stride(2) != 1 or k.stride(1) != k.shape[2] or v.stride(2) != 1 or v.stride(1) != v.shape[2]
            or not keys.is_contiguous() or not values.is_contiguous()):
        keys.index_copy_(0, slots, k)
        values.index_copy_(0, slots, v)
        return
    _store_kv_kernel[(tokens,)](k, v, keys, values, slots, k.stride(0), v.stride(0), ROW=row,
                                ROW_PAD=triton.next_power_of_2(row), num_warps=4)


# Both products of a step are matrix-unit products (tl.dot), which need 16 rows, columns and depth:
# the group's query heads and the head dimension are padded to at least 16. A step reads
# TOKENS_PER_STEP keys of a 16-bit cache (blocks of the table gathered together), half as many in
# fp32 with twice the warps: built for sm_90, fp32 at 64 keys and 4 warps spilled 1.3 KB a thread.
MATRIX_TILE = 16
TOKENS_PER_STEP = 64


@functools.cache
def _processors(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (4 stand-ins elsewhere: the interpreter in tests)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


def decode_splits(batch: int, num_kv_heads: int, table_width: int, device: torch.device) -> int:
    """Context splits for a decode step: enough programs for ~8 per multiprocessor (a batch-1 step of the
    8B shape: 8 KV heads -> 132 splits wanted on an H200), never more than the table has blocks, and
    at most 64 partials to merge. Large batches fill the GPU as they are (1 split)."""
    wanted = triton.cdiv(8 * _processors(device), batch * num_kv_heads)
    return max(1, min(wanted, table_width, 64))


def paged_decode_attention(q: Tensor, keys: Tensor, values: Tensor, block_tables: Tensor,
                           context_lens: Tensor, block_size: int, splits: int | None = None) -> Tensor:
    """q (B, Hq, D); keys/values (slots, Hkv, D) of one layer; block_tables (B, W) int;
    context_lens (B,) int -> (B, Hq, D). `splits`: parts each context is cut into (default:
    decode_splits, from the batch and table width, both fixed for a CUDA-graph bucket)."""
    batch, num_heads, head_dim = q.shape
    num_kv_heads = keys.shape[1]
    group = num_heads // num_kv_heads
    splits = splits or decode_splits(batch, num_kv_heads, block_tables.shape[1], q.device)
    dim_pad = max(triton.next_power_of_2(head_dim), MATRIX_TILE)
    wide = q.dtype == torch.float32  # exact fp32 products ("ieee", not TF32) on smaller steps
    tokens_per_step = TOKENS_PER_STEP // 2 if wide else TOKENS_PER_STEP
    q = q.contiguous()
    out = torch.empty_like(q)
    if splits > 1:
        part_max = torch.empty(batch, num_heads, splits, dtype=torch.float32, device=q.device)
        part_sum = torch.empty_like(part_max)
        part_acc = torch.empty(batch, num_heads, splits, dim_pad, dtype=torch.float32, device=q.device)
    else:  # never written: the kernel stores the output directly
        part_max = part_sum = part_acc = out
    _paged_decode_kernel[(batch, num_kv_heads, splits)](
        q, keys, values, out, block_tables, context_lens, part_max, part_sum, part_acc, head_dim ** -0.5, splits,
        q.stride(0), q.stride(1), keys.stride(0), keys.stride(1), out.stride(0), out.stride(1),
        block_tables.stride(0),
        GROUP=group, GROUP_PAD=max(triton.next_power_of_2(group), MATRIX_TILE), HEAD_DIM=head_dim,
        DIM_PAD=dim_pad, BLOCK_SIZE=block_size, BLOCKS_PER_STEP=max(1, tokens_per_step // block_size),
        WRITE_PARTS=splits > 1, PRECISION="ieee" if wide else "tf32", num_warps=8 if wide else 4,
    )
    if splits > 1:
        _merge_splits_kernel[(batch, num_heads)](
            part_max, part_sum, part_acc, out, out.stride(0), out.stride(1), splits,
            SPLITS_PAD=triton.next_power_of_2(splits), HEAD_DIM=head_dim, DIM_PAD=dim_pad)
    return out
