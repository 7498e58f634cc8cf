"""The paged KV cache: one preallocated pool of slots per layer, addressed through block tables.

A step's tokens from all scheduled sequences are flattened into one (1, T) batch. `BatchLayout`
says which query rows belong to which sequence and which pool slots hold each sequence's context;
it is built once per step and shared by every layer. All-decode steps (the common case) attend
for every sequence at once over a padded gather; steps with prefill chunks attend per sequence.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import causal_attention


@dataclass(slots=True)
class BatchLayout:
    query_lens: list[int]  # new tokens per sequence, in batch order
    context_lens: list[int]  # cached + new tokens per sequence
    slot_mapping: Tensor  # (T,) pool slot written by each new token
    context_slots: Tensor  # (B, max_context) pool slots of each sequence's context, padded with 0
    context_mask: Tensor  # (B, max_context) True where a slot is real

    @property
    def all_decode(self) -> bool:
        return all(n == 1 for n in self.query_lens)

    @classmethod
    def build(cls, block_tables: list[list[int]], starts: list[int], query_lens: list[int],
              block_size: int, device: torch.device) -> BatchLayout:
        context_lens = [s + n for s, n in zip(starts, query_lens)]
        max_context = max(context_lens)
        offsets = torch.arange(max_context)
        rows = []
        for table in block_tables:
            blocks = torch.tensor(table, dtype=torch.long)
            index = (offsets // block_size).clamp(max=len(table) - 1)
            rows.append(blocks[index] * block_size + offsets % block_size)
        context_slots = torch.stack(rows)  # (B, max_context)
        lens = torch.tensor(context_lens)
        context_mask = offsets[None, :] < lens[:, None]
        slot_mapping = torch.cat([context_slots[b, s:s + n] for b, (s, n) in enumerate(zip(starts, query_lens))])
        return cls(query_lens, context_lens, slot_mapping.to(device), context_slots.to(device),
                   context_mask.to(device))


class PagedKVCache:
    """Implements the model's AttentionCache for one step at a time (call `use(layout)` first)."""

    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int,
                 dtype: torch.dtype, device: torch.device | str) -> None:
        shape = (config.num_layers, num_blocks * block_size, config.num_kv_heads, config.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.block_size = block_size
        self.layout: BatchLayout | None = None

    @staticmethod
    def bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
        return 2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim * dtype.itemsize

    def use(self, layout: BatchLayout) -> None:
        self.layout = layout

    def attend(self, layer_idx: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q (1, T, Hq, D), k/v (1, T, Hkv, D) of all sequences' new tokens -> (1, T, Hq, D)."""
        layout = self.layout
        keys, values = self.keys[layer_idx], self.values[layer_idx]  # (S, Hkv, D)
        keys.index_copy_(0, layout.slot_mapping, k[0])
        values.index_copy_(0, layout.slot_mapping, v[0])
        if layout.all_decode:
            return self._decode(q, keys, values, layout)
        outputs, start = [], 0
        for b, (num_new, context) in enumerate(zip(layout.query_lens, layout.context_lens)):
            slots = layout.context_slots[b, :context]
            out = causal_attention(q[:, start:start + num_new], keys[slots][None], values[slots][None],
                                   past_len=context - num_new)
            outputs.append(out)
            start += num_new
        return torch.cat(outputs, dim=1)

    @staticmethod
    def _decode(q: Tensor, keys: Tensor, values: Tensor, layout: BatchLayout) -> Tensor:
        batch = q.shape[1]
        q = q[0].unsqueeze(2)  # (B, Hq, 1, D)
        k = keys[layout.context_slots].transpose(1, 2)  # (B, Hkv, L, D)
        v = values[layout.context_slots].transpose(1, 2)
        mask = layout.context_mask[:, None, None, :]  # (B, 1, 1, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)  # (B, Hq, 1, D)
        return out.transpose(1, 2).reshape(1, batch, out.shape[1], out.shape[3])
