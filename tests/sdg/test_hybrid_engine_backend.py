"""`nemotron sdg`'s in-process engine backend on a Nemotron-H checkpoint, as on Nemotron-4."""
from __future__ import annotations

import asyncio

import pytest

from nemotron.engine.llm import LLM
from nemotron.engine.llm_engine import EngineConfig
from nemotron.engine.sampling import SamplingParams
from nemotron.sdg.backends.base import Sampling
from nemotron.sdg.backends.engine import EngineChat
from nemotron.tokenizer import CHAT_STOP_STRINGS, render_chat

pytest.importorskip("transformers")


def test_engine_chat_backend_runs_a_hybrid_model(tmp_path):
    from tests.engine.test_hybrid_engine import HYBRID_SHAPES, write_hybrid_dir

    write_hybrid_dir(tmp_path, HYBRID_SHAPES[0], seed=13)
    messages = [{"role": "user", "content": "Write a poem about the lazy dog."}]
    config = EngineConfig(num_blocks=64, max_num_seqs=4)

    async def ask():
        chat = EngineChat.load(tmp_path, config, dtype="float32", device="cpu")
        try:
            return await asyncio.gather(*(chat.chat(messages, Sampling(temperature=0, max_tokens=10, seed=i))
                                          for i in range(3)))
        finally:
            await chat.aclose()

    results = asyncio.run(ask())
    with LLM(str(tmp_path), config, dtype="float32", device="cpu") as llm:
        ids = llm.tokenizer.encode(render_chat(messages))
        expected = llm.generate([ids], SamplingParams(max_new_tokens=10, greedy=True,
                                                      stop_strings=list(CHAT_STOP_STRINGS)))[0]
    for result in results:
        assert result.prompt_tokens == len(ids) and result.completion_tokens == len(expected.token_ids)
        assert result.text == expected.text
