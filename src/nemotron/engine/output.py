"""Turning sampled tokens into visible text and deciding when a request is finished.

Shared by the reference decoder and the batched engine so both stop for exactly the same reasons:
a stop token (EOS unless ignored, or stop_token_ids), a stop string (matched on the text, also across
token boundaries), max_new_tokens, or the end of the model's context. The server reports text and
per-token entries from here too, so every token is decoded once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nemotron.engine.sampling import SamplingParams
from nemotron.engine.stop import StopStringMatcher
from nemotron.tokenizer import Tokenizer


@dataclass(slots=True)
class TokenEntry:
    """A generated token as it appears in the shown text (for per-token log-probability reports)."""

    token_id: int
    text: str  # this token's characters in the shown text
    logprob: float
    top: list[tuple[int, float]]  # most likely alternatives (token id, log-probability)


class ShownText:
    """A completion's visible text and token entries, token by token.

    The text is decoded in the context of the prompt, so prompt + text is exactly
    decode(prompt + tokens) (a completion's first piece keeps its leading space), and cut before
    the first stop string. Each token's entry is released once its text has been shown, so a
    streamed completion and a whole one carry the same entries and "".join(entry texts) == text
    (the latest token's entry waits for the next token, as the bytes of an unfinished character
    are only settled then). Hidden tokens (stop tokens such as EOS) show nothing and get no entry.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int], stop_strings: list[str] | tuple[str, ...],
                 hidden_ids: set[int]) -> None:
        self._decoder = tokenizer.stream_decoder(prompt_ids)
        self._matcher = StopStringMatcher(stop_strings)
        self._hidden = hidden_ids
        self._decoded = 0  # characters decoded so far
        self._shown = 0  # characters released so far
        self._pending: list[tuple[int, TokenEntry]] = []  # (start in the decoded text, entry)
        self.matched: str | None = None  # the stop string found, if any

    @property
    def stopped(self) -> bool:
        return self.matched is not None

    def add(self, token_id: int, logprob: float = 0.0,
            top: list[tuple[int, float]] | None = None) -> tuple[str, list[TokenEntry]]:
        """Shown text and released entries after one more token."""
        if self.stopped or token_id in self._hidden:
            return "", []
        piece = self._decoder.push(token_id)
        self._pending.append((self._decoded, TokenEntry(token_id, piece, logprob, top or [])))
        self._decoded += len(piece)
        shown, self.matched = self._matcher.feed(piece)
        return shown, self._release(shown, final=self.stopped)

    def finish(self) -> tuple[str, list[TokenEntry]]:
        """What is still held back when generation ends."""
        if self.stopped:
            return "", []
        tail = self._decoder.flush()  # bytes of an unfinished character, held by the last tokens
        if tail and self._pending:
            self._pending[-1][1].text += tail
        self._decoded += len(tail)
        shown, self.matched = self._matcher.feed(tail)
        if not self.stopped:
            shown += self._matcher.flush()
        return shown, self._release(shown, final=True)

    def _release(self, shown: str, final: bool) -> list[TokenEntry]:
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
            self._pending.clear()
        return released


@dataclass(slots=True)
class TokenOutcome:
    text: str  # newly visible text; never contains any part of a stop string
    finish_reason: str | None = None  # "stop" or "length" when the request is done
    stop: str | int | None = None  # the stop string or token id that ended it
    tokens: list[TokenEntry] = field(default_factory=list)  # entries whose text is now shown


class OutputTracker:
    def __init__(self, tokenizer: Tokenizer, params: SamplingParams, max_new_tokens: int,
                 prompt_ids: list[int]) -> None:
        self.params = params
        self.max_new_tokens = max_new_tokens  # params' value, clipped to the context left
        self.stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else {tokenizer.eos_id})
        self._text = ShownText(tokenizer, prompt_ids, params.stop_strings, self.stop_ids)
        self.num_generated = 0

    def on_token(self, token_id: int, logprob: float = 0.0, top: list[tuple[int, float]] | None = None) -> TokenOutcome:
        self.num_generated += 1
        if token_id in self.stop_ids:  # the stop token's own text is never shown
            text, entries = self._text.finish()
            return TokenOutcome(text, "stop", self._text.matched or token_id, entries)
        text, entries = self._text.add(token_id, logprob, top)
        if not self._text.stopped and self.num_generated >= self.max_new_tokens:
            tail, more = self._text.finish()
            text, entries = text + tail, entries + more
            if not self._text.stopped:
                return TokenOutcome(text, "length", None, entries)
        if self._text.stopped:
            return TokenOutcome(text, "stop", self._text.matched, entries)
        return TokenOutcome(text, tokens=entries)
