"""Shared fixtures: a tiny SentencePiece tokenizer and a tiny random model saved as a HF directory."""
from __future__ import annotations

import dataclasses
import os
import random
import signal
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels run interpreted without a GPU. Set before anything imports triton (peft does, through
    # transformers): imported first, triton.language's own jit helpers stay compiled and every interpreted
    # kernel after that fails (tests/model/test_lora.py before tests/engine/test_triton_attention.py did).
    os.environ.setdefault("TRITON_INTERPRET", "1")

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # Server tests stop `nemotron serve` with SIGINT, as Ctrl-C does. A pytest started as a background job of
    # a non-interactive shell inherits SIGINT ignored, and so would every server it starts: they then exit 0
    # on it instead of 130. Handled signals are reset to the default in a child, ignored ones are not.
    signal.signal(signal.SIGINT, signal.default_int_handler)

from nemotron.checkpoint.hf import save_hf_dir
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import build_model, init_random_weights

WORDS = ("the a cat dog bird sun moon river tree house city road book light water stone green blue red "
         "small big old new happy quiet runs sees finds makes takes gives likes walks sings reads "
         "and but then when because near under over with from into today tomorrow morning night").split()


def kernel_test_model(device: str | torch.device, seed: int):
    """TINY_CONFIG in fp16 on `device`, weights ~N(0, 0.1) (activations large enough to exercise the
    kernels' rounding), and a batch of token ids: for tests that swap a kernel into a model."""
    model = build_model(TINY_CONFIG)
    torch.manual_seed(seed)
    for param in model.parameters():
        torch.nn.init.normal_(param, std=0.1)
    ids = torch.randint(4, TINY_CONFIG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    return model.to(device, torch.float16), ids.to(device)


def _sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "."
            for _ in range(count)]


@pytest.fixture(scope="session")
def sp_tokenizer_file(tmp_path_factory) -> Path:
    """A real SentencePiece model with the Nemotron special ids and <extra_id_N> pieces."""
    import sentencepiece as spm

    directory = tmp_path_factory.mktemp("sp")
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(_sentences(2000, 0)) + "\nPrice: 3 + 4 = 7! Über café? 😀\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(directory / "tokenizer"), vocab_size=320, model_type="bpe",
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, byte_fallback=True,
        user_defined_symbols=["<extra_id_0>", "<extra_id_1>", "<extra_id_2>"], minloglevel=2,
    )
    return directory / "tokenizer.model"


TINY_CONFIG = ModelConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                          num_kv_heads=2, head_dim=16, max_position_embeddings=256, torch_dtype="float32")


TINY_REWARD_CONFIG = dataclasses.replace(TINY_CONFIG, num_reward_attributes=9)


def write_model_dir(model: torch.nn.Module, config: ModelConfig, directory: Path, tokenizer_file: Path) -> Path:
    """`model` saved in the Hugging Face layout, with the tokenizer beside it."""
    save_hf_dir(model.state_dict(), config, directory)
    (directory / "tokenizer.model").write_bytes(tokenizer_file.read_bytes())
    return directory


def random_model_dir(tmp_path_factory, tokenizer_file: Path, config: ModelConfig, name: str, seed: int) -> Path:
    model = build_model(config)
    init_random_weights(model, seed=seed, std=0.1)
    return write_model_dir(model, config, tmp_path_factory.mktemp(name), tokenizer_file)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, sp_tokenizer_file) -> Path:
    """A random-weight model in the Hugging Face layout, with the tokenizer beside it."""
    torch.manual_seed(0)
    return random_model_dir(tmp_path_factory, sp_tokenizer_file, TINY_CONFIG, "tiny_model", seed=0)


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory, sp_tokenizer_file) -> Path:
    """A random-weight reward model (the 340B Reward's nine attributes) with the tokenizer."""
    return random_model_dir(tmp_path_factory, sp_tokenizer_file, TINY_REWARD_CONFIG, "tiny_reward", seed=1)
