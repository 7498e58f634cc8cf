"""A bounded load test on loopback: 200 concurrent streaming requests against a tiny model."""
from __future__ import annotations

import asyncio
import random
import time

import openai

from tests.conftest import WORDS

NUM_REQUESTS = 200
TIME_LIMIT_S = 60  # generous for 2 busy cores; about 2 s when the machine is quiet


def make_requests(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    requests = []
    for i in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 20)))
        common = {"model": "tiny", "temperature": 0, "max_tokens": rng.randint(4, 24)}
        if i % 2:
            requests.append({"kind": "chat", **common, "messages": [{"role": "user", "content": text}]})
        else:
            requests.append({"kind": "completion", **common, "prompt": text, "extra_body": {"ignore_eos": True}})
    return requests


async def run_one(oai: openai.AsyncOpenAI, request: dict, stream: bool) -> tuple[str, str]:
    kind, args = request["kind"], {k: v for k, v in request.items() if k != "kind"}
    if kind == "chat":
        if not stream:
            choice = (await oai.chat.completions.create(**args)).choices[0]
            return choice.message.content, choice.finish_reason
        chunks = [c async for c in await oai.chat.completions.create(**args, stream=True)]
        return ("".join(c.choices[0].delta.content or "" for c in chunks), chunks[-1].choices[0].finish_reason)
    if not stream:
        choice = (await oai.completions.create(**args)).choices[0]
        return choice.text, choice.finish_reason
    chunks = [c async for c in await oai.completions.create(**args, stream=True)]
    return "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason


def test_concurrent_streams_equal_sequential_and_free_every_block(lm_server):
    requests = make_requests(NUM_REQUESTS)

    async def concurrently():
        oai = openai.AsyncOpenAI(base_url=f"{lm_server.url}/v1", api_key="unused", max_retries=0, timeout=TIME_LIMIT_S)
        try:
            return await asyncio.wait_for(asyncio.gather(*(run_one(oai, r, stream=True) for r in requests)),
                                          TIME_LIMIT_S)
        finally:
            await oai.close()

    async def one_at_a_time():
        oai = openai.AsyncOpenAI(base_url=f"{lm_server.url}/v1", api_key="unused", max_retries=0, timeout=60)
        try:
            return [await run_one(oai, r, stream=False) for r in requests]
        finally:
            await oai.close()

    start = time.monotonic()
    together = asyncio.run(concurrently())
    elapsed = time.monotonic() - start
    assert len(together) == NUM_REQUESTS and elapsed < TIME_LIMIT_S
    assert lm_server.all_kv_blocks_free()
    alone = asyncio.run(one_at_a_time())
    assert together == alone
    assert lm_server.all_kv_blocks_free()


def test_a_third_of_the_streams_disconnecting_is_no_error(lm_server):
    """Clients that leave mid-stream free their blocks and log nothing above debug (uvicorn's own
    logger does not propagate, so it is watched directly)."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    watched = [logging.getLogger(name) for name in ("", "uvicorn", "asyncio", "nemotron")]
    for logger in watched:
        logger.addHandler(handler)
    requests = [r for r in make_requests(60, seed=1)]

    async def one(oai: openai.AsyncOpenAI, i: int, request: dict) -> None:
        args = {k: v for k, v in request.items() if k != "kind"} | {"max_tokens": 24}
        create = oai.chat.completions.create if request["kind"] == "chat" else oai.completions.create
        stream = await create(**args, stream=True)
        async for _ in stream:
            if i % 3 == 0:
                await stream.close()  # gone after the first chunk
                break

    async def main() -> None:
        oai = openai.AsyncOpenAI(base_url=f"{lm_server.url}/v1", api_key="unused", max_retries=0, timeout=TIME_LIMIT_S)
        try:
            await asyncio.wait_for(asyncio.gather(*(one(oai, i, r) for i, r in enumerate(requests))), TIME_LIMIT_S)
        finally:
            await oai.close()

    try:
        asyncio.run(main())
        assert lm_server.all_kv_blocks_free()
    finally:
        for logger in watched:
            logger.removeHandler(handler)
    assert not [r for r in records if r.levelno >= logging.WARNING], [r.getMessage() for r in records]
