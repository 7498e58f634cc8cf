"""A contiguous KV cache: one preallocated (layers, batch, max_len, kv_heads, head_dim) buffer.

The reference decoder for single prompts (CLI, tests). Rows share one length, so a batch must hold
prompts of equal length. The serving engine uses a paged cache behind the same `attend` interface.
"""
from __future__ import annotations

import torch
from torch import Tensor

from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import causal_attention


class ContiguousKVCache:
    def __init__(self, config: ModelConfig, batch_size: int, max_len: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        if max_len > config.max_position_embeddings:  # the model reads rotary rows of its context only
            raise ValueError(f"KV cache of {max_len} tokens; the model's context is {config.max_position_embeddings}")
        shape = (config.num_layers, batch_size, max_len, config.num_kv_heads, config.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0  # tokens stored so far; advanced by the caller after each forward

    def attend(self, layer_idx: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        start, end = self.length, self.length + q.shape[1]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} tokens; {end} were asked for")
        self.keys[layer_idx, :, start:end] = k
        self.values[layer_idx, :, start:end] = v
        return causal_attention(q, self.keys[layer_idx, :, :end], self.values[layer_idx, :, :end], past_len=start)

    def advance(self, num_tokens: int) -> None:
        self.length += num_tokens

    def positions(self, num_tokens: int, batch_size: int) -> Tensor:
        """Positions (B, T) of the next num_tokens tokens."""
        row = torch.arange(self.length, self.length + num_tokens, device=self.keys.device)
        return row.expand(batch_size, num_tokens)
