"""The streaming API: concurrent requests, early exits, errors."""
from __future__ import annotations

import asyncio
import time

import pytest

from nemotron.checkpoint.load import load_model
from nemotron.engine.async_llm import AsyncLLM
from nemotron.engine.llm import LLM
from nemotron.engine.llm_engine import EngineConfig, LLMEngine, RequestError
from nemotron.engine.sampling import SamplingParams
from tests.engine.test_engine import prompts


@pytest.fixture()
def loaded(tiny_model_dir):
    return load_model(tiny_model_dir, dtype="float32")


def wait_until_idle(engine: LLMEngine, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.has_unfinished() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_concurrent_streams_equal_offline_batch(loaded):
    requests = prompts(24, seed=11)
    params = [SamplingParams(max_tokens=8 + i % 9, seed=i, top_k=40, ignore_eos=True) for i in range(24)]
    expected = LLM(loaded).generate(requests, params)
    llm = AsyncLLM(LLMEngine(loaded.model, loaded.tokenizer, EngineConfig(max_num_seqs=8)))

    async def collect(prompt, p):
        text, ids = "", []
        async for output in llm.generate(prompt, p):
            text += output.text
            ids += output.token_ids
        return text, ids

    async def main():
        return await asyncio.gather(*(collect(r, p) for r, p in zip(requests, params)))

    try:
        results = asyncio.run(main())
    finally:
        llm.close()
    assert results == [(r.outputs[0].text, r.outputs[0].token_ids) for r in expected]
    assert llm.engine.blocks.num_free_blocks == llm.engine.blocks.num_blocks


def test_leaving_a_stream_early_aborts_and_frees_blocks(loaded):
    engine = LLMEngine(loaded.model, loaded.tokenizer, EngineConfig())
    llm = AsyncLLM(engine)

    async def main():
        seen = 0
        async for _ in llm.generate(prompts(1, seed=12)[0], SamplingParams(max_tokens=200, ignore_eos=True)):
            seen += 1
            if seen == 3:
                break
        return seen

    try:
        assert asyncio.run(main()) == 3
        wait_until_idle(engine)
        assert engine.num_requests == 0
        assert engine.blocks.num_free_blocks == engine.blocks.num_blocks
    finally:
        llm.close()


def test_bad_request_raises_before_streaming(loaded):
    llm = AsyncLLM(LLMEngine(loaded.model, loaded.tokenizer, EngineConfig()))

    async def main():
        async for _ in llm.generate([], SamplingParams()):
            pass

    try:
        with pytest.raises(RequestError, match="empty"):
            asyncio.run(main())
    finally:
        llm.close()
