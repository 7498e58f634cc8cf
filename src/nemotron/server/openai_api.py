"""The OpenAI-compatible API: /v1/models, /v1/completions and /v1/chat/completions (streamed as
server-sent events ending in `data: [DONE]`).

Beyond OpenAI: `top_k`, `repetition_penalty`, `min_tokens` and `ignore_eos` are accepted (as vLLM
does) and temperature goes up to 100 (NeMo's limit); temperature 0 is greedy decoding. Features the
engine does not have (frequency/presence penalties, logit_bias, tools, JSON mode) are refused with
HTTP 400 rather than ignored. Any `model` value is accepted; responses name the served model.
Chat messages are rendered in the Nemotron chat format and the reply ends at `<extra_id_1>`, which
is not part of the content, nor is the template's newline before it. With `echo`, the prompt is returned as decoded from its tokens and
`text_offset` counts from the start of the returned text.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nemotron.engine.llm_engine import RequestError
from nemotron.engine.sampling import MAX_TEMPERATURE, SamplingParams, SamplingParamsError
from nemotron.server import reward_api
from nemotron.server.completion import ChoiceDelta, check_context, choice_stream, derive_seed, finite, merge
from nemotron.server.errors import bad_request
from nemotron.server.plumbing import ClientGone, client_closed, read_json, sse_response, until_done_or_gone
from nemotron.server.openai_format import (CompletionLogprobs, Envelope, add_generated, chat_logprob_content,
                                           top_dict, usage)
from nemotron.server.params import get_bool, get_int, get_number, get_object, get_str_list
from nemotron.server.state import ServedModel, ServerState
from nemotron.tokenizer import CHAT_STOP_STRINGS, ChatFormatError, render_chat

Plan = list[tuple[list[int], SamplingParams]]  # (prompt ids, params) of every choice


async def models(request: Request) -> Response:
    state: ServerState = request.app.state.server
    entry = {"id": state.config.model_name, "object": "model", "owned_by": "nemotron",
             "created": state.model.created if state.model else 0}
    if state.model is not None:
        entry["max_model_len"] = state.model.context_len
    return JSONResponse({"object": "list", "data": [entry]})


# ---- request fields both endpoints share ------------------------------------------------------------
@dataclass(slots=True)
class Sampling:
    n: int
    seed: int | None
    stream: bool
    include_usage: bool
    fields: dict  # SamplingParams fields shared by every choice


def parse_sampling(body: dict, max_choices: int, extra_stops: tuple[str, ...] = ()) -> Sampling:
    if body.get("model") is not None and not isinstance(body["model"], str):
        raise bad_request("model must be a string", "model")
    for name in ("frequency_penalty", "presence_penalty"):
        if get_number(body, name, 0.0, minimum=-2.0, maximum=2.0, nullable=True):
            raise bad_request(f"{name} is not supported; use repetition_penalty (>= 1) instead", name)
    for name in ("logit_bias", "tools", "functions"):
        if body.get(name):
            raise bad_request(f"{name} is not supported by this server", name)
    response_format = get_object(body, "response_format")
    if response_format and response_format.get("type", "text") != "text":
        raise bad_request('only response_format {"type": "text"} is supported', "response_format")
    stop = get_str_list(body, "stop", [], single_ok=True, max_items=16)
    if "" in stop:
        raise bad_request("stop strings must not be empty", "stop")
    temperature = get_number(body, "temperature", 1.0, minimum=0.0, maximum=MAX_TEMPERATURE, nullable=True)
    seed = get_int(body, "seed", None, nullable=True)
    top_k = get_int(body, "top_k", 0, minimum=-1, nullable=True)  # vLLM spells "off" as -1
    fields = dict(
        greedy=temperature == 0, temperature=temperature,
        top_p=get_number(body, "top_p", 1.0, above=0.0, maximum=1.0, nullable=True),
        top_k=max(top_k, 0),
        repetition_penalty=get_number(body, "repetition_penalty", 1.0, minimum=1.0, nullable=True),
        min_new_tokens=get_int(body, "min_tokens", 0, minimum=0, nullable=True),
        ignore_eos=get_bool(body, "ignore_eos", False),
        stop_strings=stop + list(extra_stops),
    )
    return Sampling(n=get_int(body, "n", 1, minimum=1, maximum=max_choices, nullable=True),
                    seed=None if seed is None else seed % 2**64, stream=get_bool(body, "stream", False),
                    include_usage=get_bool(get_object(body, "stream_options") or {}, "include_usage", False),
                    fields=fields)


def _plan(served: ServedModel, prompts: list[list[int]], s: Sampling, max_new: int | None, field_name: str,
          max_choices: int, **extra) -> Plan:
    """Check every choice against the context and the engine up front, so that a bad request gets
    HTTP 400 before any stream starts. max_new None: up to the end of the context."""
    if len(prompts) * s.n > max_choices:
        raise bad_request(f"{len(prompts)} prompts x n={s.n} make {len(prompts) * s.n} choices; at most "
                          f"{max_choices} are allowed per request", "n")
    plan = []
    for p, prompt in enumerate(prompts):
        wanted = max(0, served.context_len - len(prompt)) if max_new is None else max_new
        if max_new is not None:
            check_context(len(prompt), wanted, served.context_len, field_name)
            if s.fields["min_new_tokens"] > wanted:
                raise bad_request(f"min_tokens ({s.fields['min_new_tokens']}) is more than {field_name} ({wanted})",
                                  "min_tokens")
        for j in range(s.n):
            try:
                params = SamplingParams(max_new_tokens=wanted, seed=derive_seed(s.seed, p * s.n + j), **s.fields,
                                        **extra)
                served.llm.engine.check_request(prompt, params)
            except (SamplingParamsError, RequestError) as err:
                raise bad_request(str(err)) from None
            plan.append((prompt, params))
    return plan


def _require_llm(served: ServedModel) -> None:
    if served.llm is None:
        raise bad_request("this server hosts a reward model; it only scores conversations through "
                          "/v1/chat/completions")


@dataclass(slots=True)
class _Tally:
    """Usage and metrics of one response, filled while its choices stream."""

    endpoint: str
    prompt_tokens: int
    started: float = field(default_factory=time.perf_counter)
    completion_tokens: dict[int, int] = field(default_factory=dict)
    first_token_seen: bool = False

    def record(self, state: ServerState, delta: ChoiceDelta) -> None:
        self.completion_tokens[delta.index] = delta.num_output_tokens
        if not self.first_token_seen and delta.num_output_tokens:
            self.first_token_seen = True
            state.metrics.time_to_first_token.observe(self.endpoint, time.perf_counter() - self.started)

    def usage(self) -> dict:
        return usage(self.prompt_tokens, sum(self.completion_tokens.values()))


async def _deltas(state: ServerState, served: ServedModel, plan: Plan, tally: _Tally) -> AsyncIterator[ChoiceDelta]:
    streams = [choice_stream(served.llm, i, prompt, params)
               for i, (prompt, params) in enumerate(plan)]
    async with aclosing(merge(streams)) as merged:
        async for delta in merged:
            tally.record(state, delta)
            yield delta
    state.metrics.count_tokens(tally.endpoint, tally.prompt_tokens, sum(tally.completion_tokens.values()))


async def _respond(request: Request, state: ServerState, s: Sampling, envelope: Envelope, tally: _Tally,
                   choices: AsyncIterator[dict], combine: Callable[[list[dict]], dict]) -> Response:
    """Stream the choice chunks, or wait for all of them and answer one object."""
    if s.stream:
        async def chunks() -> AsyncIterator[dict]:
            async with aclosing(choices):
                async for choice in choices:
                    yield envelope.wrap([choice], chunk=True)
            if s.include_usage:
                yield envelope.wrap([], tally.usage(), chunk=True)
        return sse_response(chunks(), state.config.request_timeout_s)

    async def collect() -> dict:
        by_index: dict[int, list[dict]] = {}
        async with aclosing(choices):
            async for choice in choices:
                by_index.setdefault(choice["index"], []).append(choice)
        return envelope.wrap([combine(by_index[i]) for i in sorted(by_index)], tally.usage())

    try:
        return JSONResponse(await until_done_or_gone(request, collect(), state.config.request_timeout_s))
    except ClientGone:
        return client_closed()


# ---- /v1/completions ----------------------------------------------------------------------------------
async def completions(request: Request) -> Response:
    state: ServerState = request.app.state.server
    body = await read_json(request)
    s = parse_sampling(body, state.config.max_choices)
    if "prompt" not in body:
        raise bad_request("prompt is required", "prompt")
    max_tokens = get_int(body, "max_tokens", 16, minimum=0, nullable=True)
    echo = get_bool(body, "echo", False)
    n_logprobs = get_int(body, "logprobs", None, minimum=0, maximum=state.config.max_top_logprobs, nullable=True)
    if body.get("suffix"):
        raise bad_request("suffix is not supported", "suffix")
    if get_int(body, "best_of", s.n, minimum=1, nullable=True) != s.n:
        raise bad_request("best_of is not supported (only best_of == n)", "best_of")
    served = await state.served()
    _require_llm(served)
    prompts = _prompt_ids(body["prompt"], served)
    # Prompt log-probabilities (echo): the engine's when only the chosen tokens are wanted; with
    # alternatives, all from one forward pass, so that each chosen value equals its alternative's.
    plan = _plan(served, prompts, s, max_tokens, "max_tokens", state.config.max_choices,
                 return_logprobs=n_logprobs is not None, logprobs=n_logprobs or 0,
                 prompt_logprobs=echo and n_logprobs == 0)
    echoes = {}
    if echo:
        for p, prompt in enumerate(prompts):
            echoes[p] = await _echo(served, prompt, n_logprobs)
    tally = _Tally("/v1/completions", sum(map(len, prompts)))
    renderers = {i: _CompletionChoice(served, echoes.get(i // s.n), n_logprobs) for i in range(len(plan))}

    async def choices() -> AsyncIterator[dict]:
        async with aclosing(_deltas(state, served, plan, tally)) as deltas:
            async for delta in deltas:
                yield renderers[delta.index].render(delta)

    return await _respond(request, state, s, Envelope("text_completion", served.name), tally, choices(),
                          _combine_completion)


def _prompt_ids(prompt: object, served: ServedModel) -> list[list[int]]:
    """OpenAI's four prompt forms: a string, strings, token ids, lists of token ids."""
    def is_ids(x: object) -> bool:
        return isinstance(x, list) and bool(x) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)

    if isinstance(prompt, str):
        return [served.tokenizer.encode(prompt)]
    if is_ids(prompt):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return [served.tokenizer.encode(p) for p in prompt]
    if isinstance(prompt, list) and prompt and all(is_ids(p) for p in prompt):
        return prompt
    raise bad_request("prompt must be a string, a list of strings, a list of token ids or a list of such lists, "
                      "none of them empty", "prompt")


