"""The batched engine against the reference decoders: same tokens whatever the batching, caching,
chunking or preemption."""
from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from nemotron.checkpoint.load import load_model
from nemotron.engine.generate import generate
from nemotron.engine.llm import LLM
from nemotron.engine.llm_engine import EngineConfig, RequestError
from nemotron.engine.sampling import SamplingParams


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(tiny_model_dir, dtype="float32")


def prompts(count: int, seed: int = 0, low: int = 3, high: int = 40) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(4, 320) for _ in range(rng.randint(low, high))] for _ in range(count)]


@torch.no_grad()
def full_recompute_greedy(model, prompt: list[int], steps: int) -> list[int]:
    """No cache at all: the whole sequence is run again for every token."""
    tokens = list(prompt)
    for _ in range(steps):
        tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens[len(prompt):]


def engine_outputs(loaded, requests, params, **config):
    """Each request's (only) completion, and the LLM."""
    llm = LLM(loaded, EngineConfig(**config))
    results = llm.generate(requests, params)
    assert llm.engine.blocks.num_free_blocks == llm.engine.blocks.num_blocks  # every block back
    assert all(len(r.outputs) == 1 and r.finished for r in results)
    return [r.outputs[0] for r in results], llm


GREEDY = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)


def test_greedy_equals_full_recompute(loaded):
    requests = prompts(3, seed=1)
    results, _ = engine_outputs(loaded, requests, GREEDY)
    for prompt, result in zip(requests, results):
        assert result.token_ids == full_recompute_greedy(loaded.model, prompt, 24)
        assert result.finish_reason == "length"


def test_mixed_batch_equals_each_request_alone(loaded):
    requests = prompts(12, seed=2)
    params = [SamplingParams(max_tokens=16 + i, seed=i, temperature=0.8, top_k=50, top_p=0.9,
                             repetition_penalty=1.1, ignore_eos=True) if i % 2 else
              SamplingParams(max_tokens=10 + i, temperature=0, ignore_eos=True) for i in range(12)]
    together, _ = engine_outputs(loaded, requests, params)
    for prompt, p, result in zip(requests, params, together):
        alone = generate(loaded.model, loaded.tokenizer, prompt, p)
        assert result.token_ids == alone.token_ids
        assert result.text == alone.text


def test_prefix_cache_hits_give_identical_outputs(loaded):
    shared = prompts(1, seed=3, low=70, high=70)[0]
    requests = [shared + tail for tail in prompts(6, seed=4, low=2, high=9)]
    cold, _ = engine_outputs(loaded, requests, GREEDY, enable_prefix_caching=False)
    llm = LLM(loaded, EngineConfig(max_num_seqs=1))  # one at a time: later ones hit
    warm = llm.generate(requests, GREEDY)
    assert [r.outputs[0].token_ids for r in warm] == [r.token_ids for r in cold]
    assert all(r.num_cached_tokens == 64 for r in warm[1:])  # 4 full blocks of 16
    assert llm.engine.blocks.prefix_hits >= 5 * 64


def test_preemption_under_a_tiny_pool_gives_identical_outputs(loaded):
    requests = prompts(8, seed=5, low=10, high=30)
    params = SamplingParams(max_tokens=40, seed=3, temperature=0.9, ignore_eos=True)
    roomy, _ = engine_outputs(loaded, requests, params)
    tight, llm = engine_outputs(loaded, requests, params, num_blocks=6, block_size=16)
    assert llm.engine.scheduler.num_preemptions > 0
    assert [r.token_ids for r in tight] == [r.token_ids for r in roomy]


def test_chunked_prefill_gives_identical_outputs(loaded):
    requests = prompts(5, seed=6, low=30, high=60)
    whole, _ = engine_outputs(loaded, requests, GREEDY)
    chunked, _ = engine_outputs(loaded, requests, GREEDY, max_num_batched_tokens=7)
    assert [r.token_ids for r in chunked] == [r.token_ids for r in whole]


