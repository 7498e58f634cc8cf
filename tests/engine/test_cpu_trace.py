"""CPU decode steps replayed from a trace give the eager engine's tokens, and only the steps that fit are traced."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from nemotron.checkpoint.load import load_model
from nemotron.engine import cpu_trace
from nemotron.engine.cpu_trace import MAX_TRACED_LANES, TracedDecode, untraceable_reason
from nemotron.engine.llm import LLM
from nemotron.engine.llm_engine import EngineConfig
from nemotron.engine.paged_cache import SERIAL_DECODE_KEYS
from nemotron.engine.sampling import SamplingParams
from nemotron.quant import quantize
from nemotron.quant.cpu import WIDENED_ROWS, cpu_supports_bf16
from tests.conftest import TINY_CONFIG, random_model_dir
from tests.engine.test_decode_workspace import mixed_params
from tests.engine.test_engine import prompts
from tests.quant.conftest import QUANT_CONFIG


@pytest.fixture(autouse=True)
def trace_at_once(monkeypatch):
    """Each row count traced at its first step, as the tests here look at traces and replays."""
    monkeypatch.setattr(cpu_trace, "TRACE_AFTER_STEPS", 0)


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def loaded_dir(request, tiny_model_dir):
    return tiny_model_dir, request.param


def run(loaded, requests, params, config: EngineConfig, read=lambda completion: completion.token_ids):
    """read(completion) of each request, and the engine's TracedDecode (None when off)."""
    llm = LLM(loaded, config)
    return [read(r.outputs[0]) for r in llm.generate(requests, params)], llm.engine.runner.traced


def cumulative_logprob(completion):
    return completion.cumulative_logprob


def generate(model_dir, dtype, requests, params, **config):
    return run(load_model(model_dir, dtype=dtype), requests, params,
               EngineConfig(attention_backend="torch", block_size=4, **config))


@pytest.mark.parametrize("max_num_seqs", [1, 3, 12])
def test_replayed_steps_give_the_eager_tokens(loaded_dir, max_num_seqs):
    """Sequences come and go (the number of decoding rows changes), lanes grow block after block
    (new views, new masks), sampled and greedy rows: every token as the eager engine's."""
    model_dir, dtype = loaded_dir
    requests = prompts(10, seed=31)
    params = mixed_params(len(requests))
    eager, none = generate(model_dir, dtype, requests, params, max_num_seqs=max_num_seqs, cpu_decode_trace=False)
    replayed, traced = generate(model_dir, dtype, requests, params, max_num_seqs=max_num_seqs)
    assert none is None
    assert replayed == eager
    assert traced.off_reason is None and traced.replays > 0
    assert set(traced.traces) <= set(range(1, min(max_num_seqs, MAX_TRACED_LANES) + 1))
    if dtype == "bfloat16" and cpu_supports_bf16():  # oneDNN's prepacked weights went in as graph inputs
        assert traced.held and all(t.is_mkldnn for t in traced.held)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_replays_on_either_kind_of_cpu(tiny_model_dir, monkeypatch, native):
    """Where bf16 is native the trace takes oneDNN's prepacked weights as inputs; where it is emulated the
    layers keep their plain weights (held by the trace) and steps of WIDENED_ROWS rows and more replay the
    widened fp32 matmuls: the eager engine's tokens either way."""
    monkeypatch.setattr("nemotron.quant.cpu.cpu_supports_bf16", lambda: native)
    requests = prompts(10, seed=33)
    params = mixed_params(len(requests))
    eager, _ = generate(tiny_model_dir, "bfloat16", requests, params, max_num_seqs=8, cpu_decode_trace=False)
    replayed, traced = generate(tiny_model_dir, "bfloat16", requests, params, max_num_seqs=8)
    assert replayed == eager
    assert traced.off_reason is None and max(traced.traces) >= WIDENED_ROWS
    assert bool(traced.held) is native


