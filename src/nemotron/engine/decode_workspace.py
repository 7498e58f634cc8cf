"""Contiguous K/V lanes for decoding with PyTorch attention (the CPU path).

Reading a sequence's context out of the paged pool means gathering its blocks, and without a
paged-attention kernel that gather runs in every layer of every step: at batch 32 it cost more
than the attention itself. Here each decoding sequence owns a *lane*: a contiguous copy of its
keys and values, head-major (Hkv, length, D) as SDPA reads them best. A lane is filled from the
pool once, when its sequence starts decoding (or after it was dropped), and from then on each step
appends the new token to the lane, layer by layer, and once the step's layers have run to the pool
(the source of truth, for prefix sharing and preemption), every layer in one op. Lanes are kept dense: the step's decoding sequences occupy lanes 0..B-1, and the runner
orders its decode rows by lane, so attention runs on a plain view of the first B lanes.

Memory: lanes x longest context, bounded by `max_bytes`; a step that would need more falls back
to the gather path.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nemotron.engine.sequence import Sequence


def context_slots(block_table: list[int], n: int, block_size: int, device: torch.device | str = "cpu") -> Tensor:
    """(n,) pool slots holding tokens 0..n-1 of the sequence with this block table."""
    blocks = torch.tensor(block_table[:-(-n // block_size)], device=device)
    return (blocks[:, None] * block_size + torch.arange(block_size, device=device)).flatten()[:n]


@dataclass(slots=True)
class LanePlan:
    """One step's decode rows, in lane order (row i uses lane i)."""

    num_lanes: int
    width: int  # keys attended per row: the longest context rounded up to whole blocks
    write_index: Tensor  # (B * Hkv,) flat row of each new (lane, head) key in a layer's lane tensor
    mask: Tensor  # (B, 1, 1, width) additive, in the lanes' dtype: 0 for the keys each row sees, -inf elsewhere
    views: list[tuple[Tensor, Tensor]]  # per layer: keys and values of lanes 0..B-1 up to width, (B, Hkv, width, D)