def test_stop_string_spanning_tokens(loaded):
    prompt = prompts(1, seed=7)[0]
    free_run = generate(loaded.model, loaded.tokenizer, prompt, GREEDY)
    # A stop string that starts inside one token's text and ends inside a later one.
    pieces = [loaded.tokenizer.decode(free_run.token_ids[:i]) for i in range(1, 25)]
    text = free_run.text
    cut = next(i for i in range(3, len(pieces) - 1) if 0 < len(pieces[i]) < len(pieces[i + 1]))
    stop = text[len(pieces[cut]) - 1:len(pieces[cut]) + 1]  # last char of one token, first of the next
    expected = text[:text.index(stop)]
    params = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True, stop=[stop])
    [result], _ = engine_outputs(loaded, [prompt], params)
    assert (result.text, result.finish_reason, result.stop_reason) == (expected, "stop", stop)


@pytest.mark.parametrize("top_n", [0, 3, -1])
def test_prompt_logprobs_match_a_full_forward(loaded, top_n):
    """Prompt log-probabilities come from the engine's own prefill chunks (here 6 tokens, and at most
    4 scored positions a step): each equals a plain forward pass's log-softmax, alternatives too."""
    prompt = prompts(1, seed=8, low=20, high=20)[0]
    llm = LLM(loaded, EngineConfig(max_num_batched_tokens=6))
    llm.engine.scheduler.config = dataclasses.replace(llm.engine.scheduler.config, max_scored_tokens=4)
    [result] = llm.generate([prompt], SamplingParams(max_tokens=0, prompt_logprobs=top_n))
    with torch.no_grad():
        logprobs = loaded.model(torch.tensor([prompt]))[0].log_softmax(-1)  # (T, V)
    assert result.prompt_logprobs[0] is None and len(result.prompt_logprobs) == len(prompt)
    for i, entry in enumerate(result.prompt_logprobs[1:]):
        row, token = logprobs[i], prompt[i + 1]
        assert entry[token].logprob == pytest.approx(row[token].item(), abs=1e-5)
        assert entry[token].rank == int((row > row[token]).sum()) + 1
        wanted = 320 if top_n == -1 else top_n
        assert len(entry) in (wanted, wanted + 1)  # the alternatives, and the token itself if not among them
        best = row.topk(wanted)
        for rank, (t, value) in enumerate(zip(best.indices.tolist(), best.values.tolist()), start=1):
            assert entry[t].logprob == pytest.approx(value, abs=1e-5)
            assert entry[t].rank == rank or row[t] == best.values[entry[t].rank - 1]  # ties may swap
    assert result.outputs[0].token_ids == [] and result.outputs[0].finish_reason == "length"


def test_top_logprobs_are_reported(loaded):
    params = SamplingParams(max_tokens=3, temperature=0, logprobs=4, ignore_eos=True)
    [result], _ = engine_outputs(loaded, prompts(1, seed=9), params)
    assert len(result.logprobs) == 3
    for token, entry in zip(result.token_ids, result.logprobs):
        assert len(entry) == 4  # greedy: the chosen token is the most likely alternative
        assert list(entry)[0] == token and entry[token].rank == 1
        assert [lp.rank for lp in entry.values()] == [1, 2, 3, 4]
        values = [lp.logprob for lp in entry.values()]
        assert values == sorted(values, reverse=True)
    assert result.cumulative_logprob == pytest.approx(sum(e[t].logprob for t, e in zip(result.token_ids,
                                                                                           result.logprobs)))


def test_reported_alternatives_cost_one_log_softmax_per_step(loaded):
    """With logprobs asked for, a decode step's chosen log-probabilities, ranks and alternatives come
    from one log-softmax of the step's logits (vocabulary-wide: at 256k x 256 rows, tens of ms)."""
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") == "log_softmax":
                Count.calls += 1
            return func(*args, **(kwargs or {}))

    llm = LLM(loaded, EngineConfig())
    params = SamplingParams(max_tokens=4, temperature=0, logprobs=2, ignore_eos=True)
    with Count():
        [result] = llm.generate(prompts(1, seed=4), params)
    assert len(result.outputs[0].token_ids) == 4
    assert Count.calls == 4  # one per sampled token (the prefill's, then three decode steps)