def test_a_row_count_is_traced_once_it_has_run_its_eager_steps(tiny_model_dir, monkeypatch):
    """Four sequences decoding together for 5 steps, then one alone for 12: with a threshold of 6 the
    lone row is traced at its 7th step and replayed after; the four rows are never traced."""
    monkeypatch.setattr(cpu_trace, "TRACE_AFTER_STEPS", 6)
    requests = prompts(4, seed=33)
    params = [SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)] * 3
    params = [SamplingParams(max_tokens=18, temperature=0, ignore_eos=True)] + params
    eager, _ = generate(tiny_model_dir, "float32", requests, params, cpu_decode_trace=False)
    tokens, traced = generate(tiny_model_dir, "float32", requests, params)
    assert tokens == eager
    assert set(traced.traces) == {1}
    assert traced.eager_steps == {4: 5, 1: 6}
    assert traced.replays == 12 - 6 - 1  # the 7th lone step is the traced one (its eager recording)


def test_a_replay_that_differs_turns_tracing_off_and_the_step_stays_eager(tiny_model_dir, monkeypatch):
    requests, params = prompts(3, seed=32), mixed_params(3)
    eager, _ = generate(tiny_model_dir, "float32", requests, params, cpu_decode_trace=False)
    monkeypatch.setattr(TracedDecode, "_same", staticmethod(lambda replayed, recorded: False))
    tokens, traced = generate(tiny_model_dir, "float32", requests, params)
    assert tokens == eager
    assert traced.off_reason == "a replay differed from the forward it was traced from"
    assert traced.traces == {} and traced.replays == 0


class _OtherTokensReplay:
    """A replay that computes another step (every token id + 1): different outputs, and its own keys
    and values written to the step's lane rows, as a replay that really differed would."""

    def __init__(self, replay):
        self.replay, self.graph = replay, replay.graph

    def __call__(self, input_ids, *inputs):
        return self.replay((input_ids + 1) % 320, *inputs)


def test_a_replay_that_really_differs_leaves_the_eager_keys_in_the_lanes(tiny_model_dir, monkeypatch):
    """The failed check's step is run eagerly again: the lanes (and the pool after them) hold the eager
    step's keys and values, so every later step, eager, gives the eager engine's log-probabilities."""
    requests = prompts(3, seed=36)
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True, logprobs=0)

    def logprobs(trace):
        return run(load_model(tiny_model_dir, dtype="float32"), requests, params,
                   EngineConfig(cpu_decode_trace=trace, max_num_seqs=1), cumulative_logprob)

    eager, _ = logprobs(False)
    real_trace = torch.jit.trace
    monkeypatch.setattr(torch.jit, "trace", lambda *args, **kwargs: _OtherTokensReplay(real_trace(*args, **kwargs)))
    replayed, traced = logprobs(True)
    assert traced.off_reason == "a replay differed from the forward it was traced from"
    assert replayed == eager


@pytest.fixture(scope="module")
def mha_model_dir(tmp_path_factory, sp_tokenizer_file):
    """One query head per KV head, fp32, a context past SERIAL_DECODE_KEYS: SDPA's one-row path."""
    config = dataclasses.replace(TINY_CONFIG, num_kv_heads=TINY_CONFIG.num_heads, max_position_embeddings=1024)
    return random_model_dir(tmp_path_factory, sp_tokenizer_file, config, "mha_model", seed=4)


def test_multi_head_attention_replays_give_the_eager_bits_on_one_thread_and_on_the_team(mha_model_dir):
    """A long request first (its steps attend on the thread team), then a short one (eager steps attend
    on one thread, replays on the team): the eager engine's log-probabilities, bit for bit."""
    requests = [[5 + i % 300 for i in range(SERIAL_DECODE_KEYS + 100)], [7, 8, 9]]
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True, logprobs=0)
    runs = [run(load_model(mha_model_dir, dtype="float32"), requests, params,
                EngineConfig(cpu_decode_trace=trace, max_num_seqs=1), cumulative_logprob) for trace in (False, True)]
    assert runs[1][0] == runs[0][0]
    assert runs[1][1].replays > 6  # both requests' steps were replayed


