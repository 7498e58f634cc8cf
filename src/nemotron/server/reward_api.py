"""Reward scoring as NVIDIA's hosted reward service answers it: a chat completion whose single
choice has `message.content` "helpfulness:3.1,correctness:3.2,coherence:3.8,complexity:1.6,verbosity:1.9"
and `logprobs.content` [{"token": "helpfulness", "logprob": 3.1}, ...], the form NeMo Curator's
`query_reward_model` reads. The conversation must alternate user/assistant, start with the user and
end with the assistant reply to score (an optional system message may come first).
"""
from __future__ import annotations

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nemotron.engine.reward_scorer import ScoringError
from nemotron.model.config import REWARD_ATTRIBUTES
from nemotron.server.errors import bad_request
from nemotron.server.plumbing import ClientGone, client_closed, sse_response, until_done_or_gone
from nemotron.server.openai_format import Envelope, usage
from nemotron.server.schemas import ChatBody
from nemotron.server.state import ServedModel, ServerState
from nemotron.tokenizer import ChatFormatError, render_reward_prompt

REPORTED = slice(4, 9)  # of the 9 Nemotron-4 340B Reward attributes, the HelpSteer2 five


def reported_scores(scores: list[float]) -> list[tuple[str, float]]:
    """(attribute, score) as the hosted service reports them; other heads report every output."""
    if len(scores) == len(REWARD_ATTRIBUTES):
        pairs = list(zip(REWARD_ATTRIBUTES, scores))[REPORTED]
    else:
        pairs = [(f"attribute_{i}", s) for i, s in enumerate(scores)]
    # Shortest text that reads back as the same float32, used for both the content and the value.
    return [(name, float(str(np.float32(score)))) for name, score in pairs]


def _prepare(served: ServedModel, body: ChatBody) -> list[int]:
    """Render, tokenize and check the conversation (on a worker thread)."""
    try:
        ids = served.encode(render_reward_prompt(body.conversation()), "messages")
        served.reward.check(ids)
    except (ChatFormatError, ScoringError) as err:
        raise bad_request(str(err), "messages") from None
    return ids


async def score_chat(request: Request, state: ServerState, served: ServedModel, body: ChatBody) -> Response:
    if (body.n or 1) != 1:  # the scores are one deterministic answer; n copies of it would only mislead
        raise bad_request(f"a reward model answers one choice (its scores); n must be 1, got {body.n}", "n")
    ids = await state.run_cpu(_prepare, served, body)
    try:
        scores = await until_done_or_gone(request, served.reward.score(ids), state.config.request_timeout_s)
    except ClientGone:
        return client_closed()
    state.metrics.count_tokens("/v1/chat/completions", len(ids), 0)
    pairs = reported_scores(scores)
    content = ",".join(f"{name}:{value}" for name, value in pairs)
    logprobs = {"content": [{"token": name, "logprob": value, "bytes": list(name.encode()), "top_logprobs": []}
                            for name, value in pairs]}
    envelope = Envelope("chat.completion", served.name)
    if not body.stream:
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": logprobs,
                  "finish_reason": "stop"}
        return JSONResponse(envelope.wrap([choice], usage(len(ids), 0)))

    async def chunks():
        for delta, choice_logprobs, reason in (({"role": "assistant", "content": content}, logprobs, None),
                                               ({}, None, "stop")):
            yield envelope.wrap([{"index": 0, "delta": delta, "logprobs": choice_logprobs, "finish_reason": reason}],
                                chunk=True)
        if body.stream_options and body.stream_options.include_usage:
            yield envelope.wrap([], usage(len(ids), 0), chunk=True)

    return sse_response(state, chunks(), state.config.request_timeout_s)
