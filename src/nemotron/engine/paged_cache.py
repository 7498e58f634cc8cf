"""The paged KV cache: one preallocated pool of slots per layer, addressed through block tables.

A step's tokens from all scheduled sequences are flattened into one (1, T) batch. `BatchLayout`
says which query rows belong to which sequence and which pool slots hold each sequence's context;
it is built once per step and shared by every layer. Decode rows attend for all sequences at once:
with the Triton kernel straight from the pool, or (PyTorch backend) with SDPA over the sequences'
contiguous lanes in the decode workspace (`decode_workspace.py`), falling back to a gather of their
blocks. In a step that also runs prompt chunks the one-token chunks come first (the model runner
orders them so) and still attend together, through the kernel or their lanes; the prompt chunks attend
per sequence with PyTorch SDPA.

The pool holds one extra scratch block after the real ones: padding rows of a CUDA-graph batch write
their keys there, so they never touch a sequence's blocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from nemotron.engine.decode_workspace import DecodeWorkspace, LanePlan
from nemotron.engine.sequence import Sequence
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import causal_attention

if TYPE_CHECKING:
    from nemotron.engine.mamba_state import MambaStatePool
    from nemotron.model.nemotron_h import MixFn

ATTENTION_BACKENDS = ("auto", "torch", "triton")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(slots=True)
class BatchLayout:
    slot_mapping: Tensor  # (T,) pool slot written by each new token
    block_tables: Tensor  # (B, W) block ids of each sequence, padded with 0
    context_lens: Tensor  # (B,) int32: cached + new tokens per sequence
    decode_rows: int  # the leading one-token chunks (all of them in a decode step), attended together
    query_lens: list[int] | None = None  # new tokens per sequence (prefill path only)
    context_lens_host: list[int] | None = None  # the same as context_lens, on the host (prefill path)
    lanes: LanePlan | None = None  # the first lanes.num_lanes rows decode from workspace lanes 0..n-1
    state_slots: list[int] | None = None  # hybrid models: each sequence's Mamba state slot (mamba_state.py)

    @property
    def all_decode(self) -> bool:
        return self.decode_rows == self.block_tables.shape[0]

    @classmethod
    def build(cls, block_tables: list[list[int]], starts: list[int], query_lens: list[int],
              positions: Tensor, block_size: int) -> BatchLayout:
        """positions (T,): the position of every new token, sequences concatenated in batch order."""
        device = positions.device
        context_lens = [s + n for s, n in zip(starts, query_lens)]
        width = max(len(t) for t in block_tables)
        tables = torch.tensor([t + [0] * (width - len(t)) for t in block_tables], dtype=torch.int32,
                              device=device)  # (B, W)
        # Slots worked out on the host: one tensor made, not eight ops per step (T is small when decoding).
        slots = [table[p // block_size] * block_size + p % block_size
                 for table, start, n in zip(block_tables, starts, query_lens) for p in range(start, start + n)]
        slot_mapping = torch.tensor(slots, dtype=torch.long, device=device)  # (T,)
        decode_rows = next((i for i, n in enumerate(query_lens) if n != 1), len(query_lens))
        return cls(slot_mapping, tables, torch.tensor(context_lens, dtype=torch.int32, device=device), decode_rows,
                   query_lens, context_lens)


class PagedKVCache:
    """Implements the model's AttentionCache for one step at a time (call `use(layout)` first)."""

    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device | str, attention_backend: str = "auto", decode_workspace: bool = True) -> None:
        if attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {attention_backend!r}")
        if attention_backend == "auto":
            on_gpu = torch.device(device).type == "cuda"
            attention_backend = "triton" if on_gpu and triton_available() else "torch"
        self.backend = attention_backend
        shape = (config.num_layers, (num_blocks + 1) * block_size, config.num_kv_heads, config.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.scratch_slot = num_blocks * block_size  # first slot of the scratch block
        self.layout: BatchLayout | None = None
        self.workspace: DecodeWorkspace | None = None
        self.states: MambaStatePool | None = None  # a hybrid model's Mamba states, set by the engine
        if self.backend == "torch" and decode_workspace:  # at most as much memory again as the pool
            self.workspace = DecodeWorkspace(config.num_layers, config.num_kv_heads, config.head_dim, dtype, device,
                                             block_size, max_bytes=2 * self.keys.numel() * self.keys.element_size())

    def plan_lanes(self, seqs: list[Sequence], contexts: list[int]) -> LanePlan | None:
        """Workspace lanes for this step's one-token rows (see DecodeWorkspace.plan); None without one."""
        if self.workspace is None:
            return None
        return self.workspace.plan(seqs, contexts, self.keys, self.values)

    @staticmethod
    def bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
        return 2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim * dtype.itemsize

    def use(self, layout: BatchLayout) -> None:
        self.layout = layout

    def mamba(self, state_index: int, mix: MixFn, xbc: Tensor, dt: Tensor) -> Tensor:
        """A hybrid model's Mamba layer over this step's batch, from and into the sequences' state slots."""
        return self.states.run(self.layout, state_index, mix, xbc, dt)

    def attend(self, layer_idx: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q (1, T, Hq, D), k/v (1, T, Hkv, D) of all sequences' new tokens -> (1, T, Hq, D)."""
        layout = self.layout
        first = 0 if layout.lanes is None else layout.lanes.num_lanes
        if first == q.shape[1]:  # every row decodes from its lane (the pool is written after the step)
            return self._decode_lanes(layer_idx, q, k, v, layout.lanes)
        keys, values = self.keys[layer_idx], self.values[layer_idx]  # (S, Hkv, D)
        outputs = []
        if self.backend == "triton":
            from nemotron.engine.triton_attention import paged_decode_attention, store_kv

            store_kv(keys, values, layout.slot_mapping, k[0], v[0])  # one kernel for both (no lanes here)
            first = layout.decode_rows
            if first:  # every one-token chunk in one launch, prompt chunks in the step or not
                out = paged_decode_attention(q[0, :first], keys, values, layout.block_tables[:first],
                                             layout.context_lens[:first], self.block_size)  # (B, Hq, D)
                if layout.all_decode:
                    return out[None]
                outputs.append(out[None])
        elif first < q.shape[1]:  # lane rows reach the pool after the step, all layers at once (store_lane_tokens)
            slots = layout.slot_mapping if first == 0 else layout.slot_mapping[first:]
            keys.index_copy_(0, slots, k[0, first:])
            values.index_copy_(0, slots, v[0, first:])
        if layout.lanes is not None:
            outputs.append(self._decode_lanes(layer_idx, q[:, :first], k[0, :first], v[0, :first], layout.lanes))
        # Whole blocks are gathered (B x W indices, not B x W x block_size): far fewer index ops.
        key_blocks = keys.view(-1, self.block_size, *keys.shape[1:])  # (N, bs, Hkv, D)
        value_blocks = values.view(-1, self.block_size, *values.shape[1:])
        if layout.all_decode:
            return self._decode(q, key_blocks, value_blocks, layout)
        start = first  # lane rows are whole one-token chunks, so chunk `first` starts at row `first`
        for b in range(first, len(layout.query_lens)):
            num_new, context = layout.query_lens[b], layout.context_lens_host[b]
            table = layout.block_tables[b, :-(-context // self.block_size)]
            k_seq = key_blocks[table].flatten(0, 1)[None, :context]  # (1, context, Hkv, D)
            v_seq = value_blocks[table].flatten(0, 1)[None, :context]
            outputs.append(causal_attention(q[:, start:start + num_new], k_seq, v_seq, past_len=context - num_new))
            start += num_new
        return torch.cat(outputs, dim=1)

    def store_lane_tokens(self) -> None:
        """Copy the step's lane rows' new keys and values from the lanes into the pool, every layer in
        one op each (the pool is the source of truth: prefix sharing, preemption, refilled lanes).
        Nothing reads those slots during the step: a decoding sequence's attention reads its lane."""
        layout = self.layout
        if layout is None or layout.lanes is None:
            return
        plan, dim = layout.lanes, self.keys.shape[-1]
        layers, n, kv_heads = self.keys.shape[0], plan.num_lanes, self.keys.shape[2]
        slots = layout.slot_mapping[:n]
        for pool, lanes in ((self.keys, self.workspace.keys), (self.values, self.workspace.values)):
            new = lanes.view(layers, -1, dim).index_select(1, plan.write_index)  # (layers, n * Hkv, D)
            pool.index_copy_(1, slots, new.view(layers, n, kv_heads, dim))

    def _decode_lanes(self, layer_idx: int, q: Tensor, k: Tensor, v: Tensor, plan: LanePlan) -> Tensor:
        """q (1, n, Hq, D), new k/v ([1,] n, Hkv, D) of rows in lane order -> (1, n, Hq, D)."""
        dim = q.shape[3]
        flat_keys, flat_values = self.workspace.flat[layer_idx]  # (L * Hkv * len, D) views of the layer's lanes
        flat_keys.index_copy_(0, plan.write_index, k.reshape(-1, dim))
        flat_values.index_copy_(0, plan.write_index, v.reshape(-1, dim))
        keys, values = plan.views[layer_idx]  # (n, Hkv, width, D)
        return decode_attention(q, keys, values, plan.mask)

    def _decode(self, q: Tensor, key_blocks: Tensor, value_blocks: Tensor, layout: BatchLayout) -> Tensor:
        k = key_blocks[layout.block_tables].flatten(1, 2).transpose(1, 2)  # (B, Hkv, W * bs, D)
        v = value_blocks[layout.block_tables].flatten(1, 2).transpose(1, 2)
        width = k.shape[2]
        mask = torch.arange(width, device=q.device)[None, :] < layout.context_lens[:, None]  # (B, W * bs)
        return decode_attention(q, k, v, mask[:, None, None, :])


SERIAL_DECODE_KEYS = 512  # CPU decode attention over at most this many keys (B x W) runs on one thread


class OneThread:
    """Runs a block on one intra-op thread (a no-op with one already). The CPU SDPA kernel opens ~9
    OpenMP parallel regions per call, for microseconds of work at batch 1; each costs a fork/join
    of the thread team, more than the second thread saves.

    torch.set_num_threads is process-global as well as per thread: a thread whose first torch work
    falls inside this window keeps one thread for good. Threads the engine starts (AsyncLLM's,
    RewardScorer's) call torch.get_num_threads() first thing, which fixes their count at start;
    a thread of your own that shares the process with a decoding engine should do the same."""

    __slots__ = ("threads",)

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        if self.threads > 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc) -> None:
        if self.threads > 1:
            torch.set_num_threads(self.threads)


def decode_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """One new token per sequence: q (1, B, Hq, D), k/v (B, Hkv, W, D), mask (B, 1, 1, W) -> (1, B, Hq, D).

    The Hq / Hkv query heads sharing a KV head go in as that head's rows (B, Hkv, G, D), so SDPA
    reads each key once for the whole group; with enable_gqa the CPU kernel reads it once per
    query head (1.3-2x slower at batch 16-32). Head h uses KV head h // G either way.
    """
    batch, heads, dim = q.shape[1], q.shape[2], q.shape[3]
    kv_heads = k.shape[1]
    # (1, B) merged: one op, not two. The group size is left to reshape (-1): in a CPU decode trace the
    # sizes are traced values, and `heads // kv_heads` would be two more ops a layer in every replay.
    rows = q.reshape(batch, kv_heads, -1, dim)
    cpu = q.device.type == "cpu"
    lone = cpu and heads == kv_heads
    if lone:
        # One query row per KV head (multi-head attention): the CPU kernel's one-row path sums in an
        # order that depends on the thread count (fp32), so a sequence's bits would depend on how many
        # threads its step gave attention (OneThread below; a CPU decode trace's replay). Two rows (the
        # same, not copied) take the multi-row path, whose sums do not; the second row's output is dropped.
        rows = rows.expand(batch, kv_heads, 2, dim)
    if cpu and batch * k.shape[2] <= SERIAL_DECODE_KEYS:
        with OneThread():
            out = F.scaled_dot_product_attention(rows, k, v, attn_mask=mask)  # (B, Hkv, G, D)
    else:
        out = F.scaled_dot_product_attention(rows, k, v, attn_mask=mask)
    return (out[:, :, :1] if lone else out).reshape(1, batch, heads, dim)
