"""The OpenAI-compatible API: /v1/models, /v1/completions and /v1/chat/completions (streamed as
server-sent events ending in `data: [DONE]`).

Beyond OpenAI: `top_k`, `min_p`, `repetition_penalty`, `min_tokens` and `ignore_eos` are accepted (as
vLLM does) and temperature goes up to 100 (NeMo's limit); temperature 0 is greedy decoding, after the
penalties (frequency, presence and repetition apply then too, as in OpenAI's API and vLLM). Features
the engine does not have (logit_bias, tools, JSON mode, beam search, best_of other than n) are
refused with HTTP 400 rather than ignored. Any `model` value is accepted; responses name the served model.
Chat messages are rendered in the Nemotron chat format and the reply ends at `<extra_id_1>`, which
is not part of the content, nor is the template's newline before it. With `echo`, the prompt is
returned as decoded from its tokens and `text_offset` counts from the start of the returned text.
Request bodies are validated once, by their models in schemas.py.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nemotron.engine.async_llm import choice_stream, merge
from nemotron.engine.llm_engine import EngineRequest, RequestError, StepOutput
from nemotron.engine.sampling import SamplingParams, SamplingParamsError, derive_seed
from nemotron.server import reward_api
from nemotron.server.completion import Choice, check_context, finite
from nemotron.server.errors import APIError, bad_request
from nemotron.server.plumbing import ClientGone, client_closed, parse_body, sse_response, until_done_or_gone
from nemotron.server.openai_format import (CompletionLogprobs, Envelope, add_generated, chat_logprob_content,
                                           top_dict, usage)
from nemotron.server.schemas import ChatBody, CompletionBody, SamplingBody
from nemotron.server.state import ServedModel, ServerState
from nemotron.tokenizer import CHAT_STOP_STRINGS, ChatFormatError, render_chat

Plan = list[EngineRequest]  # every choice, checked by the engine


def _model_entry(state: ServerState) -> dict:
    entry = {"id": state.config.model_name, "object": "model", "owned_by": "nemotron",
             "created": state.model.created if state.model else 0}
    if state.model is not None:
        entry["max_model_len"] = state.model.context_len
    return entry


async def models(request: Request) -> Response:
    state: ServerState = request.app.state.server
    return JSONResponse({"object": "list", "data": [_model_entry(state)]})


async def model(request: Request) -> Response:
    """GET /v1/models/{model}: the served model (OpenAI's models.retrieve), or a 404 naming it."""
    state: ServerState = request.app.state.server
    name = request.path_params["model"]
    if name != state.config.model_name:
        raise APIError(404, f"The model '{name}' does not exist; this server serves '{state.config.model_name}'",
                       param="model", code="model_not_found")
    return JSONResponse(_model_entry(state))


# ---- request fields both endpoints share ------------------------------------------------------------
@dataclass(slots=True)
class Sampling:
    n: int
    seed: int | None
    stream: bool
    include_usage: bool
    fields: dict  # SamplingParams fields shared by every choice


def sampling(body: SamplingBody, max_choices: int, extra_stops: tuple[str, ...] = ()) -> Sampling:
    """The validated body's sampling knobs, OpenAI's defaults filled in (null means the default)."""
    n = 1 if body.n is None else body.n
    if n > max_choices:
        raise bad_request(f"n must be <= {max_choices}, got {n}", "n")
    temperature = 1.0 if body.temperature is None else body.temperature
    fields = dict(
        temperature=temperature,  # 0: greedy
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=max(body.top_k or 0, 0),  # vLLM spells "off" as -1
        repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        min_p=body.min_p or 0.0,
        min_tokens=body.min_tokens or 0,
        ignore_eos=bool(body.ignore_eos),
        stop=body.stop_strings + list(extra_stops),
        stop_token_ids=list(body.stop_token_ids or []),
        include_stop_str_in_output=bool(body.include_stop_str_in_output),
    )
    return Sampling(n=n, seed=None if body.seed is None else body.seed % 2**64, stream=bool(body.stream),
                    include_usage=bool(body.stream_options and body.stream_options.include_usage), fields=fields)


def _plan(served: ServedModel, prompts: list[list[int]], s: Sampling, max_new: int | None, field_name: str,
          max_choices: int, **extra) -> Plan:
    """Check every prompt against the context and the engine up front, so that a bad request gets
    HTTP 400 before any stream starts. max_new None: up to the end of the context."""
    if len(prompts) * s.n > max_choices:
        raise bad_request(f"{len(prompts)} prompts x n={s.n} make {len(prompts) * s.n} choices; at most "
                          f"{max_choices} are allowed per request", "n")
    plan = []
    for p, prompt in enumerate(prompts):
        wanted = max(0, served.context_len - len(prompt)) if max_new is None else max_new
        if max_new is not None:
            check_context(len(prompt), wanted, served.context_len, field_name)
            if s.fields["min_tokens"] > wanted:
                raise bad_request(f"min_tokens ({s.fields['min_tokens']}) is more than {field_name} ({wanted})",
                                  "min_tokens")
        for j in range(s.n):
            try:
                params = SamplingParams(max_tokens=wanted, seed=derive_seed(s.seed, p * s.n + j), **s.fields, **extra)
                # The choices of one prompt differ only in their seed: the engine checks the first.
                plan.append(served.llm.engine.check_request(prompt, params) if j == 0 else
                            dataclasses.replace(plan[-1], params=params))
            except (SamplingParamsError, RequestError) as err:
                raise bad_request(str(err)) from None
    return plan


def shown_text(out: StepOutput) -> str:
    """The text of the tokens this step released: with log-probabilities, a chunk carries the text of
    the tokens it describes (the step's new text runs one token ahead of them, as the latest token
    waits for the next). Over a whole choice both add up to the same text."""
    return "".join(token.text for token in out.shown)


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

    def record(self, state: ServerState, index: int, out: StepOutput) -> None:
        self.completion_tokens[index] = out.num_output_tokens
        if not self.first_token_seen and out.num_output_tokens:
            self.first_token_seen = True
            state.metrics.time_to_first_token.observe(self.endpoint, time.perf_counter() - self.started)

    def usage(self) -> dict:
        return usage(self.prompt_tokens, sum(self.completion_tokens.values()))


async def _choices(state: ServerState, served: ServedModel, plan: Plan, tally: _Tally) -> AsyncIterator[Choice]:
    streams = [choice_stream(served.llm, i, request) for i, request in enumerate(plan)]
    async with aclosing(merge(streams)) as merged:
        async for index, out in merged:
            tally.record(state, index, out)
            yield index, out
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
        return sse_response(state, chunks(), state.config.request_timeout_s)

    async def collect() -> dict[int, list[dict]]:
        by_index: dict[int, list[dict]] = {}
        async with aclosing(choices):
            async for choice in choices:
                by_index.setdefault(choice["index"], []).append(choice)
        return by_index

    def answer(by_index: dict[int, list[dict]]) -> JSONResponse:  # on a worker thread: may be large
        return JSONResponse(envelope.wrap([combine(by_index[i]) for i in sorted(by_index)], tally.usage()))

    try:
        by_index = await until_done_or_gone(request, collect(), state.config.request_timeout_s)
    except ClientGone:
        return client_closed()
    return await state.run_cpu(answer, by_index)


# ---- /v1/completions ----------------------------------------------------------------------------------
async def completions(request: Request) -> Response:
    state: ServerState = request.app.state.server
    body = await parse_body(request, CompletionBody)
    s = sampling(body, state.config.max_choices)
    max_tokens = 16 if body.max_tokens is None else body.max_tokens
    n_logprobs = body.logprobs
    if n_logprobs is not None and n_logprobs > state.config.max_top_logprobs:
        raise bad_request(f"logprobs must be <= {state.config.max_top_logprobs}, got {n_logprobs}", "logprobs")
    served = await state.served()
    _require_llm(served)
    # Prompt log-probabilities (echo) come from the engine's prefill, each chosen value from the same row
    # as its alternatives (evaluation harnesses compare them for equality).
    prompts, plan = await state.run_cpu(_prepare_completion, served, body.prompt, s, max_tokens,
                                        state.config.max_choices, logprobs=n_logprobs,
                                        prompt_logprobs=n_logprobs if body.echo else None)
    echoes = {p: _echo(served, prompt) for p, prompt in enumerate(prompts)} if body.echo else {}
    tally = _Tally("/v1/completions", sum(map(len, prompts)))
    renderers = {i: _CompletionChoice(served, echoes.get(i // s.n), n_logprobs) for i in range(len(plan))}

    async def choices() -> AsyncIterator[dict]:
        async with aclosing(_choices(state, served, plan, tally)) as outputs:
            async for index, out in outputs:
                yield renderers[index].render(index, out)

    return await _respond(request, state, s, Envelope("text_completion", served.name), tally, choices(),
                          _combine_completion)


def _prepare_completion(served: ServedModel, prompt: str | list, s: Sampling, max_tokens: int, max_choices: int,
                        **extra) -> tuple[list[list[int]], Plan]:
    """Tokenize and check the prompts (on a worker thread)."""
    prompts = _prompt_ids(prompt, served)
    return prompts, _plan(served, prompts, s, max_tokens, "max_tokens", max_choices, **extra)


def _prompt_ids(prompt: str | list, served: ServedModel) -> list[list[int]]:
    """OpenAI's four prompt forms (the schema checked which one): a string, strings, token ids,
    lists of token ids."""
    if isinstance(prompt, str):
        return [served.encode(prompt, "prompt")]
    if all(isinstance(p, str) for p in prompt):
        return [served.encode(p, f"prompt[{i}]") for i, p in enumerate(prompt)]
    if all(isinstance(t, int) for t in prompt):
        return [prompt]
    return prompt


@dataclass(slots=True)
class _Echo:
    ids: list[int]
    text: str
    token_texts: list[str]
    offsets: list[int]


def _echo(served: ServedModel, ids: list[int]) -> _Echo:
    """The prompt as echoed: its text with the sequence markers spelled out where they stand (`decode`
    drops BOS, EOS and PAD, as NeMo's server does, which would lose a "</s>" the client wrote), each
    token's text and offset."""
    tok = served.tokenizer
    markers = {i for i in (tok.bos_id, tok.eos_id, tok.pad_id) if i is not None}
    decoded, starts = tok.decode(ids), tok.offsets(ids)
    token_texts = [tok.id_to_piece(i) if i in markers else decoded[a:b]
                   for i, a, b in zip(ids, starts, [*starts[1:], len(decoded)])]
    offsets = list(itertools.accumulate([0] + [len(t) for t in token_texts[:-1]])) if ids else []
    return _Echo(ids, "".join(token_texts), token_texts, offsets)


class _CompletionChoice:
    """Turns one choice's step outputs into completion choice objects (the first one carries the echo)."""

    def __init__(self, served: ServedModel, echo: _Echo | None, n_logprobs: int | None) -> None:
        self.tokenizer, self.echo, self.n_logprobs = served.tokenizer, echo, n_logprobs
        self.offset = 0
        self.started = False

    def render(self, index: int, out: StepOutput) -> dict:
        text = ""
        logprobs = CompletionLogprobs() if self.n_logprobs is not None else None
        if not self.started and self.echo is not None:
            text = self.echo.text
            if logprobs is not None:
                self._add_echo(logprobs, out)
            self.offset = len(text)
        self.started = True
        text += out.text if logprobs is None else shown_text(out)
        if logprobs is not None:
            self.offset = add_generated(logprobs, self.tokenizer, out.shown, self.offset, with_top=True)
        return {"index": index, "text": text, "logprobs": logprobs.as_dict() if logprobs else None,
                "finish_reason": out.finish_reason}

    def _add_echo(self, logprobs: CompletionLogprobs, out: StepOutput) -> None:
        scored = (out.prompt_logprobs or [None])[1:]  # the engine's, on the first output
        chosen = [None] + [finite(t.logprob) for t in scored]
        tops = [None] + [top_dict(self.tokenizer, t.top, (t.id, t.logprob), text)
                         for t, text in zip(scored, self.echo.token_texts[1:])]
        for k, token in enumerate(self.echo.token_texts):
            logprobs.add(token, chosen[k], tops[k], self.echo.offsets[k])


def _combine_completion(parts: list[dict]) -> dict:
    combined = {"index": parts[0]["index"], "text": "".join(p["text"] for p in parts), "logprobs": None,
                "finish_reason": parts[-1]["finish_reason"]}
    if parts[0]["logprobs"] is not None:
        combined["logprobs"] = {key: [x for p in parts for x in p["logprobs"][key]] for key in parts[0]["logprobs"]}
    return combined


# ---- /v1/chat/completions -----------------------------------------------------------------------------
async def chat_completions(request: Request) -> Response:
    state: ServerState = request.app.state.server
    body = await parse_body(request, ChatBody)
    served = await state.served()
    if served.reward is not None:
        return await reward_api.score_chat(request, state, served, body)
    # The turn ends "\n<extra_id_1>"; the newline belongs to the template (render_chat adds it back).
    s = sampling(body, state.config.max_choices, extra_stops=CHAT_STOP_STRINGS)
    max_tokens, field_name = body.max_completion_tokens, "max_completion_tokens"
    if max_tokens is None:
        max_tokens, field_name = body.max_tokens, "max_tokens"
    want_logprobs = bool(body.logprobs)
    top_n = body.top_logprobs or 0
    if top_n > state.config.max_top_logprobs:
        raise bad_request(f"top_logprobs must be <= {state.config.max_top_logprobs}, got {top_n}", "top_logprobs")
    prompt, plan = await state.run_cpu(_prepare_chat, served, body, s, max_tokens, field_name,
                                       state.config.max_choices, logprobs=top_n if want_logprobs else None)
    tally = _Tally("/v1/chat/completions", len(prompt))
    started: set[int] = set()

    async def choices() -> AsyncIterator[dict]:
        async with aclosing(_choices(state, served, plan, tally)) as outputs:
            async for index, out in outputs:
                content = {"role": "assistant", "content": ""} if index not in started else {}
                started.add(index)
                text = shown_text(out) if want_logprobs else out.text
                if text:
                    content["content"] = text
                logprobs = ({"content": chat_logprob_content(served.tokenizer, out.shown)} if want_logprobs
                            else None)
                if content or out.shown:
                    yield {"index": index, "delta": content, "logprobs": logprobs, "finish_reason": None}
                if out.finish_reason:
                    yield {"index": index, "delta": {}, "logprobs": None, "finish_reason": out.finish_reason}

    return await _respond(request, state, s, Envelope("chat.completion", served.name), tally, choices(),
                          lambda parts: _combine_chat(parts, want_logprobs))


def _prepare_chat(served: ServedModel, body: ChatBody, s: Sampling, max_tokens: int | None, field_name: str,
                  max_choices: int, **extra) -> tuple[list[int], Plan]:
    """Render, tokenize and check the conversation (on a worker thread)."""
    try:
        prompt = served.encode(render_chat(body.conversation()), "messages")
    except ChatFormatError as err:
        raise bad_request(str(err), "messages") from None
    return prompt, _plan(served, [prompt], s, max_tokens, field_name, max_choices, **extra)


def _combine_chat(parts: list[dict], want_logprobs: bool) -> dict:
    content = "".join(p["delta"].get("content", "") for p in parts)
    logprobs = {"content": [x for p in parts if p["logprobs"] for x in p["logprobs"]["content"]]}
    return {"index": parts[0]["index"], "message": {"role": "assistant", "content": content},
            "logprobs": logprobs if want_logprobs else None, "finish_reason": parts[-1]["finish_reason"]}
