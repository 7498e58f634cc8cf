"""A small random model whose widths are multiples of 128 (int4 groups), saved with a tokenizer."""
from __future__ import annotations

from pathlib import Path

import pytest

from nemotron.model.config import ModelConfig
from tests.conftest import random_model_dir

QUANT_CONFIG = ModelConfig(vocab_size=320, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4,
                           num_kv_heads=2, head_dim=32, max_position_embeddings=128, torch_dtype="float32")


@pytest.fixture(scope="session")
def float_model_dir(tmp_path_factory, sp_tokenizer_file) -> Path:
    return random_model_dir(tmp_path_factory, sp_tokenizer_file, QUANT_CONFIG, "float_model", seed=0)
