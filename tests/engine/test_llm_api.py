"""The Python API as vLLM's users write it: LLM(...) keywords, SamplingParams names, RequestOutput /
CompletionOutput / Logprob results, n completions, chat, prompt log-probabilities, one-line errors."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from nemotron import LLM, CompletionOutput, EngineConfig, Logprob, NemotronError, RequestOutput, SamplingParams
from nemotron.checkpoint.load import load_model
from nemotron.engine.llm_engine import RequestError
from nemotron.engine.sampling import SamplingParamsError, derive_seed
from nemotron.errors import ConfigError
from nemotron.tokenizer import render_chat
from tests.server.conftest import scripted_model_dir  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def llm(tiny_model_dir):
    return LLM(str(tiny_model_dir), dtype="float32", device="cpu", max_model_len=128, gpu_memory_utilization=0.5,
               max_num_seqs=8, block_size=8, enforce_eager=True, seed=0)


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return load_model(tiny_model_dir, dtype="float32").model


def test_import_is_cheap_and_exports_the_api():
    code = ("import sys, nemotron; assert 'torch' not in sys.modules; "
            "from nemotron import LLM, SamplingParams, AsyncLLM, EngineConfig, RequestOutput, RequestOutputKind; "
            "print(LLM.__name__)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "LLM\n"


def test_keywords_reach_the_engine(llm):
    config = llm.engine.config
    assert llm.engine.context_len == 128 and config.max_model_len == 128
    assert (config.gpu_memory_fraction, config.max_num_seqs, config.block_size, config.cuda_graphs) == (0.5, 8, 8, False)
    with pytest.raises(RequestError, match="context is 128"):
        llm.generate([[5] * 130])


def test_results_have_vllms_shape(llm):
    results = llm.generate(["The cat", "A dog runs"], SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))
    assert [r.prompt for r in results] == ["The cat", "A dog runs"]
    for result in results:
        assert isinstance(result, RequestOutput) and result.finished and result.prompt_logprobs is None
        assert result.prompt_token_ids == llm.tokenizer.encode(result.prompt)
        [out] = result.outputs
        assert isinstance(out, CompletionOutput) and out.index == 0 and out.finished()
        assert len(out.token_ids) == 5 and (out.finish_reason, out.stop_reason) == ("length", None)
        assert out.logprobs is None and out.cumulative_logprob is None  # as vLLM: only when asked for
        whole = llm.tokenizer.decode(result.prompt_token_ids + out.token_ids)
        assert whole == llm.tokenizer.decode(result.prompt_token_ids) + out.text
    assert len({r.request_id for r in results}) == 2


def test_prompt_forms_agree(llm):
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    ids = llm.tokenizer.encode("The river")
    results = llm.generate(["The river", {"prompt": "The river"}, {"prompt_token_ids": ids}, ids], params)
    assert [r.prompt for r in results] == ["The river", "The river", None, None]
    assert len({tuple(r.outputs[0].token_ids) for r in results}) == 1
    [single] = llm.generate("The river", params)
    assert single.outputs == results[0].outputs


def test_n_completions_are_seeded_each_and_reproducible(llm):
    params = SamplingParams(n=4, temperature=1.0, seed=7, max_tokens=8, ignore_eos=True)
    [first] = llm.generate("The moon", params)
    [again] = llm.generate("The moon", params)
    assert [o.index for o in first.outputs] == [0, 1, 2, 3]
    assert [o.token_ids for o in first.outputs] == [o.token_ids for o in again.outputs]
    assert len({tuple(o.token_ids) for o in first.outputs}) > 1
    for j, out in enumerate(first.outputs):  # completion j is the request seeded derive_seed(7, j)
        alone = SamplingParams(temperature=1.0, seed=derive_seed(7, j), max_tokens=8, ignore_eos=True)
        assert llm.generate("The moon", alone)[0].outputs[0].token_ids == out.token_ids


def test_logprobs_are_dicts_of_logprob_from_the_model(llm, reference):
    params = SamplingParams(temperature=0.9, seed=3, max_tokens=6, logprobs=3, ignore_eos=True)
    [result] = llm.generate("A bird sings", params)
    out = result.outputs[0]
    ids = result.prompt_token_ids + out.token_ids
    with torch.no_grad():
        rows = reference(torch.tensor([ids]))[0, len(result.prompt_token_ids) - 1:-1].log_softmax(-1)  # (6, V)
    assert len(out.logprobs) == len(out.token_ids) == 6
    for token, entry, row in zip(out.token_ids, out.logprobs, rows):
        assert list(entry)[0] == token and all(isinstance(v, Logprob) for v in entry.values())
        assert len(entry) in (3, 4)  # three alternatives, and the token itself when it is not among them
        assert entry[token].logprob == pytest.approx(row[token].item(), abs=1e-4)
        assert entry[token].rank == int((row > row[token]).sum()) + 1
        assert set(row.topk(3).indices.tolist()) <= set(entry)
        assert all(isinstance(v.decoded_token, str) for v in entry.values())
    assert out.cumulative_logprob == pytest.approx(sum(e[t].logprob for t, e in zip(out.token_ids, out.logprobs)))


def test_prompt_logprobs_have_vllms_shape(llm, reference):
    [result] = llm.generate("The old house near the road", SamplingParams(n=2, max_tokens=1, prompt_logprobs=2))
    ids = result.prompt_token_ids
    with torch.no_grad():
        rows = reference(torch.tensor([ids]))[0, :-1].log_softmax(-1)
    assert result.prompt_logprobs[0] is None and len(result.prompt_logprobs) == len(ids)
    for token, entry, row in zip(ids[1:], result.prompt_logprobs[1:], rows):
        assert token in entry and 2 <= len(entry) <= 3
        assert entry[token].logprob == pytest.approx(row[token].item(), abs=1e-5)
        assert set(row.topk(2).indices.tolist()) <= set(entry)


def test_stop_reasons(llm):
    free = llm.generate("The cat", SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0].outputs[0]
    stop_id = free.token_ids[2]
    by_id = llm.generate("The cat", SamplingParams(temperature=0, max_tokens=8, stop_token_ids=[stop_id]))
    out = by_id[0].outputs[0]
    assert out.token_ids == free.token_ids[:3] and (out.finish_reason, out.stop_reason) == ("stop", stop_id)
    assert out.text == llm.tokenizer.decode(llm.tokenizer.encode("The cat") + free.token_ids[:2])[len("The cat"):]


def test_min_tokens_hold_back_stop_strings(llm):
    """vLLM's min_tokens: no stop string ends in the text of the first min_tokens tokens (its V1
    detokenizer checks only once more tokens exist); NeMo's end strings (stop_before_min_tokens)
    match from the start, as its min_tokens_to_generate blocks EOS only."""
    free = llm.generate("The cat", SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))[0].outputs[0]
    stop = next(t for t in (llm.tokenizer.decode([i]) for i in free.token_ids[1:4]) if t.strip())
    early = free.text.index(stop)
    vllm, nemo = (llm.generate("The cat", SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, stop=[stop],
                                                         min_tokens=8, stop_before_min_tokens=flag))[0].outputs[0]
                  for flag in (False, True))
    assert nemo.text == free.text[:early] and nemo.finish_reason == "stop"
    eight = len(llm.tokenizer.decode(llm.tokenizer.encode("The cat") + free.token_ids[:8])) - len("The cat")
    later = free.text.find(stop, eight - len(stop) + 1)
    assert len(vllm.token_ids) > 8
    assert (vllm.text, vllm.finish_reason) == ((free.text[:later], "stop") if later >= 0 else (free.text, "length"))


def test_include_stop_str_in_output_and_tiny_temperatures(llm):
    free = llm.generate("The cat", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0].outputs[0]
    stop = free.text[2:4]
    cut, kept = (llm.generate("The cat", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=stop,
                                                        include_stop_str_in_output=flag))[0].outputs[0]
                 for flag in (False, True))
    assert cut.text == free.text[:free.text.index(stop)] and kept.text == cut.text + stop
    assert kept.token_ids == cut.token_ids and kept.stop_reason == stop
    # vLLM's: below 1e-5 a temperature samples greedily (logits / 1e-30 overflow: every positive one ties)
    tiny = llm.generate("The cat", SamplingParams(temperature=1e-30, max_tokens=12, ignore_eos=True, seed=4))
    assert tiny[0].outputs[0].token_ids == free.token_ids
    assert SamplingParams(stop_token_ids=None).stop_token_ids == []


def test_integer_arrays_are_token_ids(llm):
    import numpy as np

    expected = llm.generate([{"prompt_token_ids": [5, 20, 30]}], SamplingParams(max_tokens=3, temperature=0))
    for ids in (torch.tensor([5, 20, 30]), np.array([5, 20, 30], dtype=np.int64)):
        got = llm.generate([{"prompt_token_ids": ids}], SamplingParams(max_tokens=3, temperature=0))
        assert got[0].outputs[0].token_ids == expected[0].outputs[0].token_ids


@pytest.mark.parametrize("ids", [[445.5, 20], [445.0, 20.0], [True, 20], ["7", 20], torch.tensor([5.0, 20.0])])
def test_token_ids_that_are_not_integers_are_refused_up_front(llm, ids):
    """A float id array (numpy, torch) failed deep in the tokenizer or the embedding, after the request
    was queued: LLM was left with a stale request, AsyncLLM's engine thread died."""
    with pytest.raises(RequestError, match="prompt token ids must be integers"):
        llm.generate([{"prompt_token_ids": ids}], SamplingParams(max_tokens=2))
    assert not llm.engine.has_unfinished()
    assert llm.generate([{"prompt_token_ids": [5, 20]}], SamplingParams(max_tokens=2))[0].outputs[0].token_ids