def test_enforce_eager_turns_the_traces_off(tiny_model_dir):
    llm = LLM(load_model(tiny_model_dir, dtype="float32"), enforce_eager=True)
    assert llm.engine.runner.traced is None
    assert LLM(load_model(tiny_model_dir, dtype="float32")).engine.runner.traced is not None


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory, sp_tokenizer_file):
    return random_model_dir(tmp_path_factory, sp_tokenizer_file, QUANT_CONFIG, "wide_model", seed=3)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantized_models_replay_their_kernels(wide_model_dir, scheme):
    """int8 (fbgemm's packed weights: torchbind objects, read as module attributes) and int4 at one
    row and at a few rows: the eager engine's tokens."""
    def quantized():
        loaded = load_model(wide_model_dir, dtype="float32")
        quantize(loaded.model, scheme)
        for param in loaded.model.parameters():
            param.data = param.data.bfloat16()
        return loaded

    requests, params = prompts(4, seed=35), mixed_params(4)
    (eager, _), (replayed, traced) = [
        run(quantized(), requests, params, EngineConfig(attention_backend="torch", block_size=4, max_num_seqs=3,
                                                         cpu_decode_trace=trace)) for trace in (False, True)]
    assert replayed == eager
    assert traced.off_reason is None and traced.replays > 0 and 1 in traced.traces


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")
def test_a_sharded_model_is_not_traced():
    layer = nn.Module()
    layer.group = torch.distributed.ProcessGroup(torch.distributed.HashStore(), 0, 1)  # as a TP layer holds one
    assert untraceable_reason(nn.Sequential(nn.Linear(8, 8), layer)) == (
        "1.group is a process group: a sharded model's collectives are not traced")
    assert untraceable_reason(nn.Sequential(nn.Linear(8, 8))) is None


class ScriptFailure(Exception):
    """What TorchScript's frontend raises (a plain Exception), e.g. when the source it compiles is gone."""


@pytest.mark.parametrize("failure", [RuntimeError, ScriptFailure])
def test_a_step_the_tracer_cannot_record_runs_eagerly(tiny_model_dir, monkeypatch, failure):
    requests, params = prompts(3, seed=33), mixed_params(3)
    eager, _ = generate(tiny_model_dir, "float32", requests, params, cpu_decode_trace=False)

    def refuse(*args, **kwargs):
        raise failure("Tried to trace something\nmore lines")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    tokens, traced = generate(tiny_model_dir, "float32", requests, params)
    assert tokens == eager
    assert traced.off_reason == "the step could not be traced: Tried to trace something"
    assert traced.traces == {} and traced.replays == 0


def test_steps_of_a_hooked_model_run_eagerly_with_their_hooks(tiny_model_dir):
    requests, params = prompts(2, seed=34), mixed_params(2)
    eager_calls, traced_calls = [], []
    for calls, trace in ((eager_calls, False), (traced_calls, True)):
        llm = LLM(load_model(tiny_model_dir, dtype="float32"), EngineConfig(cpu_decode_trace=trace))
        llm.engine.model.model.layers[1].mlp.register_forward_hook(lambda *_: calls.append(1))
        llm.generate(requests, params)
    assert traced_calls == eager_calls and len(eager_calls) > 2
    assert llm.engine.runner.traced.replays == 0


def test_a_replay_that_fails_runs_the_step_eagerly(tiny_model_dir):
    requests, params = prompts(2, seed=37), mixed_params(2)
    eager, _ = generate(tiny_model_dir, "float32", requests, params, cpu_decode_trace=False, max_num_seqs=1)
    llm = LLM(load_model(tiny_model_dir, dtype="float32"), EngineConfig(attention_backend="torch", block_size=4,
                                                                         max_num_seqs=1))
    first = llm.generate(requests[:1], params[:1])[0].outputs[0].token_ids
    traced = llm.engine.runner.traced

    def fail(*inputs):
        raise RuntimeError("The following operation failed in the TorchScript interpreter.\nmore")

    traced.traces[1] = fail
    second = llm.generate(requests[1:], params[1:])[0].outputs[0].token_ids
    assert [first, second] == eager
    assert traced.off_reason == "a replay failed: The following operation failed in the TorchScript interpreter."
