"""Nemotron-H against a Nemotron-4 of the same parameter count as the context grows: state held per
sequence and decode tokens/s, through the serving engine (paged KV cache + Mamba state slots,
continuous batching) and at the model level (the models' own single-sequence decode caches).

    python benchmarks/hybrid_long_context.py --contexts 1024 2048 4096 8192 --steps 16 --batch 2

The hybrid keeps K/V for its few attention layers only, plus a Mamba state whose size does not
depend on the context; Nemotron-4 keeps K/V for every layer. Both run random weights in fp32.
Engine memory per sequence is what the engine holds for one running sequence: its KV blocks
(block_size tokens each, all attention layers) plus, for the hybrid, its state slot.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from nemotron.assets import DEMO_MODEL_DIR
from nemotron.engine.kv_cache import ContiguousKVCache
from nemotron.engine.llm_engine import EngineConfig, LLMEngine
from nemotron.engine.mamba_state import AttentionLayers, MambaStatePool
from nemotron.engine.sampling import SamplingParams
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import NemotronForCausalLM, init_random_weights
from nemotron.model.nemotron_h import HybridCache, NemotronHForCausalLM
from nemotron.model.nemotron_h import init_random_weights as init_hybrid
from nemotron.model.presets import HYBRID_PRESETS
from nemotron.tokenizer import Tokenizer

# Nemotron-H 8B's layer pattern (24 Mamba-2, 4 attention, 24 MLP) at a CPU-sized width.
HYBRID = HYBRID_PRESETS["nemotron-h-8b"].replace(
    vocab_size=32000, hidden_size=256, intermediate_size=1024, num_heads=4, num_kv_heads=2, head_dim=64,
    mamba_num_heads=8, mamba_head_dim=64, ssm_state_size=64, n_groups=2, max_position_embeddings=16384,
    torch_dtype="float32")


def matching_nemotron4(hybrid) -> ModelConfig:
    """Same width and vocabulary; as many Nemotron-4 layers as give the same parameter count."""
    base = ModelConfig(vocab_size=hybrid.vocab_size, hidden_size=hybrid.hidden_size,
                       intermediate_size=hybrid.intermediate_size, num_layers=1, num_heads=hybrid.num_heads,
                       num_kv_heads=hybrid.num_kv_heads, head_dim=hybrid.head_dim,
                       max_position_embeddings=hybrid.max_position_embeddings, torch_dtype="float32")
    per_layer = base.parameter_counts()["layers"]
    hybrid_layers = hybrid.num_parameters() - 2 * hybrid.vocab_size * hybrid.hidden_size
    return base.replace(num_layers=max(1, round(hybrid_layers / per_layer)))


@torch.no_grad()
def run(model, make_cache, context: int, steps: int, prefill_chunk: int) -> tuple[float, int]:
    """Prefill `context` random tokens in chunks, then time `steps` greedy decode steps -> (tok/s, state bytes)."""
    prompt = torch.randint(4, model.config.vocab_size, (1, context), generator=torch.Generator().manual_seed(0))
    cache, step = make_cache(context + steps)
    for start in range(0, context, prefill_chunk):
        logits = step(prompt[:, start:start + prefill_chunk])
    token = logits[:, -1:].argmax(-1)
    begin = time.perf_counter()
    for _ in range(steps):
        token = step(token)[:, -1:].argmax(-1)
    return steps / (time.perf_counter() - begin), cache_bytes(cache, context)


def cache_bytes(cache, context: int) -> int:
    if isinstance(cache, HybridCache):
        return cache.state_bytes()
    per_token = cache.keys[:, :, 0].numel() * cache.keys.element_size() * 2  # K and V, every layer
    return per_token * context


def hybrid_runner(model: NemotronHForCausalLM):
    def make(max_len: int):
        cache = HybridCache(model.config, 1)
        return cache, lambda ids: model(ids, cache=cache, last_only=True)
    return make


def nemotron4_runner(model: NemotronForCausalLM):
    def make(max_len: int):
        cache = ContiguousKVCache(model.config, 1, max_len, torch.float32)

        def step(ids):
            logits = model(ids, cache.positions(ids.shape[1], 1), cache, last_only=True)
            cache.advance(ids.shape[1])
            return logits
        return cache, step
    return make


@torch.no_grad()
def prefilled_engine(model, tokenizer: Tokenizer, context: int, steps: int, batch: int, block_size: int,
                     chunk: int) -> tuple[LLMEngine, int, int]:
    """An LLMEngine holding `batch` sequences of `context` random tokens, prefilled (in chunks) up to
    every sequence's first token -> (engine, KV bytes and Mamba state bytes it holds per sequence)."""
    blocks = batch * -(-(context + steps) // block_size)
    engine = LLMEngine(model, tokenizer, EngineConfig(block_size=block_size, num_blocks=blocks, max_num_seqs=batch,
                                                      max_num_batched_tokens=chunk, enable_prefix_caching=False))
    generator = torch.Generator().manual_seed(context)
    for _ in range(batch):
        prompt = torch.randint(4, model.config.vocab_size, (context,), generator=generator).tolist()
        engine.add_request(prompt, SamplingParams(max_new_tokens=steps + 1, greedy=True, ignore_eos=True))
    started = 0
    while started < batch:
        started += sum(1 for out in engine.step() if out.token_ids and out.num_output_tokens == 1)
    kv = (engine.blocks.num_blocks - engine.blocks.num_free_blocks) * engine.kv_cache.bytes_per_block(
        _kv_view(model), block_size, engine.kv_cache.keys.dtype)
    state = 0
    if engine.kv_cache.states is not None:  # one slot per running sequence, whatever the context
        state = len(engine.scheduler.running) * MambaStatePool.bytes_per_slot(model.config)
    return engine, kv // batch, state // batch


@torch.no_grad()
def decode_speeds(engines: list[LLMEngine], batch: int) -> list[float]:
    """Decode steps of the engines taken in turn (so a busy machine slows them alike) -> tokens/s of
    each over its batch, from its median step time."""
    times: list[list[float]] = [[] for _ in engines]
    while any(e.has_unfinished() for e in engines):
        for engine, spent in zip(engines, times):
            if engine.has_unfinished():
                begin = time.perf_counter()
                if sum(len(out.token_ids) for out in engine.step()) == batch:
                    spent.append(time.perf_counter() - begin)
    return [batch / statistics.median(spent) for spent in times]


def _kv_view(model):
    return AttentionLayers.of(model.config) if isinstance(model, NemotronHForCausalLM) else model.config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--steps", type=int, default=16, help="decode steps timed per context")
    parser.add_argument("--prefill-chunk", type=int, default=1024, help="prefill chunk / engine token budget")
    parser.add_argument("--batch", type=int, default=2, help="sequences decoding together in the engine")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--level", choices=("engine", "model", "both"), default="both")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = Tokenizer.from_file(DEMO_MODEL_DIR / "tokenizer.model")  # the engine detokenizes what it generates
    config = HYBRID.replace(vocab_size=tokenizer.vocab_size)
    hybrid = NemotronHForCausalLM(config).eval()
    init_hybrid(hybrid)
    dense_config = matching_nemotron4(config)
    dense = NemotronForCausalLM(dense_config).eval()
    init_random_weights(dense)
    print(f"Nemotron-H  {config.num_parameters() / 1e6:.1f}M parameters, pattern {config.pattern}")
    print(f"Nemotron-4  {dense_config.num_parameters() / 1e6:.1f}M parameters, {dense_config.num_layers} layers")
    header = (f"{'context':>8} {'H MB/seq':>9} {'4 MB/seq':>9} {'ratio':>6}   {'H tok/s':>8} {'4 tok/s':>8} "
              f"{'speedup':>8}")
    if args.level in ("engine", "both"):
        print(f"\nengine: {args.batch} sequences decoding together, KV blocks of {args.block_size} tokens; "
              f"H MB/seq = Mamba state slot + attention KV blocks")
        print(f"{'context':>8} {'H state':>8} {'H KV':>7} {'H MB/seq':>9} {'4 MB/seq':>9} {'ratio':>6}   "
              f"{'H tok/s':>8} {'4 tok/s':>8} {'speedup':>8}")
        for context in args.contexts:
            shape = (context, args.steps, args.batch, args.block_size, args.prefill_chunk)
            h_engine, h_kv, h_state = prefilled_engine(hybrid, tokenizer, *shape)
            d_engine, d_kv, _ = prefilled_engine(dense, tokenizer, *shape)
            h_speed, d_speed = decode_speeds([h_engine, d_engine], args.batch)
            del h_engine, d_engine
            h_bytes = h_kv + h_state
            print(f"{context:>8} {h_state / 1e6:>8.2f} {h_kv / 1e6:>7.2f} {h_bytes / 1e6:>9.2f} {d_kv / 1e6:>9.2f} "
                  f"{d_kv / h_bytes:>5.1f}x   {h_speed:>8.1f} {d_speed:>8.1f} {h_speed / d_speed:>7.2f}x", flush=True)
    if args.level == "engine":
        return
    print("\nmodel: one sequence, the models' own decode caches")
    print(header)
    for context in args.contexts:
        h_speed, h_bytes = run(hybrid, hybrid_runner(hybrid), context, args.steps, args.prefill_chunk)
        d_speed, d_bytes = run(dense, nemotron4_runner(dense), context, args.steps, args.prefill_chunk)
        print(f"{context:>8} {h_bytes / 1e6:>9.2f} {d_bytes / 1e6:>9.2f} {d_bytes / h_bytes:>5.1f}x   "
              f"{h_speed:>8.1f} {d_speed:>8.1f} {h_speed / d_speed:>7.2f}x")


if __name__ == "__main__":
    main()