def test_chat_uses_the_chat_format_and_stops_at_the_turn(scripted_model_dir):  # noqa: F811
    llm = LLM(str(scripted_model_dir), EngineConfig(num_blocks=64), dtype="float32", device="cpu")
    messages = [{"role": "user", "content": "Write a poem"}]
    [reply] = llm.chat(messages, SamplingParams(temperature=0, max_tokens=20))
    out = reply.outputs[0]
    assert (out.text, out.finish_reason, out.stop_reason) == ("Hi.", "stop", "\n<extra_id_1>")
    assert reply.prompt == render_chat(messages)
    assert reply.prompt_token_ids == llm.tokenizer.encode(render_chat(messages))
    batch = llm.chat([messages, messages], SamplingParams(temperature=0, max_tokens=20))
    assert [r.outputs[0].text for r in batch] == ["Hi.", "Hi."]
    # include_stop_str_in_output covers the caller's stop strings, never the chat format's turn marker
    [kept] = llm.chat(messages, SamplingParams(temperature=0, max_tokens=20, include_stop_str_in_output=True))
    assert kept.outputs[0].text == "Hi."


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -1}, "temperature must be in [0, 100]"),
    ({"max_tokens": 5, "min_tokens": 6}, "min_tokens (6) must not exceed max_tokens (5)"),
    ({"n": 0}, "n must be >= 1"),
    ({"stop": [""]}, "stop must be a string or a list of non-empty strings"),
])
def test_bad_sampling_params_are_one_line_errors(kwargs, message):
    with pytest.raises(SamplingParamsError) as info:
        SamplingParams(**kwargs)
    assert isinstance(info.value, NemotronError) and str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("params, message", [
    (SamplingParams(logprobs=321), "logprobs must be at most the vocabulary's 320"),
    (SamplingParams(prompt_logprobs=400), "prompt_logprobs must be at most"),
    (SamplingParams(stop_token_ids=[320], min_tokens=2), r"stop_token_ids must be in \[0, 320\)"),
])
def test_requests_the_model_cannot_serve_are_refused_up_front(llm, params, message):
    with pytest.raises(RequestError, match=message):
        llm.generate(["The cat", "A dog"], params)
    assert not llm.engine.has_unfinished() and llm.engine.num_requests == 0


