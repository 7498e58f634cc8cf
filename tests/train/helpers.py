"""Tiny random models for the training tests."""
from __future__ import annotations

from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import NemotronForCausalLM, init_random_weights


def tiny_model(vocab_size: int, seed: int = 0, std: float = 0.02, context: int = 64) -> NemotronForCausalLM:
    config = ModelConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=8, max_position_embeddings=context, torch_dtype="float32")
    model = NemotronForCausalLM(config)
    init_random_weights(model, seed=seed, std=std)
    return model
