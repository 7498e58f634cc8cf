from __future__ import annotations

import pytest
import torch

from nemotron.tokenizer import CHAT_STOP, render_chat
from nemotron.train.demo_corpus import CorpusConfig, chat_records, pretraining_documents
from nemotron.train.tokenizer_training import TokenizerTrainingConfig, train_tokenizer

SMALL_CORPUS = CorpusConfig(seed=0, num_stories=300, num_fact_documents=100, num_chats=200, num_validation=20)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine thread hand-offs dominate."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def documents() -> list[str]:
    return pretraining_documents(SMALL_CORPUS)


@pytest.fixture(scope="session")
def chats() -> list[dict]:
    return chat_records(SMALL_CORPUS)


@pytest.fixture(scope="session")
def tokenizer(documents, chats):
    rendered = [render_chat(c["messages"], add_generation_prompt=False) + CHAT_STOP for c in chats]
    return train_tokenizer(documents + rendered, TokenizerTrainingConfig(vocab_size=1024))
