"""Reward scoring through chat completions, read the way NeMo Curator's client reads it."""
from __future__ import annotations

import asyncio

import openai
import pytest
import requests
import torch

from nemotron.checkpoint.load import load_model
from nemotron.model.config import REWARD_ATTRIBUTES
from nemotron.tokenizer import render_reward_prompt

# Short: the tiny tokenizer spends most of the 256-token context on the default system prompt.
CONVERSATION = [{"role": "user", "content": "Paris: what to see?"}, {"role": "assistant", "content": "The Louvre."}]


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@torch.no_grad()
def reference_scores(model_dir, messages) -> dict[str, float]:
    loaded = load_model(model_dir, dtype="float32")
    ids = loaded.tokenizer.encode(render_reward_prompt(messages))
    scores = loaded.model(torch.tensor([ids]))[0].tolist()
    return dict(list(zip(REWARD_ATTRIBUTES, scores))[4:])


def test_scores_in_content_and_logprobs(reward_server, tiny_reward_dir):
    response = client(reward_server).chat.completions.create(messages=CONVERSATION,
                                                             model="nvidia/nemotron-4-340b-reward")
    choice = response.choices[0]
    from_logprobs = {score.token: score.logprob for score in choice.logprobs.content}  # NeMo Curator's reading
    from_content = {k: float(v) for k, v in (item.split(":") for item in choice.message.content.split(","))}
    assert list(from_content) == ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
    assert from_logprobs == from_content
    assert from_content == pytest.approx(reference_scores(tiny_reward_dir, CONVERSATION), abs=1e-5)
    assert len(response.choices) == 1 and response.usage.prompt_tokens > 0


def test_role_order_is_validated(reward_server):
    bad = [
        [CONVERSATION[1], CONVERSATION[0]],  # starts with the assistant
        [CONVERSATION[0], CONVERSATION[0], CONVERSATION[1]],  # two user turns
        [CONVERSATION[0]],  # nothing to score
        [CONVERSATION[0], {"role": "tool", "content": "x"}],
    ]
    for messages in bad:
        with pytest.raises(openai.BadRequestError) as info:
            client(reward_server).chat.completions.create(messages=messages, model="reward")
        assert info.value.body["param"] == "messages"
    ok = [{"role": "system", "content": "judge"}, *CONVERSATION, {"role": "user", "content": "more?"},
          {"role": "assistant", "content": "Versailles."}]
    assert client(reward_server).chat.completions.create(messages=ok, model="reward").choices[0].logprobs


def test_concurrent_scoring_is_batched_and_exact(reward_server):
    conversations = [[CONVERSATION[0], {"role": "assistant", "content": "ok " * k}] for k in range(1, 17)]

    async def main():
        oai = openai.AsyncOpenAI(base_url=f"{reward_server.url}/v1", api_key="unused", max_retries=0)
        replies = await asyncio.gather(*(oai.chat.completions.create(messages=m, model="r") for m in conversations))
        await oai.close()
        return [r.choices[0].message.content for r in replies]

    batches_before = reward_server.state.model.reward.num_batches
    together = asyncio.run(main())
    assert reward_server.state.model.reward.num_batches - batches_before < len(conversations)
    alone = [client(reward_server).chat.completions.create(messages=m, model="r").choices[0].message.content
             for m in conversations]
    assert [dict_of(a) == pytest.approx(dict_of(b), abs=1e-5) for a, b in zip(together, alone)] == [True] * 16


def dict_of(content: str) -> dict[str, float]:
    return {k: float(v) for k, v in (item.split(":") for item in content.split(","))}


def test_streamed_scores_and_generation_refused(reward_server):
    chunks = list(client(reward_server).chat.completions.create(messages=CONVERSATION, model="r", stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert content.startswith("helpfulness:") and chunks[-1].choices[0].finish_reason == "stop"
    assert requests.put(f"{reward_server.url}/generate", json={"sentences": ["hi"]}).status_code == 400
    with pytest.raises(openai.BadRequestError, match="reward model"):
        client(reward_server).completions.create(model="r", prompt="hi")


def test_usage_is_streamed_when_asked_and_n_is_one(reward_server):
    chunks = list(client(reward_server).chat.completions.create(messages=CONVERSATION, model="r", stream=True,
                                                               stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens > 0 and chunks[-1].usage.completion_tokens == 0
    with pytest.raises(openai.BadRequestError, match="n must be 1, got 3"):
        client(reward_server).chat.completions.create(messages=CONVERSATION, model="r", n=3)