class DecodeWorkspace:
    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str, block_size: int, max_bytes: int) -> None:
        self.num_layers, self.num_kv_heads, self.head_dim = num_layers, num_kv_heads, head_dim
        self.dtype, self.device, self.block_size, self.max_bytes = dtype, torch.device(device), block_size, max_bytes
        self.keys: Tensor | None = None  # (layers, lanes, Hkv, length, D)
        self.values: Tensor | None = None
        self.flat: list[tuple[Tensor, Tensor]] = []  # per layer: its keys and values as (lanes * Hkv * length, D)
        self.edge: Tensor | None = None  # (2 * length,): length zeros, then length -inf: the masks' rows
        self._last_views: tuple[tuple[int, int], list[tuple[Tensor, Tensor]]] = ((0, 0), [])  # `_views`' last
        self.lane_of: dict[Sequence, int] = {}
        self.lane_len: list[int] = []  # valid tokens mirrored in each lane

    @property
    def capacity(self) -> tuple[int, int]:
        return (0, 0) if self.keys is None else (self.keys.shape[1], self.keys.shape[3])

    def _bytes(self, lanes: int, length: int) -> int:
        return 2 * self.num_layers * lanes * self.num_kv_heads * length * self.head_dim * self.dtype.itemsize

    def release_all(self) -> None:
        self.lane_of.clear()
        self.lane_len = [0] * len(self.lane_len)

    def plan(self, seqs: list[Sequence], contexts: list[int], pool_keys: Tensor, pool_values: Tensor) -> LanePlan | None:
        """Give each decoding sequence (one new token, `contexts[i]` keys including it) a lane in
        0..B-1, mirroring tokens 0..context-2 from the pool (layers, slots, Hkv, D); None when the
        lanes would not fit in max_bytes. Sequences not in `seqs` lose their lanes."""
        batch = len(seqs)
        wanted = set(seqs)
        for seq in [s for s in self.lane_of if s not in wanted]:
            self.lane_len[self.lane_of.pop(seq)] = 0
        if not seqs:
            return None
        longest = max(contexts)
        if not self._ensure_capacity(batch, longest):
            self.release_all()
            return None
        self._compact(batch)
        free = iter(sorted(set(range(batch)) - set(self.lane_of.values())))
        fills: list[tuple[int, Sequence, int]] = []
        for seq, context in zip(seqs, contexts):
            lane = self.lane_of.get(seq)
            if lane is None:
                lane = self.lane_of[seq] = next(free)
                self.lane_len[lane] = -1
            if self.lane_len[lane] != context - 1:  # new, or its mirror is stale (e.g. recomputed)
                fills.append((lane, seq, context - 1))
            self.lane_len[lane] = context
        if fills:
            self._fill(fills, pool_keys, pool_values)
        lane_contexts = [0] * batch  # rows run in lane order: row i is lane i
        for seq, context in zip(seqs, contexts):
            lane_contexts[self.lane_of[seq]] = context
        length = self.keys.shape[3]
        # One tensor for both index lists (each torch.tensor call costs microseconds on a batch-1 step):
        # the rows the new keys go to, then where each lane's mask row starts in `self.edge`.
        indices = torch.tensor([(lane * self.num_kv_heads + h) * length + context - 1
                                for lane, context in enumerate(lane_contexts) for h in range(self.num_kv_heads)]
                               + [length - context for context in lane_contexts], device=self.device)
        rows, starts = indices[:-batch], indices[-batch:]
        # Keys padded to whole blocks and masked, exactly as the gather path sees them: SDPA then
        # sums in the same order whatever else is in the batch, so a request's tokens do not
        # depend on its neighbours (nor on which path served the step).
        width = -(-longest // self.block_size) * self.block_size
        # Additive, as SDPA turns a boolean mask into (0, -inf) in the query's dtype on every call:
        # made once per step here instead of once per layer, the same numbers. Row i is the slice of
        # `edge` (length zeros, then length -inf) starting `length - context_i` in: one gather.
        mask = self.edge.unfold(0, width, 1)[starts][:, None, None, :]  # (B, 1, 1, width)
        return LanePlan(batch, width, rows, mask, self._views(batch, width))

    def _views(self, lanes: int, width: int) -> list[tuple[Tensor, Tensor]]:
        """Every layer's lanes 0..lanes-1 up to width, made once per (lanes, width) and buffer: the width
        grows a block at a time, so a decoding batch reuses them for block_size steps (2 ops a layer less)."""
        if self._last_views[0] != (lanes, width):  # only the last: a batch keeps its (lanes, width) for a block
            self._last_views = ((lanes, width), [(k[:lanes, :, :width], v[:lanes, :, :width])
                                                 for k, v in zip(self.keys, self.values)])
        return self._last_views[1]

    def lane(self, seq: Sequence) -> int:
        return self.lane_of[seq]

    def _ensure_capacity(self, lanes: int, length: int) -> bool:
        have_lanes, have_length = self.capacity
        if lanes <= have_lanes and length <= have_length:
            return True

        def grown(need: int, have: int, step: int) -> tuple[int, int]:
            """(generous, minimal) sizes: half as much again as before, so reallocation (a copy of
            every lane) stays rare; or just what is needed."""
            minimal = max(-(-need // step) * step, have)
            return (max(minimal, -(-(have + have // 2) // step) * step) if need > have else minimal), minimal

        lane_sizes, length_sizes = grown(lanes, have_lanes, 1), grown(length, have_length, self.block_size)
        for new_lanes, new_length in zip(lane_sizes, length_sizes):
            if self._bytes(new_lanes, new_length) <= self.max_bytes:
                break
        else:
            return False
        shape = (self.num_layers, new_lanes, self.num_kv_heads, new_length, self.head_dim)
        keys = torch.zeros(shape, dtype=self.dtype, device=self.device)
        values = torch.zeros(shape, dtype=self.dtype, device=self.device)
        if self.keys is not None:
            keys[:, :have_lanes, :, :have_length] = self.keys
            values[:, :have_lanes, :, :have_length] = self.values
        self.keys, self.values = keys, values
        self._last_views = ((0, 0), [])  # views of the old buffers go with them
        self.edge = torch.cat([torch.zeros(new_length, dtype=self.dtype, device=self.device),
                               torch.full((new_length,), float("-inf"), dtype=self.dtype, device=self.device)])
        self.flat = [(k.view(-1, self.head_dim), v.view(-1, self.head_dim)) for k, v in zip(keys, values)]
        self.lane_len += [0] * (new_lanes - len(self.lane_len))
        return True

    def _compact(self, batch: int) -> None:
        """Move sequences holding lanes >= batch into free lanes below it."""
        used = set(self.lane_of.values())
        holes = [lane for lane in range(batch) if lane not in used]
        for seq, lane in list(self.lane_of.items()):
            if lane >= batch:
                target = holes.pop()
                n = self.lane_len[lane]
                self.keys[:, target, :, :n] = self.keys[:, lane, :, :n]
                self.values[:, target, :, :n] = self.values[:, lane, :, :n]
                self.lane_of[seq], self.lane_len[target], self.lane_len[lane] = target, n, 0

    def _fill(self, fills: list[tuple[int, Sequence, int]], pool_keys: Tensor, pool_values: Tensor) -> None:
        """Copy tokens 0..n-1 of each sequence from the pool into its lane (all layers at once)."""
        for lane, seq, n in fills:
            if n == 0:
                continue
            slots = context_slots(seq.block_table, n, self.block_size, self.device)
            self.keys[:, lane, :, :n] = pool_keys.index_select(1, slots).transpose(1, 2)
            self.values[:, lane, :, :n] = pool_values.index_select(1, slots).transpose(1, 2)
