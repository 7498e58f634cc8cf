"""Nemotron-H in the batched engine: the Mamba state slots beside the paged KV cache.

The reference is transformers' NemotronHForCausalLM (greedy generate); then the engine against
itself: chunked prefill = one shot, a mixed batch = each request alone, preemption + recompute =
no preemption, and every KV block and state slot free afterwards. The checkpoint is a transformers
save_pretrained directory with a byte-level BPE tokenizer.json (as Nemotron-H ships)."""
from __future__ import annotations

import random

import pytest
import torch

from nemotron.checkpoint.load import load_model
from nemotron.engine.generate import generate
from nemotron.engine.llm import LLM
from nemotron.engine.llm_engine import EngineConfig
from nemotron.engine.mamba_state import PREFIX_CACHING_OFF
from nemotron.engine.sampling import SamplingParams
from nemotron.model.nemotron_h import NemotronHForCausalLM
from tests.model.test_nemotron_h import SHAPES, Shape, make_hf_model

pytest.importorskip("transformers")

VOCAB = 320
HYBRID_SHAPES = [  # the model tests' layer patterns / group counts, with room for the tokenizer's vocabulary
    Shape(s.name, s.layers, s.mamba_heads, s.n_groups, s.chunk, s.kv_heads, s.hidden, VOCAB) for s in SHAPES
]
GREEDY = SamplingParams(max_new_tokens=32, greedy=True, ignore_eos=True)


def write_hybrid_dir(directory, shape: Shape, seed: int):
    """transformers' save_pretrained of a random NemotronHForCausalLM + a byte-level BPE tokenizer.json."""
    from tests.tokenizer.test_kinds import LLAMA3_PATTERN, train_byte_level_bpe

    hf_model = make_hf_model(shape, seed=seed)
    hf_model.save_pretrained(directory)
    tokenizer = train_byte_level_bpe(vocab_size=VOCAB, pattern=LLAMA3_PATTERN, specials=("<unk>", "<s>", "</s>"))
    assert tokenizer.get_vocab_size() == VOCAB
    tokenizer.save(str(directory / "tokenizer.json"))
    return hf_model


@pytest.fixture(scope="module", params=HYBRID_SHAPES, ids=lambda s: s.name)
def hybrid(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param.name)
    hf_model = write_hybrid_dir(directory, request.param, seed=11)
    return hf_model, load_model(directory, dtype="float32", device="cpu")


def prompts(count: int, seed: int, low: int = 3, high: int = 40) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(4, VOCAB) for _ in range(rng.randint(low, high))] for _ in range(count)]


def run_engine(loaded, requests, params, **config):
    llm = LLM(loaded, EngineConfig(**config))
    results = llm.generate(requests, params)
    engine = llm.engine
    assert engine.blocks.num_free_blocks == engine.blocks.num_blocks  # every KV block back
    assert engine.state_slots.num_free == engine.state_slots.num_slots  # every state slot back
    return results, engine


@torch.no_grad()
def hf_greedy(hf_model, prompt: list[int], steps: int) -> tuple[list[int], list[float]]:
    """transformers' greedy generate: the tokens and each one's log-probability."""
    out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                            eos_token_id=None, pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[0, len(prompt):].tolist()
    return tokens, [step[0].log_softmax(-1)[t].item() for step, t in zip(out.logits, tokens)]


def test_engine_greedy_equals_transformers(hybrid):
    hf_model, loaded = hybrid
    assert isinstance(loaded.model, NemotronHForCausalLM)
    requests = prompts(3, seed=1, low=5)
    params = SamplingParams(max_new_tokens=32, greedy=True, ignore_eos=True, return_logprobs=True)
    results, engine = run_engine(loaded, requests, params)
    assert engine.prefix_caching_off_reason == PREFIX_CACHING_OFF and not engine.blocks.enable_prefix_caching
    for prompt, result in zip(requests, results):
        tokens, logprobs = hf_greedy(hf_model, prompt, 32)
        assert result.token_ids == tokens
        assert result.logprobs == pytest.approx(logprobs, abs=1e-4)


