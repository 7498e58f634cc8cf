"""Tiny random `transformers` Nemotron models: the numerical reference for our implementation."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    rotary_fraction: float
    layers: int = 2
    ffn: int = 96
    vocab: int = 384


# The three axes the issue asks for: rotary fraction 0.5 / 1.0, GQA ratio 1 / > 1, head_dim != hidden / heads.
SHAPES = [
    Shape("gqa4_partial_rope_wide_heads", hidden=64, heads=8, kv_heads=2, head_dim=16, rotary_fraction=0.5),
    Shape("mha_full_rope", hidden=64, heads=4, kv_heads=4, head_dim=16, rotary_fraction=1.0),
    Shape("mha_partial_rope_narrow_heads", hidden=48, heads=6, kv_heads=6, head_dim=4, rotary_fraction=0.5, layers=3),
    Shape("gqa3_full_rope", hidden=72, heads=6, kv_heads=2, head_dim=12, rotary_fraction=1.0),
]


def make_hf_model(shape: Shape, seed: int = 0):
    """A transformers NemotronForCausalLM with random weights, norms included (a missing +1 would show)."""
    from transformers import NemotronConfig, NemotronForCausalLM

    torch.manual_seed(seed)
    config = NemotronConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.ffn,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim, partial_rotary_factor=shape.rotary_fraction, max_position_embeddings=256,
        bos_token_id=2, eos_token_id=3, pad_token_id=0,
    )
    model = NemotronForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0.0, 0.2)
            else:
                param.normal_(0.0, 0.08)
    return model
