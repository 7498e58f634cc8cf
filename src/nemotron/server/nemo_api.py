"""NeMo's text-generation server: `PUT /generate`, as `megatron_gpt_eval.py server=True` serves it
(nemo/collections/nlp/modules/common/text_generation_server.py) and the Nemotron-4 model cards call it.

Same request fields, defaults and response keys, serialised as Flask's jsonify does (sorted keys,
ASCII escapes, compact, a final newline). `sentences` is prompt + completion (the end string
stays in it); `tokens` are vocabulary pieces; `logprob` (with compute_logprob) has one value per
token after the first, prompt included; `full_logprob` (with all_probs) one distribution per
such position. All sentences of a request run concurrently in the engine.

Deliberately different from NeMo:
- invalid requests get HTTP 400 and an error body (NeMo answers most with 200 and a bare string);
  so do all_probs without compute_logprob (a crash in NeMo), an empty `sentences`, and a prompt
  plus tokens_to_generate beyond the context (NeMo silently generates fewer);
- a request that arrives while the model loads waits for it (NeMo binds its port only when ready);
- `sentences[i]` starts with the prompt exactly as sent, so `response[len(prompt):]` is always the
  completion, even where the tokenizer does not reproduce the prompt; `offsets` index the
  decoded text (NeMo adds up piece lengths, "▁" included);
- each sentence ends where it stopped (NeMo pads shorter ones with EOS to the longest in the batch);
  generation stops when an end string appears in the text, not only at its end; empty end strings
  are ignored (in NeMo they stop every sentence after one token);
- random_seed seeds each sentence with a generator of its own (NeMo seeds the global RNG once), so
  a sentence's sample does not depend on its batch; repetition penalty and top-p follow the engine's
  documented fixes (see nemotron.engine.sampling);
- `logprob` is always of the model's own distribution (in NeMo, the decode steps of sampled requests
  report the temperature-scaled, filtered one: its logit edits happen in place on the same tensor).
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import aclosing

from starlette.requests import Request
from starlette.responses import Response

from nemotron.engine.async_llm import choice_stream, merge
from nemotron.engine.llm_engine import EngineRequest, RequestError
from nemotron.engine.output import Token
from nemotron.engine.sampling import SamplingParams, SamplingParamsError, derive_seed
from nemotron.errors import TokenizerError
from nemotron.server.completion import check_context, finite
from nemotron.server.errors import bad_request
from nemotron.server.plumbing import ClientGone, client_closed, parse_body, until_done_or_gone
from nemotron.server.schemas import GenerateBody
from nemotron.server.state import ServedModel, ServerState


def _sampling_fields(req: GenerateBody) -> dict:
    """The SamplingParams fields every sentence of the request shares."""
    # compute_logprob: each token's log-probability; all_probs: and the whole distribution it came from.
    logprobs = (-1 if req.all_probs else 0) if req.compute_logprob else None
    return dict(
        temperature=0.0 if req.greedy else req.temperature, top_k=req.top_k,
        top_p=req.top_p or 1.0,  # NeMo: 0 switches top-p off
        repetition_penalty=1.0 if req.greedy else req.repetition_penalty,  # NeMo's greedy ignores it (vLLM's not)
        # NeMo never complains about a minimum above the maximum; it just stops at the maximum.
        min_tokens=min(req.min_tokens_to_generate, req.tokens_to_generate),
        stop=[s for s in req.end_strings if s],
        stop_before_min_tokens=True,  # NeMo's minimum blocks EOS only; its end strings match from the start
        max_tokens=req.tokens_to_generate,
        logprobs=logprobs, prompt_logprobs=logprobs,
    )


def _prepare(served: ServedModel, req: GenerateBody) -> list[EngineRequest]:
    """Tokenize and check every sentence (on a worker thread)."""
    shared, plan = _sampling_fields(req), []
    for i, sentence in enumerate(req.sentences):
        try:
            prompt = served.encode(sentence, f"sentences[{i}]", add_bos=req.add_BOS)
        except TokenizerError as err:
            raise bad_request(str(err), "add_BOS") from None
        check_context(len(prompt), req.tokens_to_generate, served.context_len, "tokens_to_generate")
        try:
            params = SamplingParams(seed=derive_seed(req.random_seed, i), **shared)
            plan.append(served.llm.engine.check_request(prompt, params))
        except (SamplingParamsError, RequestError) as err:
            raise bad_request(f"sentences[{i}]: {err}" if isinstance(err, RequestError) else str(err)) from None
    return plan


async def generate(request: Request) -> Response:
    state: ServerState = request.app.state.server
    req = await parse_body(request, GenerateBody)
    if len(req.sentences) > state.config.max_choices:
        raise bad_request(f"Maximum number of sentences is {state.config.max_choices}", "sentences")
    served = await state.served()
    if served.llm is None:
        raise bad_request("this server hosts a reward model; it scores conversations through "
                          "POST /v1/chat/completions and does not generate")
    plan = await state.run_cpu(_prepare, served, req)
    if req.all_probs:
        positions = sum(len(r.prompt_ids) + req.tokens_to_generate - 1 for r in plan)
        values = positions * served.loaded.config.vocab_size
        if values > state.config.max_full_logprob_values:
            raise bad_request(f"all_probs would return {values} numbers ({positions} positions x "
                              f"{served.loaded.config.vocab_size} tokens); the server's limit is "
                              f"{state.config.max_full_logprob_values}", "all_probs")
    try:
        body = await until_done_or_gone(request, _run(state, served, req, plan), state.config.request_timeout_s)
    except ClientGone:
        return client_closed()
    return Response(body, media_type="application/json")


def flask_json(body: dict) -> str:
    """JSON as NeMo's server (Flask's jsonify) writes it: sorted keys, ASCII only, compact, ending in a newline."""
    return json.dumps(body, sort_keys=True, ensure_ascii=True, separators=(",", ":"), allow_nan=False) + "\n"


async def _run(state: ServerState, served: ServedModel, req: GenerateBody, plan: list[EngineRequest]) -> str:
    """Generate every sentence concurrently; the answer as NeMo's JSON text."""
    started = time.perf_counter()
    prompts = [r.prompt_ids for r in plan]
    outputs: list[list[Token]] = [[] for _ in prompts]
    scored: list[list[Token]] = [[] for _ in prompts]  # the prompt tokens after the first, with compute_logprob
    streams = [choice_stream(served.llm, i, r) for i, r in enumerate(plan)]
    async with aclosing(merge(streams)) as merged:
        async for i, out in merged:
            if not any(outputs) and out.tokens:
                state.metrics.time_to_first_token.observe("/generate", time.perf_counter() - started)
            outputs[i] += out.tokens
            if out.prompt_logprobs is not None:
                scored[i] = out.prompt_logprobs[1:]
    state.metrics.count_tokens("/generate", sum(map(len, prompts)), sum(map(len, outputs)))
    all_ids = [p + [t.id for t in o] for p, o in zip(prompts, outputs)]
    positions = [s + o for s, o in zip(scored, outputs)]  # every token after the first
    logprob = [[t.logprob for t in row] for row in positions] if req.compute_logprob else None
    full = [[t.top_logprobs for t in row] for row in positions] if req.all_probs else None
    return await state.run_cpu(_answer, served, req, prompts, all_ids, logprob, full)


def _answer(served: ServedModel, req: GenerateBody, prompts: list[list[int]], all_ids: list[list[int]],
            logprob: list[list[float]] | None, full: list[list[Sequence[float]]] | None) -> str:
    """The response text (on a worker thread: all_probs answers run to millions of numbers)."""
    tokenizer = served.tokenizer
    result: dict = {"sentences": [], "tokens": [], "logprob": None}
    for sentence, prompt, ids in zip(req.sentences, prompts, all_ids):
        completion = tokenizer.decode(ids)[len(tokenizer.decode(prompt)):]
        result["sentences"].append(sentence + completion)
        result["tokens"].append(tokenizer.token_strings(ids))
    if logprob is not None:
        result["logprob"] = [[finite(x) for x in row] for row in logprob]
    if full is not None:
        result["full_logprob"] = [[[finite(x) for x in row] for row in s] for s in full]
    result["token_ids"] = all_ids
    result["offsets"] = [tokenizer.offsets(ids) for ids in all_ids]
    return flask_json(result)