def test_chunked_prefill_equals_one_shot(hybrid):
    """Prefill chunks of 7 tokens (shorter than the conv window plus a chunk, longer than both)
    carry the conv window and the SSM state across steps."""
    _, loaded = hybrid
    requests = prompts(4, seed=2, low=20, high=60)
    one_shot, _ = run_engine(loaded, requests, GREEDY, max_num_batched_tokens=512)
    chunked, _ = run_engine(loaded, requests, GREEDY, max_num_batched_tokens=7)
    assert [r.token_ids for r in chunked] == [r.token_ids for r in one_shot]
    # and the engine equals the reference decoder (HybridCache, one sequence)
    reference = [generate(loaded.model, loaded.tokenizer, p, GREEDY).token_ids for p in requests]
    assert [r.token_ids for r in one_shot] == reference


def test_mixed_batch_equals_each_request_alone(hybrid):
    _, loaded = hybrid
    requests = prompts(10, seed=3, low=1)  # one-token prompts too: a first chunk that is one row
    params = [SamplingParams(max_new_tokens=12 + i, seed=i, temperature=0.8, top_k=50, top_p=0.9, ignore_eos=True,
                             return_logprobs=True, logprobs=2) if i % 2 else
              SamplingParams(max_new_tokens=8 + i, greedy=True, ignore_eos=True) for i in range(10)]
    together, _ = run_engine(loaded, requests, params, max_num_batched_tokens=48)
    for prompt, p, result in zip(requests, params, together):
        alone, _ = run_engine(loaded, [prompt], p)
        assert result.token_ids == alone[0].token_ids
        assert result.logprobs == pytest.approx(alone[0].logprobs, abs=1e-4)


def test_preemption_and_recompute_give_identical_tokens(hybrid):
    """A KV pool too small for every sequence at once: the newest are preempted (state slot freed),
    recomputed from the first token later, and still produce the same tokens."""
    _, loaded = hybrid
    requests = prompts(6, seed=4, low=10, high=30)
    roomy, _ = run_engine(loaded, requests, GREEDY)
    tight, engine = run_engine(loaded, requests, GREEDY, num_blocks=14, block_size=8)
    assert engine.scheduler.num_preemptions > 0
    assert [r.token_ids for r in tight] == [r.token_ids for r in roomy]


def test_state_slots_bound_the_running_batch(hybrid):
    """Fewer state slots than requests: the scheduler admits only as many as there are slots."""
    _, loaded = hybrid
    requests = prompts(5, seed=5)
    llm = LLM(loaded, EngineConfig(max_num_seqs=2))
    engine = llm.engine
    assert engine.state_slots.num_slots == 2
    for prompt in requests:
        engine.add_request(prompt, GREEDY)
    while engine.has_unfinished():
        engine.step()
        assert len(engine.scheduler.running) <= 2
        assert engine.state_slots.num_free == 2 - len(engine.scheduler.running)
    assert engine.state_slots.num_free == 2


def test_streaming_and_prompt_logprobs(hybrid):
    _, loaded = hybrid
    prompt = prompts(1, seed=6, low=12)[0]
    llm = LLM(loaded)
    streamed = [chunk.token_id for chunk in llm.stream(prompt, GREEDY) if chunk.token_id is not None]
    assert streamed == llm.generate([prompt], GREEDY)[0].token_ids
    scored = llm.generate([prompt], SamplingParams(max_new_tokens=1, greedy=True, prompt_logprobs=True))[0]
    with torch.no_grad():
        logits = loaded.model(torch.tensor([prompt]))[0].log_softmax(-1)
    expected = [logits[i, prompt[i + 1]].item() for i in range(len(prompt) - 1)]
    assert scored.prompt_logprobs[0] is None
    assert scored.prompt_logprobs[1:] == pytest.approx(expected, abs=1e-4)


