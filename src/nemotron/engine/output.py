"""Turning sampled tokens into visible text and deciding when a request is finished.

Shared by the reference decoder and the batched engine so both stop for exactly the same reasons:
a stop token (EOS unless ignored, or stop_token_ids), a stop string (matched on the text, also across
token boundaries), max_tokens, or the end of the model's context. A generated token is one `Token`
from the sampler to the caller: the tracker only fills in its text, so every token is decoded once.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nemotron.engine.sampling import SamplingParams
from nemotron.engine.stop import StopStringMatcher
from nemotron.tokenizer import CHAT_STOP_STRINGS, Tokenizer


@dataclass(slots=True)
class Token:
    """A token the engine generated (or, for prompt log-probabilities, a prompt token) with its
    log-probability under the model's own distribution (temperature 1, no filtering)."""

    id: int
    logprob: float = 0.0
    rank: int | None = None  # 1 = the most likely token; known when log-probabilities were asked for
    top_ids: Sequence[int] = ()  # the asked-for alternatives, most likely first (range(V): the whole vocabulary)
    top_logprobs: Sequence[float] = ()  # their log-probabilities
    text: str = ""  # its characters in the shown text, once shown ("" for hidden ones such as EOS)

    @property
    def top(self) -> list[tuple[int, float]]:
        """(token id, log-probability) of the alternatives."""
        return list(zip(self.top_ids, self.top_logprobs))


class ShownText:
    """A completion's visible text and shown tokens, token by token.

    The text is decoded in the context of the prompt, so prompt + text is exactly
    decode(prompt + tokens) (a completion's first piece keeps its leading space), and cut before
    the first stop string. Each token is released once its text has been shown, so a streamed
    completion and a whole one release the same tokens and "".join(token texts) == text (the
    latest token waits for the next one, as the bytes of an unfinished character are only settled
    then). Hidden tokens (stop tokens such as EOS) show nothing and are never released.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int], stop_strings: list[str] | tuple[str, ...],
                 hidden_ids: set[int], include_stop: set[str] | frozenset[str] = frozenset()) -> None:
        self._decoder = tokenizer.stream_decoder(prompt_ids)
        self._matcher = StopStringMatcher(stop_strings)
        self._include_stop = include_stop  # stop strings the text ends with when matched (vLLM's option)
        self._hidden = hidden_ids
        self._decoded = 0  # characters decoded so far
        self._shown = 0  # characters released so far
        self._pending: list[tuple[int, Token]] = []  # (start in the decoded text, token)
        self.matched: str | None = None  # the stop string found, if any

    @property
    def stopped(self) -> bool:
        return self.matched is not None

    def add(self, token: Token, match: bool = True) -> tuple[str, list[Token]]:
        """Shown text and released tokens after one more token (whose text this sets). With `match`
        off, no stop string may end in its text (within a request's min_tokens)."""
        if self.stopped or token.id in self._hidden:
            return "", []
        piece = self._decoder.push(token.id)
        token.text = piece
        self._pending.append((self._decoded, token))
        self._decoded += len(piece)
        shown, self.matched = self._matcher.feed(piece, match)
        shown += self._stop_text()
        return shown, self._release(shown, final=self.stopped)

    def finish(self, match: bool = True) -> tuple[str, list[Token]]:
        """What is still held back when generation ends."""
        if self.stopped:
            return "", []
        tail = self._decoder.flush()  # bytes of an unfinished character, held by the last tokens
        if tail and self._pending:
            self._pending[-1][1].text += tail
        self._decoded += len(tail)
        shown, self.matched = self._matcher.feed(tail, match)
        shown += self._stop_text()
        if not self.stopped:
            shown += self._matcher.flush()
        return shown, self._release(shown, final=True)

    def _stop_text(self) -> str:
        return self.matched if self.matched in self._include_stop else ""

    def _release(self, shown: str, final: bool) -> list[Token]:
        self._shown += len(shown)
        released = []
        while self._pending:
            start, entry = self._pending[0]
            if final and self.stopped:  # keep tokens that begin before the cut, clipped to it
                if start >= self._shown:
                    break
                entry.text = entry.text[:self._shown - start]
            elif not final and (start + len(entry.text) > self._shown or len(self._pending) == 1):
                break  # the last token may still hold bytes of an unfinished character
            released.append(self._pending.pop(0)[1])
        if final:
            for _, token in self._pending:  # cut off by a stop string: none of its text is shown
                token.text = ""
            self._pending.clear()
        return released


@dataclass(slots=True)
class TokenOutcome:
    text: str  # newly visible text; never contains any part of a stop string
    finish_reason: str | None = None  # "stop" or "length" when the request is done
    stop: str | int | None = None  # the stop string or token id that ended it
    shown: list[Token] = field(default_factory=list)  # tokens whose text is now shown


class OutputTracker:
    def __init__(self, tokenizer: Tokenizer, params: SamplingParams, max_new_tokens: int,
                 prompt_ids: list[int]) -> None:
        self.params = params
        self.max_new_tokens = max_new_tokens  # params' value, clipped to the context left
        self.stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else {tokenizer.eos_id})
        # include_stop_str_in_output: the caller's stop strings only, not the chat format's turn marker (vLLM's
        # chat ends at a stop token, never shown)
        include = {s for s in params.stop if s not in CHAT_STOP_STRINGS} if params.include_stop_str_in_output else set()
        self._text = ShownText(tokenizer, prompt_ids, params.stop, self.stop_ids, include)
        self.num_generated = 0

    def on_token(self, token: Token) -> TokenOutcome:
        self.num_generated += 1
        # vLLM's min_tokens: no stop string ends in the text of the first min_tokens tokens either
        match = self.num_generated > self.params.min_tokens or self.params.stop_before_min_tokens
        if token.id in self.stop_ids:  # the stop token's own text is never shown
            text, entries = self._text.finish(match)
            return TokenOutcome(text, "stop", self._text.matched or token.id, entries)
        text, entries = self._text.add(token, match)
        if not self._text.stopped and self.num_generated >= self.max_new_tokens:
            tail, more = self._text.finish(match)
            text, entries = text + tail, entries + more
            if not self._text.stopped:
                return TokenOutcome(text, "length", None, entries)
        if self._text.stopped:
            return TokenOutcome(text, "stop", self._text.matched, entries)
        return TokenOutcome(text, shown=entries)
