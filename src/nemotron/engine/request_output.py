"""What `LLM.generate`, `LLM.chat` and `AsyncLLM.generate` return, shaped as vLLM's `vllm.outputs` so
code written for vLLM reads our results unchanged: `RequestOutput.outputs[i]` is a `CompletionOutput`
with `.text`, `.token_ids`, `.cumulative_logprob`, `.logprobs` (per token, {token id: Logprob}),
`.finish_reason` ("stop" or "length") and `.stop_reason` (the stop string or stop token id; None for EOS).

Built from the engine's step outputs by a `CompletionBuilder` per completion, as they come.
"""
from __future__ import annotations

from dataclasses import dataclass

from nemotron.engine.llm_engine import StepOutput
from nemotron.engine.output import Token
from nemotron.engine.sampling import RequestOutputKind, SamplingParams
from nemotron.tokenizer import Tokenizer

_SPACE = "\u2581"


@dataclass(slots=True)
class Logprob:
    """A token's log-probability, its rank in the model's distribution (1 = most likely) and its text."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


SampleLogprobs = list[dict[int, Logprob]]
PromptLogprobs = list[dict[int, Logprob] | None]


@dataclass(slots=True)
class CompletionOutput:
    index: int  # which of the request's n completions
    text: str
    token_ids: list[int]  # every generated token, a stop token included (its text is not in `text`)
    cumulative_logprob: float | None  # sum of the generated tokens' log-probabilities (with logprobs set)
    logprobs: SampleLogprobs | None  # per generated token, with SamplingParams.logprobs set
    finish_reason: str | None = None  # "stop" or "length"
    stop_reason: int | str | None = None  # the stop string or stop token id; None for EOS or length

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(slots=True)
class RequestOutput:
    request_id: str
    prompt: str | None  # None when the prompt was given as token ids
    prompt_token_ids: list[int]
    prompt_logprobs: PromptLogprobs | None  # with SamplingParams.prompt_logprobs set; None for the first token
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache


def token_text(tokenizer: Tokenizer, token_id: int) -> str:
    """A token's text on its own (for alternatives, which have no place in the text): its piece
    with SentencePiece's "▁" as a space; byte pieces stay as written (`<0xE2>`)."""
    return tokenizer.id_to_piece(token_id).replace(_SPACE, " ")


def logprob_dict(token: Token, tokenizer: Tokenizer) -> dict[int, Logprob]:
    """vLLM's per-position dict: the token itself first, then its alternatives (most likely first)."""
    entries = {token.id: Logprob(token.logprob, token.rank, token_text(tokenizer, token.id))}
    ranks = _ranks(token)
    for token_id, value, rank in zip(token.top_ids, token.top_logprobs, ranks):
        if token_id not in entries:
            entries[token_id] = Logprob(value, rank, token_text(tokenizer, token_id))
    return entries


def _ranks(token: Token) -> list[int]:
    if not isinstance(token.top_ids, range):  # most likely first
        return list(range(1, len(token.top_ids) + 1))
    order = sorted(range(len(token.top_logprobs)), key=token.top_logprobs.__getitem__, reverse=True)
    ranks = [0] * len(order)  # the whole vocabulary in id order
    for rank, token_id in enumerate(order, start=1):
        ranks[token_id] = rank
    return ranks


class CompletionBuilder:
    """Collects one completion's step outputs; `output()` is the completion so far (or, with
    RequestOutputKind.DELTA, what the latest step added). Each token's logprob dict is built once."""

    def __init__(self, index: int, params: SamplingParams, eos_id: int, tokenizer: Tokenizer) -> None:
        self.index, self.params, self.eos_id, self.tokenizer = index, params, eos_id, tokenizer
        self.pieces: list[str] = []
        self.token_ids: list[int] = []
        # As vLLM: logprobs and their sum only when log-probabilities were asked for.
        self.logprobs: SampleLogprobs | None = [] if params.logprobs is not None else None
        self.cumulative: float | None = 0.0 if params.logprobs is not None else None
        self.last: StepOutput | None = None

    @property
    def finished(self) -> bool:
        return self.last is not None and self.last.finished

    def add(self, output: StepOutput) -> None:
        self.pieces.append(output.text)
        self.token_ids += [t.id for t in output.tokens]
        if self.logprobs is not None:
            self.logprobs += [logprob_dict(t, self.tokenizer) for t in output.tokens]
            self.cumulative += sum(t.logprob for t in output.tokens)
        self.last = output

    def output(self, kind: RequestOutputKind = RequestOutputKind.CUMULATIVE) -> CompletionOutput:
        last = self.last
        stop = last.stop
        if stop == self.eos_id and stop not in self.params.stop_token_ids:
            stop = None  # as vLLM: EOS is no stop reason
        if kind is RequestOutputKind.DELTA:
            new = len(last.tokens)
            logprobs = None if self.logprobs is None else self.logprobs[len(self.logprobs) - new:]
            text, ids = last.text, self.token_ids[len(self.token_ids) - new:]
        else:  # copies: an output handed out earlier does not change under its holder
            logprobs = None if self.logprobs is None else list(self.logprobs)
            text, ids = "".join(self.pieces), list(self.token_ids)
        return CompletionOutput(self.index, text, ids, self.cumulative, logprobs, last.finish_reason, stop)


def prompt_logprob_dicts(tokens: list[Token | None] | None, tokenizer: Tokenizer) -> PromptLogprobs | None:
    if tokens is None:
        return None
    return [None if t is None else logprob_dict(t, tokenizer) for t in tokens]