def test_cli_options_reach_the_loader(tiny_model_dir, sp_tokenizer_file):
    llm = LLM(str(tiny_model_dir), tokenizer=sp_tokenizer_file, force=True, dtype="auto", device="cpu")
    assert llm.get_tokenizer().vocab_size == 320 and llm.generate("The cat")[0].outputs[0].token_ids
    with pytest.raises(NemotronError, match="lora is merged into a whole model"):
        LLM(str(tiny_model_dir), lora=tiny_model_dir, tensor_parallel_size=2, device="cpu")


def test_configuration_errors_are_one_line(tiny_model_dir, llm):
    loaded = load_model(tiny_model_dir, dtype="float32")
    with pytest.raises(NemotronError, match="max_model_len 4096 exceeds the model's context of 256"):
        LLM(loaded, max_model_len=4096)
    with pytest.raises(ConfigError, match="gpu_memory_fraction must be in"):
        LLM(loaded, gpu_memory_utilization=1.5)
    with pytest.raises(NemotronError, match="2 prompts but 3 sampling parameter sets"):
        llm.generate(["a", "b"], [SamplingParams()] * 3)
    with pytest.raises(RequestError, match="n=2: an engine request is one sequence"):
        llm.engine.check_request([5, 6], SamplingParams(n=2))


def test_unseeded_sampling_repeats_from_run_to_run_by_default(tiny_model_dir):
    """vLLM's seed defaults to 0: a script samples the same on every run (each LLM seeds the global
    generator at construction); seed=None leaves it alone."""
    def sample(**kwargs):
        llm = LLM(str(tiny_model_dir), dtype="float32", device="cpu", **kwargs)
        return llm.generate("The cat", SamplingParams(max_tokens=8, ignore_eos=True))[0].outputs[0].token_ids

    assert sample() == sample()
    torch.manual_seed(123)
    first = sample(seed=None)
    torch.manual_seed(123)
    assert sample(seed=None) == first
