"""Turning sampled tokens into visible text and deciding when a request is finished.

Shared by the reference decoder and the batched engine so both stop for exactly the same reasons:
a stop token (EOS unless ignored, or stop_token_ids), a stop string (matched on the text, also across
token boundaries), max_new_tokens, or the end of the model's context.
"""
from __future__ import annotations

from dataclasses import dataclass

from nemotron.engine.sampling import SamplingParams
from nemotron.engine.stop import StopStringMatcher
from nemotron.tokenizer import Tokenizer


@dataclass(slots=True)
class TokenOutcome:
    text: str  # newly visible text; never contains any part of a stop string
    finish_reason: str | None = None  # "stop" or "length" when the request is done
    stop: str | int | None = None  # the stop string or token id that ended it


class OutputTracker:
    def __init__(self, tokenizer: Tokenizer, params: SamplingParams, max_new_tokens: int,
                 prompt_ids: list[int]) -> None:
        self.params = params
        self.max_new_tokens = max_new_tokens  # params' value, clipped to the context left
        self.stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else {tokenizer.eos_id})
        self._matcher = StopStringMatcher(params.stop_strings)
        # Decoded in the prompt's context: a completion's first piece keeps its leading space.
        self._decoder = tokenizer.stream_decoder(prompt_ids)
        self.num_generated = 0

    def on_token(self, token_id: int) -> TokenOutcome:
        self.num_generated += 1
        if token_id in self.stop_ids:  # the stop token's own text is never shown
            text, matched = self._drain()
            return TokenOutcome(text, "stop", matched or token_id)
        text, matched = self._matcher.feed(self._decoder.push(token_id))
        if matched is None and self.num_generated >= self.max_new_tokens:
            tail, matched = self._drain()
            text += tail
            if matched is None:
                return TokenOutcome(text, "length")
        if matched is not None:
            return TokenOutcome(text, "stop", matched)
        return TokenOutcome(text)

    def _drain(self) -> tuple[str, str | None]:
        """Text still held by the detokenizer and the stop matcher when generation ends."""
        text, matched = self._matcher.feed(self._decoder.flush())
        return (text, matched) if matched is not None else (text + self._matcher.flush(), None)
