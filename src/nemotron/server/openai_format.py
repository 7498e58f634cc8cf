"""OpenAI response shapes: completion and chat-completion objects, their stream chunks, logprobs."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from nemotron.engine.output import Token
from nemotron.engine.request_output import token_text
from nemotron.server.completion import finite
from nemotron.tokenizer import Tokenizer


@dataclass(slots=True)
class Envelope:
    """The fields every object of one response (or of all its chunks) shares."""

    object: str
    model: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        prefix = "chatcmpl" if self.object.startswith("chat") else "cmpl"
        self.id = self.id or f"{prefix}-{uuid.uuid4().hex}"

    def wrap(self, choices: list[dict], usage: dict | None = None, chunk: bool = False) -> dict:
        """A response object, or with `chunk` a stream chunk (chat chunks have their own object name)."""
        name = "chat.completion.chunk" if chunk and self.object == "chat.completion" else self.object
        body = {"id": self.id, "object": name, "created": self.created, "model": self.model, "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return body


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


# ---- completions (legacy) logprobs: parallel lists ----------------------------------------------
@dataclass(slots=True)
class CompletionLogprobs:
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)

    def add(self, text: str, logprob: float | None, top: dict[str, float] | None, offset: int) -> None:
        self.tokens.append(text)
        self.token_logprobs.append(logprob)
        self.top_logprobs.append(top)
        self.text_offset.append(offset)

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "token_logprobs": self.token_logprobs, "top_logprobs": self.top_logprobs,
                "text_offset": self.text_offset}


def top_dict(tokenizer: Tokenizer, top: Iterable[tuple[int, float]], chosen: tuple[int, float] | None,
             chosen_text: str | None = None) -> dict:
    """{token text: log-probability} of the alternatives plus the chosen token (as OpenAI: up to
    logprobs + 1 entries); where two tokens share a text the likelier one wins. The chosen token is
    keyed by `chosen_text`, its text in `tokens` (clients look it up there: lm-eval's is_greedy), which
    differs from its piece for a byte piece ("" or "é" where the piece is <0xC3>)."""
    result: dict[str, float] = {}
    for token_id, logprob in [*top, *([chosen] if chosen else [])]:
        key = chosen_text if chosen and chosen_text is not None and token_id == chosen[0] else \
            token_text(tokenizer, token_id)
        result[key] = max(result.get(key, -float("inf")), finite(logprob))
    return result


def add_generated(logprobs: CompletionLogprobs, tokenizer: Tokenizer, tokens: list[Token],
                  offset: int, with_top: bool) -> int:
    """Append generated tokens starting at character `offset`; returns the offset after them."""
    for token in tokens:
        top = top_dict(tokenizer, token.top, (token.id, token.logprob), token.text) if with_top else None
        logprobs.add(token.text, finite(token.logprob), top, offset)
        offset += len(token.text)
    return offset


# ---- chat logprobs: a list of token objects -----------------------------------------------------
def chat_logprob_content(tokenizer: Tokenizer, tokens: list[Token]) -> list[dict]:
    return [{"token": t.text, "logprob": finite(t.logprob), "bytes": list(t.text.encode()),
             "top_logprobs": [_chat_alternative(tokenizer, i, lp, t) for i, lp in t.top]} for t in tokens]


def _chat_alternative(tokenizer: Tokenizer, token_id: int, logprob: float, chosen: Token) -> dict:
    text = chosen.text if token_id == chosen.id else token_text(tokenizer, token_id)  # as the entry's "token"
    return {"token": text, "logprob": finite(logprob), "bytes": list(text.encode())}
