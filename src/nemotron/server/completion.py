"""From engine outputs to what the OpenAI API reports for one choice: its text and its tokens.

The text is decoded in the context of the prompt, so prompt + text is exactly decode(prompt + tokens)
(a completion's first piece keeps its leading space), and cut before the first stop string. Each
token's log-probability entry is released once its text has been shown, so a streamed choice and a
whole one carry the same entries and "".join(token texts) == text (the latest token's entry waits
for the next token, as the bytes of an unfinished character are only settled then).
"""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TypeVar

from nemotron.engine.async_llm import AsyncLLM
from nemotron.engine.sampling import SamplingParams
from nemotron.engine.stop import StopStringMatcher
from nemotron.server.errors import bad_request
from nemotron.tokenizer import Tokenizer

T = TypeVar("T")
LOGPROB_FLOOR = -9999.0  # JSON has no -Infinity; a token the model rules out is reported with this


def finite(logprob: float) -> float:
    return logprob if logprob >= LOGPROB_FLOOR else LOGPROB_FLOOR  # also maps NaN to the floor


@dataclass(slots=True)
class TokenEntry:
    token_id: int
    text: str  # this token's characters in the choice's text
    logprob: float
    top: list[tuple[int, float]]  # most likely alternatives (token id, log-probability)


@dataclass(slots=True)
class ChoiceDelta:
    """What one engine step added to a choice; the last one has finish_reason set."""

    index: int
    text: str = ""
    tokens: list[TokenEntry] = field(default_factory=list)
    finish_reason: str | None = None
    num_output_tokens: int = 0  # generated so far, stop tokens included (usage)
    prompt_logprobs: list[float | None] | None = None


class CompletionText:
    """One choice's shown text and token entries, token by token (see the module docstring)."""

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int], stop_strings: list[str],
                 hidden_ids: set[int]) -> None:
        self._decoder = tokenizer.stream_decoder(prompt_ids)
        self._matcher = StopStringMatcher(stop_strings)
        self._hidden = hidden_ids  # stop tokens (EOS ...): they end the text and show nothing
        self._decoded = 0  # characters decoded so far
        self._shown = 0  # characters released so far
        self._pending: list[tuple[int, TokenEntry]] = []  # (start in the decoded text, entry)
        self.stopped = False  # a stop string was found

    def add(self, token_id: int, logprob: float, top: list[tuple[int, float]]) -> tuple[str, list[TokenEntry]]:
        """Shown text and released entries after one more token."""
        if self.stopped or token_id in self._hidden:
            return "", []
        piece = self._decoder.push(token_id)
        self._pending.append((self._decoded, TokenEntry(token_id, piece, finite(logprob), top)))
        self._decoded += len(piece)
        shown, matched = self._matcher.feed(piece)
        self.stopped = matched is not None
        return shown, self._release(shown, final=self.stopped)

    def finish(self) -> tuple[str, list[TokenEntry]]:
        """What is still held back when generation ends."""
        if self.stopped:
            return "", []
        tail = self._decoder.flush()  # bytes of an unfinished character, held by the last tokens
        if tail and self._pending:
            self._pending[-1][1].text += tail
        self._decoded += len(tail)
        shown, matched = self._matcher.feed(tail)
        self.stopped = matched is not None
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


async def choice_stream(llm: AsyncLLM, tokenizer: Tokenizer, index: int, prompt_ids: list[int],
                        params: SamplingParams) -> AsyncIterator[ChoiceDelta]:
    """Generate one choice. Leaving early (or cancelling) aborts its engine request."""
    hidden = set(params.stop_token_ids) | (set() if params.ignore_eos else {tokenizer.eos_id})
    text = CompletionText(tokenizer, prompt_ids, params.stop_strings, hidden)
    generated = 0
    async with aclosing(llm.generate(prompt_ids, params)) as outputs:
        async for output in outputs:
            delta = ChoiceDelta(index, prompt_logprobs=output.prompt_logprobs)
            for k, token_id in enumerate(output.token_ids):
                generated += 1
                top = output.top_logprobs[k] if output.top_logprobs else []
                shown, entries = text.add(token_id, output.logprobs[k], top)
                delta.text += shown
                delta.tokens += entries
                if text.stopped:
                    break
            if output.finished or text.stopped:
                shown, entries = text.finish()
                delta.text += shown
                delta.tokens += entries
                delta.finish_reason = "stop" if text.stopped else output.finish_reason
            delta.num_output_tokens = generated
            yield delta
            if delta.finish_reason:
                return  # a stop string the engine had not seen yet (decoded with the prompt) ends it here


async def merge(streams: list[AsyncIterator[T]]) -> AsyncIterator[T]:
    """The items of several streams in the order they come. An error in one ends the merged stream;
    closing the merged stream cancels (and so aborts) all of them."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(stream: AsyncIterator[T]) -> None:
        try:
            async with aclosing(stream):
                async for item in stream:
                    queue.put_nowait(item)
        except Exception as err:  # handed to the consumer, which raises it
            queue.put_nowait(err)
        finally:
            queue.put_nowait(done)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is done:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def derive_seed(seed: int | None, index: int) -> int | None:
    """Choice `index` of a seeded request: reproducible, and different from its siblings."""
    if seed is None or index == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def check_context(prompt_tokens: int, new_tokens: int, context: int, field_name: str) -> None:
    if prompt_tokens + new_tokens > context:
        raise bad_request(
            f"the prompt has {prompt_tokens} tokens and {field_name} asks for {new_tokens} more, "
            f"{prompt_tokens + new_tokens} in all; the model's context is {context} tokens", field_name)
