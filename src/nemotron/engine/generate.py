"""The reference decoder: one prompt, a contiguous KV cache, streaming text out.

Used by the CLI and as the ground truth the batched engine is tested against. It applies the same
sampler and the same stop rules (EOS, stop token ids, stop strings across token boundaries,
max_tokens, context length).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from nemotron.engine.kv_cache import ContiguousKVCache
from nemotron.engine.sampling import SamplingParams, SamplingTensors, make_generator, sample
from nemotron.engine.output import OutputTracker, Token
from nemotron.errors import NemotronError
from nemotron.model.nemotron import NemotronForCausalLM
from nemotron.model.nemotron_h import HybridCache, NemotronHForCausalLM
from nemotron.tokenizer import Tokenizer


@dataclass(slots=True)
class GenerationChunk:
    """What one decoding step adds. `text` is safe to show: it never contains (part of) a stop string."""

    text: str
    token_id: int | None  # None for the final flush chunk
    logprob: float | None
    finish_reason: str | None = None  # "stop" or "length" on the last chunk
    stop: str | int | None = None  # the stop string or token id that ended generation


@dataclass(slots=True)
class GenerationResult:
    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"
    stop: str | int | None = None


@torch.inference_mode()
def stream_generate(model: NemotronForCausalLM | NemotronHForCausalLM, tokenizer: Tokenizer, prompt_ids: list[int],
                    params: SamplingParams) -> Iterator[GenerationChunk]:
    config = model.config
    if not prompt_ids:
        raise NemotronError("the prompt is empty; give at least one token (or use add_bos)")
    context = config.max_position_embeddings
    if len(prompt_ids) >= context:
        raise NemotronError(f"the prompt has {len(prompt_ids)} tokens; the model's context is {context}")
    left = context - len(prompt_ids)
    max_new = left if params.max_tokens is None else min(params.max_tokens, left)
    if max_new == 0:
        yield GenerationChunk("", None, None, "length")
        return

    # The embedding's device and compute dtype (the first parameter: quantized layers hold buffers, an int8
    # head too, and a CPU kernel's packed int8 head no weight tensor at all).
    embedding = next(model.parameters())
    device, dtype = embedding.device, embedding.dtype
    if isinstance(model, NemotronHForCausalLM):  # Mamba states + its attention layers' growing K/V
        cache = HybridCache(config, 1, dtype, device)
    else:
        cache = ContiguousKVCache(config, 1, len(prompt_ids) + max_new, dtype, device)
    tensors = SamplingTensors.from_params([params], config.vocab_size, device, eos_id=tokenizer.eos_id,
                                          token_ids=[prompt_ids])
    generators = [make_generator(params.seed)]
    tracker = OutputTracker(tokenizer, params, max_new, prompt_ids)
    tokens = torch.tensor([prompt_ids], device=device)
    while True:
        logits = model(tokens, cache.positions(tokens.shape[1], 1), cache, last_only=True)  # (1, 1, V)
        cache.advance(tokens.shape[1])
        token, logprob = sample(logits[:, -1], tensors, generators)
        tensors.record(token)
        outcome = tracker.on_token(Token(int(token[0]), float(logprob[0])))
        yield GenerationChunk(outcome.text, int(token[0]), float(logprob[0]), outcome.finish_reason, outcome.stop)
        if outcome.finish_reason:
            return
        tokens = token.view(1, 1)


def generate(model: NemotronForCausalLM, tokenizer: Tokenizer, prompt_ids: list[int],
             params: SamplingParams) -> GenerationResult:
    result = GenerationResult(text="")
    pieces: list[str] = []
    for chunk in stream_generate(model, tokenizer, prompt_ids, params):
        pieces.append(chunk.text)
        if chunk.token_id is not None:
            result.token_ids.append(chunk.token_id)
            result.logprobs.append(chunk.logprob)
        if chunk.finish_reason:
            result.finish_reason, result.stop = chunk.finish_reason, chunk.stop
    result.text = "".join(pieces)
    return result