@pytest.mark.parametrize("prompt, message", [([], "empty"), ([5] * 300, "context"), ([999], "token ids")])
def test_bad_requests_are_refused(loaded, prompt, message):
    llm = LLM(loaded, EngineConfig(num_blocks=4))
    with pytest.raises(RequestError, match=message):
        llm.generate([prompt], SamplingParams(max_tokens=4))
    assert not llm.engine.has_unfinished()


def test_request_larger_than_the_pool_is_refused(loaded):
    llm = LLM(loaded, EngineConfig(num_blocks=2, block_size=16))
    with pytest.raises(RequestError, match="KV cache"):
        llm.generate([[5] * 20], SamplingParams(max_tokens=20))


def test_token_entries_add_up_to_the_streamed_text_and_stop_at_stop_strings(loaded):
    """The per-token entries the server reports come from the engine: they spell the text exactly."""
    llm = LLM(loaded, EngineConfig(max_num_seqs=4))
    requests = prompts(8, seed=30)
    free = [r.outputs[0] for r in llm.generate(requests, SamplingParams(max_tokens=20, seed=5, ignore_eos=True))]
    stops = [c.text[3:5] if len(c.text) > 6 else "zz" for c in free]  # strings the free run did produce
    engine = llm.engine
    ids = [engine.add_request(engine.check_request(r, SamplingParams(max_tokens=20, seed=5, ignore_eos=True,
                                                                     stop=[s])))
           for r, s in zip(requests, stops)]
    texts, entries, reasons = {i: "" for i in ids}, {i: [] for i in ids}, {}
    while engine.has_unfinished():
        for out in engine.step():
            texts[out.request_id] += out.text
            entries[out.request_id] += out.shown
            if out.finished:
                reasons[out.request_id] = (out.finish_reason, out.stop)
    for request_id, stop, whole in zip(ids, stops, free):
        assert "".join(e.text for e in entries[request_id]) == texts[request_id]
        if stop in whole.text:
            assert texts[request_id] == whole.text[:whole.text.index(stop)]
            assert reasons[request_id] == ("stop", stop)
        else:
            assert texts[request_id] == whole.text and reasons[request_id][0] == "length"


def test_preempted_requests_keep_their_prompt_logprobs_once(loaded):
    """A request preempted after its prompt was scored is recomputed without scoring it again."""
    requests = prompts(8, seed=5, low=10, high=30)
    params = SamplingParams(max_tokens=40, seed=3, temperature=0.9, ignore_eos=True, prompt_logprobs=1)
    roomy = LLM(loaded, EngineConfig()).generate(requests, params)
    llm = LLM(loaded, EngineConfig(num_blocks=6, block_size=16))
    tight = llm.generate(requests, params)
    assert llm.engine.scheduler.num_preemptions > 0
    for prompt, got, want in zip(requests, tight, roomy):
        assert len(got.prompt_logprobs) == len(prompt) and got.outputs[0].token_ids == want.outputs[0].token_ids
        assert [list(e) for e in got.prompt_logprobs[1:]] == [list(e) for e in want.prompt_logprobs[1:]]


def test_engine_steps_on_cuda_leave_cudnn_attention_out():
    """cuDNN's SDPA plans each new prompt shape on the host; the runner's CUDA forward goes without it.
    Only torch's global backend flags are read here: no GPU is needed."""
    from nemotron.engine.model_runner import attention_backends

    assert torch.backends.cuda.cudnn_sdp_enabled()
    with attention_backends(torch.device("cuda")):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled()
    with attention_backends(torch.device("cpu")):
        assert torch.backends.cuda.cudnn_sdp_enabled()
