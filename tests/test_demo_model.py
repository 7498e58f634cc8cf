"""The shipped demo model (src/nemotron/assets/demo): loads, writes English, chats in the Nemotron format."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from nemotron.checkpoint.load import load_model
from nemotron.engine.generate import generate
from nemotron.engine.sampling import SamplingParams
from nemotron.tokenizer import CHAT_STOP, render_chat
from nemotron.train.demo_corpus import CorpusConfig, pretraining_documents

DEMO = Path(__file__).resolve().parents[1] / "src" / "nemotron" / "assets" / "demo"
STORY_OPENING = "Once upon a time, there was a little boy named Tom. He loved to"

pytestmark = pytest.mark.skipif(not (DEMO / "model.safetensors").is_file(), reason="demo model not built")


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO, dtype="float32")


def greedy(loaded, prompt_ids: list[int], steps: int, stop_id: int | None = None) -> list[int]:
    """Greedy token ids through the reference decoder; stop_id (if reached) is the last one."""
    params = SamplingParams(max_tokens=steps, temperature=0, ignore_eos=True,
                            stop_token_ids=[] if stop_id is None else [stop_id])
    return generate(loaded.model, loaded.tokenizer, prompt_ids, params).token_ids


def test_demo_model_is_small_float32_nemotron_with_gqa_and_partial_rotary(demo):
    c = demo.config
    assert c.num_kv_heads < c.num_heads and c.rotary_fraction == 0.5
    assert 1e6 < c.num_parameters() < 5e6
    assert (DEMO / "model.safetensors").stat().st_size <= 20e6
    assert next(demo.model.parameters()).dtype == torch.float32
    assert demo.tokenizer is not None and demo.tokenizer.vocab_size == c.vocab_size
    assert (DEMO / "README.md").is_file()


def test_story_continuation_is_plain_english(demo):
    tokenizer = demo.tokenizer
    text = tokenizer.decode(greedy(demo, tokenizer.encode(STORY_OPENING), 80))
    words = re.findall(r"[A-Za-z']+", text)
    assert len(words) >= 30
    corpus = pretraining_documents(CorpusConfig(num_stories=3000, num_fact_documents=500, num_chats=0))
    vocabulary = {w.lower() for doc in corpus for w in re.findall(r"[A-Za-z']+", doc)}
    known = sum(w.lower() in vocabulary for w in words)
    assert known / len(words) > 0.7, text
    assert len(set(words)) > 15, text  # not one phrase over and over
    sentences = [s for s in re.split(r"[.!?]", text) if s.strip()]
    assert len(sentences) >= 3 and len(set(sentences)) >= 3, text


def test_chat_reply_ends_with_the_turn_token(demo):
    tokenizer = demo.tokenizer
    stop = tokenizer.token_to_id(CHAT_STOP)
    prompt = render_chat([{"role": "user", "content": "What is the capital of France?"}])
    reply = greedy(demo, tokenizer.encode(prompt), 60, stop_id=stop)
    assert reply[-1] == stop, tokenizer.decode(reply)
    assert tokenizer.decode(reply[:-1]).strip() == "The capital of France is Paris."


def test_chat_story_request_stops_within_budget(demo):
    tokenizer = demo.tokenizer
    stop = tokenizer.token_to_id(CHAT_STOP)
    prompt = render_chat([{"role": "user", "content": "Tell me a short story about a cat."}])
    reply = greedy(demo, tokenizer.encode(prompt), 400, stop_id=stop)
    assert reply[-1] == stop, tokenizer.decode(reply)
    assert len(re.findall(r"[A-Za-z]+", tokenizer.decode(reply))) >= 30

