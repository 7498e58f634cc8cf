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
from contextlib import aclosing
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from nemotron.engine.llm_engine import RequestError
from nemotron.engine.sampling import MAX_TEMPERATURE, SamplingParams, SamplingParamsError
from nemotron.errors import TokenizerError
from nemotron.server.completion import check_context, derive_seed, finite, merge
from nemotron.server.errors import bad_request
from nemotron.server.plumbing import ClientGone, client_closed, read_json, until_done_or_gone
from nemotron.server.params import get_bool, get_int, get_number, get_str_list
from nemotron.server.state import ServedModel, ServerState

MAX_SENTENCES = 128
DEFAULT_END_STRINGS = ["<|endoftext|>"]


@dataclass(slots=True)
class GenerateRequest:
    sentences: list[str]
    tokens_to_generate: int
    add_bos: bool
    compute_logprob: bool
    all_probs: bool
    random_seed: int | None
    sampling: dict  # SamplingParams fields shared by every sentence


def parse_generate(body: dict, max_sentences: int) -> GenerateRequest:
    sentences = body.get("sentences")
    if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
        raise bad_request("sentences must be a list of strings (the prompts)", "sentences")
    if not sentences:
        raise bad_request("sentences is empty; give at least one prompt", "sentences")
    if len(sentences) > max_sentences:
        raise bad_request(f"Maximum number of sentences is {max_sentences}", "sentences")
    tokens = get_int(body, "tokens_to_generate", 64, minimum=1)
    compute_logprob = get_bool(body, "compute_logprob", False)
    all_probs = get_bool(body, "all_probs", False)
    if all_probs and not compute_logprob:
        raise bad_request("all_probs needs compute_logprob: true (the full distributions come with the "
                          "log-probabilities)", "all_probs")
    top_p = get_number(body, "top_p", 0.9, minimum=0.0, maximum=1.0)
    sampling = dict(
        temperature=get_number(body, "temperature", 1.0, above=0.0, maximum=MAX_TEMPERATURE),
        greedy=get_bool(body, "greedy", False),
        top_k=get_int(body, "top_k", 0, minimum=0),
        top_p=top_p or 1.0,  # NeMo: 0 switches top-p off
        repetition_penalty=get_number(body, "repetition_penalty", 1.0, minimum=1.0),
        # NeMo never complains about a minimum above the maximum; it just stops at the maximum.
        min_new_tokens=min(get_int(body, "min_tokens_to_generate", 0, minimum=0), tokens),
        stop_strings=[s for s in get_str_list(body, "end_strings", DEFAULT_END_STRINGS) if s],
    )
    return GenerateRequest(sentences, tokens, get_bool(body, "add_BOS", False), compute_logprob, all_probs,
                           get_int(body, "random_seed", None, minimum=0, nullable=True), sampling)


async def generate(request: Request) -> Response:
    state: ServerState = request.app.state.server
    req = parse_generate(await read_json(request), state.config.max_choices)
    served = await state.served()
    if served.llm is None:
        raise bad_request("this server hosts a reward model; it scores conversations through "
                          "POST /v1/chat/completions and does not generate")
    tokenizer = served.tokenizer
    try:
        prompts = [tokenizer.encode(s, add_bos=req.add_bos) for s in req.sentences]
    except TokenizerError as err:
        raise bad_request(str(err), "add_BOS") from None
    params = []
    for i, prompt in enumerate(prompts):
        check_context(len(prompt), req.tokens_to_generate, served.context_len, "tokens_to_generate")
        try:
            p = SamplingParams(max_new_tokens=req.tokens_to_generate, seed=derive_seed(req.random_seed, i),
                               return_logprobs=req.compute_logprob,
                               prompt_logprobs=req.compute_logprob and not req.all_probs, **req.sampling)
            served.llm.engine.check_request(prompt, p)
        except (SamplingParamsError, RequestError) as err:
            raise bad_request(f"sentences[{i}]: {err}" if isinstance(err, RequestError) else str(err)) from None
        params.append(p)
    if req.all_probs:
        positions = sum(len(p) + req.tokens_to_generate - 1 for p in prompts)
        values = positions * served.loaded.config.vocab_size
        if values > state.config.max_full_logprob_values:
            raise bad_request(f"all_probs would return {values} numbers ({positions} positions x "
                              f"{served.loaded.config.vocab_size} tokens); the server's limit is "
                              f"{state.config.max_full_logprob_values}", "all_probs")
    try:
        body = await until_done_or_gone(request, _run(state, served, req, prompts, params),
                                        state.config.request_timeout_s)
    except ClientGone:
        return client_closed()
    return Response(flask_json(body), media_type="application/json")


def flask_json(body: dict) -> str:
    """JSON as NeMo's server (Flask's jsonify) writes it: sorted keys, ASCII only, compact, ending in a newline."""
    return json.dumps(body, sort_keys=True, ensure_ascii=True, separators=(",", ":"), allow_nan=False) + "\n"


async def _run(state: ServerState, served: ServedModel, req: GenerateRequest, prompts: list[list[int]],
               params: list[SamplingParams]) -> dict:
    started = time.perf_counter()
    outputs: list[list[int]] = [[] for _ in prompts]
    logprobs: list[list[float]] = [[] for _ in prompts]
    prompt_logprobs: list[list[float | None]] = [[] for _ in prompts]
    streams = [_tagged(i, served.llm.generate(p, sp)) for i, (p, sp) in enumerate(zip(prompts, params))]
    async with aclosing(merge(streams)) as merged:
        async for i, out in merged:
            if not any(outputs) and out.token_ids:
                state.metrics.time_to_first_token.observe("/generate", time.perf_counter() - started)
            outputs[i] += out.token_ids
            logprobs[i] += out.logprobs
            if out.prompt_logprobs is not None:
                prompt_logprobs[i] = out.prompt_logprobs
    state.metrics.count_tokens("/generate", sum(map(len, prompts)), sum(map(len, outputs)))
    tokenizer = served.tokenizer
    result: dict = {"sentences": [], "tokens": [], "logprob": None}
    all_ids = [p + o for p, o in zip(prompts, outputs)]
    for sentence, prompt, ids in zip(req.sentences, prompts, all_ids):
        completion = tokenizer.decode(ids)[len(tokenizer.decode(prompt)):]
        result["sentences"].append(sentence + completion)
        result["tokens"].append(tokenizer.token_strings(ids))
    if req.all_probs:
        scored = [await served.sequences.logprobs(ids, full=True) for ids in all_ids]
        result["logprob"] = [[finite(x) for x in s.chosen] for s in scored]
        result["full_logprob"] = [[[finite(x) for x in row] for row in s.full] for s in scored]
    elif req.compute_logprob:
        result["logprob"] = [[finite(x) for x in pl[1:] + lp] for pl, lp in zip(prompt_logprobs, logprobs)]
    result["token_ids"] = all_ids
    result["offsets"] = [tokenizer.offsets(ids) for ids in all_ids]
    return result


async def _tagged(index: int, stream):
    async with aclosing(stream):
        async for item in stream:
            yield index, item