@dataclass(slots=True)
class _Echo:
    ids: list[int]
    text: str
    token_texts: list[str]
    offsets: list[int]
    logprobs: list[float | None] | None = None  # from the forward pass, when alternatives are wanted
    tops: list[dict | None] | None = None


async def _echo(served: ServedModel, ids: list[int], n_logprobs: int | None) -> _Echo:
    text, offsets = served.tokenizer.decode(ids), served.tokenizer.offsets(ids)
    echo = _Echo(ids, text, [text[a:b] for a, b in zip(offsets, [*offsets[1:], len(text)])], offsets)
    if n_logprobs:
        scored = await served.sequences.logprobs(ids, top_n=n_logprobs)
        echo.logprobs = [None, *map(finite, scored.chosen)]
        echo.tops = [None] + [top_dict(served.tokenizer, top, (token, lp))
                              for top, token, lp in zip(scored.top, ids[1:], scored.chosen)]
    return echo


class _CompletionChoice:
    """Turns one choice's deltas into completion choice objects (the first one carries the echo)."""

    def __init__(self, served: ServedModel, echo: _Echo | None, n_logprobs: int | None) -> None:
        self.tokenizer, self.echo, self.n_logprobs = served.tokenizer, echo, n_logprobs
        self.offset = 0
        self.started = False

    def render(self, delta: ChoiceDelta) -> dict:
        text = ""
        logprobs = CompletionLogprobs() if self.n_logprobs is not None else None
        if not self.started and self.echo is not None:
            text = self.echo.text
            if logprobs is not None:
                self._add_echo(logprobs, delta)
            self.offset = len(text)
        self.started = True
        text += delta.text
        if logprobs is not None:
            self.offset = add_generated(logprobs, self.tokenizer, delta.tokens, self.offset, with_top=True)
        return {"index": delta.index, "text": text, "logprobs": logprobs.as_dict() if logprobs else None,
                "finish_reason": delta.finish_reason}

    def _add_echo(self, logprobs: CompletionLogprobs, delta: ChoiceDelta) -> None:
        echo = self.echo
        chosen, tops = echo.logprobs, echo.tops
        if chosen is None:  # the engine's, on the first delta
            chosen = [None if x is None else finite(x) for x in delta.prompt_logprobs or []]
            tops = [None] + [top_dict(self.tokenizer, [], (t, lp)) for t, lp in zip(echo.ids[1:], chosen[1:])]
        for k, token in enumerate(echo.token_texts):
            logprobs.add(token, chosen[k], tops[k], echo.offsets[k])


