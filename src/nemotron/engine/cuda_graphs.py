"""Decode steps replayed from CUDA graphs, one graph per batch-size bucket.

A decode step of a small model on a big GPU is bound by kernel-launch overhead, not by the GPU;
replaying a captured graph launches the whole step at once. Inputs are copied into static buffers;
rows past the real batch are padding: they write their keys to the cache's scratch slot and have
context length 0, so the Triton decode kernel reads nothing for them. The captured forward includes
the LM head. All graphs share one memory pool (captured largest first).

With capture=False the same static-buffer forward runs eagerly: that is how the padding logic is
tested on machines without a GPU.
"""
from __future__ import annotations

import torch
from torch import Tensor

from nemotron.engine.paged_cache import BatchLayout, PagedKVCache
from nemotron.model.nemotron import NemotronForCausalLM


def batch_buckets(max_batch: int) -> list[int]:
    small = [b for b in (1, 2, 4, 8) if b < max_batch]
    return sorted(set(small + list(range(16, max_batch, 16)) + [max_batch]))


class DecodeGraphs:
    def __init__(self, model: NemotronForCausalLM, kv_cache: PagedKVCache, max_batch: int, max_blocks: int,
                 capture: bool = True) -> None:
        self.model = model
        self.kv_cache = kv_cache
        self.buckets = batch_buckets(max_batch)
        self.max_batch = max_batch
        self.max_blocks = max_blocks
        device = model.lm_head.weight.device
        # Token ids, positions and cache slots share one buffer: a step fills them with one copy.
        self.step_inputs = torch.zeros(3, max_batch, dtype=torch.long, device=device)
        self.input_ids, self.positions = self.step_inputs[0:1], self.step_inputs[1:2]  # (1, max_batch) each
        self.slot_mapping = self.step_inputs[2]
        self.slot_mapping.fill_(kv_cache.scratch_slot)
        self.block_tables = torch.zeros(max_batch, max_blocks, dtype=torch.int32, device=device)
        self.context_lens = torch.zeros(max_batch, dtype=torch.int32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, Tensor] = {}
        if capture:
            self._capture()

    def fits(self, batch: int, widest_table: int) -> bool:
        return batch <= self.max_batch and widest_table <= self.max_blocks

    def _forward(self, n: int) -> Tensor:
        layout = BatchLayout(self.slot_mapping[:n], self.block_tables[:n], self.context_lens[:n], decode_rows=n)
        self.kv_cache.use(layout)
        hidden = self.model.model(self.input_ids[:, :n], self.positions[:, :n], self.kv_cache)  # (1, n, H)
        return self.model.lm_head(hidden[0])  # (n, V)

    @torch.inference_mode()
    def _capture(self) -> None:
        pool = None
        for n in reversed(self.buckets):
            self._forward(n)  # warm-up: compiles the kernels, sets up cuBLAS workspaces
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[n] = self._forward(n)
            pool = graph.pool()
            self.graphs[n] = graph

    @torch.inference_mode()
    def run(self, token_ids: list[int], positions: list[int], block_tables: list[list[int]]) -> Tensor:
        """One decode step for len(token_ids) sequences -> logits (B, V)."""
        n = len(token_ids)
        bucket = next(b for b in self.buckets if b >= n)
        size = self.kv_cache.block_size
        slots = [table[p // size] * size + p % size for table, p in zip(block_tables, positions)]
        padding = bucket - n
        step_inputs = [token_ids + [0] * padding, positions + [0] * padding,
                       slots + [self.kv_cache.scratch_slot] * padding]
        self.step_inputs[:, :bucket].copy_(torch.tensor(step_inputs), non_blocking=True)
        self.context_lens[:bucket].copy_(torch.tensor([p + 1 for p in positions] + [0] * padding,
                                                      dtype=torch.int32), non_blocking=True)
        width = max(len(t) for t in block_tables)
        # One tensor from padded rows: a tensor per sequence cost ~3 us each on the host at batch 64.
        rows = [table + [0] * (width - len(table)) for table in block_tables] + [[0] * width] * padding
        self.block_tables[:bucket, :width].copy_(torch.tensor(rows, dtype=torch.int32), non_blocking=True)
        if bucket in self.graphs:
            self.graphs[bucket].replay()
            return self.outputs[bucket][:n]
        return self._forward(bucket)[:n]
