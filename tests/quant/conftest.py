"""A small random model whose widths are multiples of 128 (int4 groups), saved with a tokenizer."""
from __future__ import annotations

from pathlib import Path

import pytest

from nemotron.checkpoint.hf import save_hf_dir
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import build_model, init_random_weights

QUANT_CONFIG = ModelConfig(vocab_size=320, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4,
                           num_kv_heads=2, head_dim=32, max_position_embeddings=128, torch_dtype="float32")


@pytest.fixture(scope="session")
def float_model_dir(tmp_path_factory, sp_tokenizer_file) -> Path:
    directory = tmp_path_factory.mktemp("float_model")
    model = build_model(QUANT_CONFIG)
    init_random_weights(model, seed=0, std=0.1)
    save_hf_dir(model.state_dict(), QUANT_CONFIG, directory)
    (directory / "tokenizer.model").write_bytes(sp_tokenizer_file.read_bytes())
    return directory