def test_a_reused_slot_starts_from_a_zero_state(hybrid):
    """One slot for everything: each sequence (one-token prompts included, which decode as a batched
    step) starts from zeros, not from what the slot's previous sequence left."""
    _, loaded = hybrid
    requests = [prompts(1, seed=7, low=20)[0], [5], [7, 8], [9]]
    shared, engine = run_engine(loaded, requests, GREEDY, max_num_seqs=1)
    assert engine.state_slots.num_slots == 1
    for prompt, result in zip(requests, shared):
        assert result.token_ids == run_engine(loaded, [prompt], GREEDY)[0][0].token_ids


def test_gathered_decode_without_the_workspace_gives_the_same_tokens(hybrid):
    _, loaded = hybrid
    requests = prompts(3, seed=8)
    lanes, _ = run_engine(loaded, requests, GREEDY)
    gathered, _ = run_engine(loaded, requests, GREEDY, decode_workspace=False)
    assert [r.token_ids for r in gathered] == [r.token_ids for r in lanes]


def test_a_stack_without_attention_layers(tmp_path):
    """Mamba and MLP layers only: no K/V at all (the KV blocks only count tokens), state slots alone."""
    from nemotron.checkpoint.hf import save_hf_dir
    from nemotron.model.nemotron_h import init_random_weights
    from nemotron.model.nemotron_h_config import NemotronHConfig
    from tests.tokenizer.test_kinds import LLAMA3_PATTERN, train_byte_level_bpe

    config = NemotronHConfig(vocab_size=VOCAB, hidden_size=32, layer_types=("mamba", "mlp", "mamba"),
                             intermediate_size=48, num_heads=4, num_kv_heads=2, head_dim=8, mamba_num_heads=4,
                             mamba_head_dim=8, ssm_state_size=8, n_groups=2, chunk_size=16, torch_dtype="float32")
    model = NemotronHForCausalLM(config)
    init_random_weights(model, seed=3, std=0.3)
    save_hf_dir(model.state_dict(), config, tmp_path)
    train_byte_level_bpe(vocab_size=VOCAB, pattern=LLAMA3_PATTERN, specials=("<unk>", "<s>", "</s>")).save(
        str(tmp_path / "tokenizer.json"))
    loaded = load_model(tmp_path, dtype="float32")
    requests = prompts(4, seed=9)
    results, engine = run_engine(loaded, requests, GREEDY, max_num_batched_tokens=16)
    assert engine.kv_cache.keys.numel() == 0
    for prompt, result in zip(requests, results):
        assert result.token_ids == generate(loaded.model, loaded.tokenizer, prompt, GREEDY).token_ids


def test_the_memory_budget_counts_the_state_slots(hybrid):
    """Slots take at most half the budget; the KV blocks are sized from what the slots leave."""
    from nemotron.engine.mamba_state import AttentionLayers, MambaStatePool, StateSlots
    from nemotron.engine.paged_cache import PagedKVCache

    _, loaded = hybrid
    per_slot = MambaStatePool.bytes_per_slot(loaded.config)
    budget = 5 * per_slot + 123
    engine = LLM(loaded, EngineConfig(cpu_kv_cache_bytes=budget, max_num_seqs=64)).engine
    assert engine.state_slots.num_slots == 2 and engine.kv_cache.states.nbytes() == 2 * per_slot
    per_block = PagedKVCache.bytes_per_block(AttentionLayers.of(loaded.config), 16, torch.float32)
    assert engine.blocks.num_blocks == min((budget - 2 * per_slot) // per_block, 64 * 256 // 16)
    slots = StateSlots(2)
    slot = slots.allocate()
    slots.free(slot)
    with pytest.raises(RuntimeError, match="freed twice"):
        slots.free(slot)


def test_tensor_parallelism_is_refused_with_the_reason():
    from nemotron.errors import NemotronError

    with pytest.raises(NemotronError, match="Nemotron-H models run on one device"):
        LLM("nemotron-h-8b", device="cpu", tensor_parallel_size=2)