def _combine_completion(parts: list[dict]) -> dict:
    combined = {"index": parts[0]["index"], "text": "".join(p["text"] for p in parts), "logprobs": None,
                "finish_reason": parts[-1]["finish_reason"]}
    if parts[0]["logprobs"] is not None:
        combined["logprobs"] = {key: [x for p in parts for x in p["logprobs"][key]] for key in parts[0]["logprobs"]}
    return combined


# ---- /v1/chat/completions -----------------------------------------------------------------------------
async def chat_completions(request: Request) -> Response:
    state: ServerState = request.app.state.server
    body = await read_json(request)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list of {role, content} objects", "messages")
    served = await state.served()
    if served.reward is not None:
        return await reward_api.score_chat(request, state, served, body, messages)
    # The turn ends "\n<extra_id_1>"; the newline belongs to the template (render_chat adds it back).
    s = parse_sampling(body, state.config.max_choices, extra_stops=CHAT_STOP_STRINGS)
    max_tokens = get_int(body, "max_completion_tokens", None, minimum=0, nullable=True)
    field_name = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, field_name = get_int(body, "max_tokens", None, minimum=0, nullable=True), "max_tokens"
    want_logprobs = get_bool(body, "logprobs", False)
    top_n = get_int(body, "top_logprobs", 0, minimum=0, maximum=state.config.max_top_logprobs, nullable=True)
    if top_n and not want_logprobs:
        raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
    try:
        prompt = served.tokenizer.encode(render_chat(messages))
    except ChatFormatError as err:
        raise bad_request(str(err), "messages") from None
    plan = _plan(served, [prompt], s, max_tokens, field_name, state.config.max_choices,
                 return_logprobs=want_logprobs, logprobs=top_n)
    tally = _Tally("/v1/chat/completions", len(prompt))
    started: set[int] = set()

    async def choices() -> AsyncIterator[dict]:
        async with aclosing(_deltas(state, served, plan, tally)) as deltas:
            async for delta in deltas:
                content = {"role": "assistant", "content": ""} if delta.index not in started else {}
                started.add(delta.index)
                if delta.text:
                    content["content"] = delta.text
                logprobs = ({"content": chat_logprob_content(served.tokenizer, delta.tokens)} if want_logprobs
                            else None)
                if content or delta.tokens:
                    yield {"index": delta.index, "delta": content, "logprobs": logprobs, "finish_reason": None}
                if delta.finish_reason:
                    yield {"index": delta.index, "delta": {}, "logprobs": None, "finish_reason": delta.finish_reason}

    return await _respond(request, state, s, Envelope("chat.completion", served.name), tally, choices(),
                          lambda parts: _combine_chat(parts, want_logprobs))


def _combine_chat(parts: list[dict], want_logprobs: bool) -> dict:
    content = "".join(p["delta"].get("content", "") for p in parts)
    logprobs = {"content": [x for p in parts if p["logprobs"] for x in p["logprobs"]["content"]]}
    return {"index": parts[0]["index"], "message": {"role": "assistant", "content": content},
            "logprobs": logprobs if want_logprobs else None, "finish_reason": parts[-1]["finish_reason"]}
