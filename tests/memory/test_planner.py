"""The memory planner against MISSION.md's planning table and hardware statements, and its parts."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from nemotron.engine.llm_engine import EngineConfig
from nemotron.errors import ConfigError
from nemotron.memory import CATALOG, Precision, WeightBytes, plan, setups_for_split, smallest_setups
from nemotron.memory.planner import PREFILL_CHUNK_TOKENS
from nemotron.model.nemotron import build_model
from nemotron.model.presets import PRESETS, get_preset
from nemotron.quant.linear import GROUP_SIZE

GB = 1e9
NEMOTRON_340B = get_preset("nemotron-4-340b")
GPUS = {gpu.name: gpu for gpu in CATALOG}


def totals(config, precision, **kwargs):
    return plan(config, WeightBytes.from_config(config, precision), **kwargs)


@pytest.mark.parametrize("quant, published_gb", [("Q4_K_M", 194.2), ("Q6_K", 279.2), ("Q8_0", 342.9),
                                                 ("FP16", 682.9)])
def test_reproduces_the_340b_planning_table_within_one_percent(quant, published_gb):
    result = totals(NEMOTRON_340B, Precision(quant=quant))
    assert result.context == 4096 and result.batch == 1
    assert result.whole.total / GB == pytest.approx(published_gb, rel=0.01)


def test_the_table_terms():
    result = totals(NEMOTRON_340B, Precision("bf16"))
    assert result.whole.kv_cache / GB == pytest.approx(2.42, abs=0.005)  # one 4,096-token sequence, 16 bit
    assert result.whole.overhead == 0.5 * GB
    assert result.whole.weights == NEMOTRON_340B.num_parameters() * 2
    # one 2,048-token prefill chunk: residual, normed input, up-projection and its square, 16 bit
    assert result.whole.activations == 2048 * (2 * 18432 + 2 * 73728) * 2 + 256000 * 33  # one sampled row
    # the engine's prompt-scoring workspace: 512 rows of 16-bit logits, 64 of them in fp32 twice
    assert result.whole.prompt_logprobs == 512 * 256000 * 2 + 64 * 256000 * 8


def test_prompt_logprobs_sit_with_the_head():
    split = totals(NEMOTRON_340B, Precision("bf16"), tp=8, pp=2)
    assert split.per_gpu.prompt_logprobs == split.whole.prompt_logprobs  # the busiest GPU: the last stage, with the head
    reward = totals(dataclasses.replace(NEMOTRON_340B, num_reward_attributes=9), Precision("bf16"))
    assert reward.whole.prompt_logprobs == 0  # a reward model has no logits


def test_prefill_chunk_is_the_engines():
    assert PREFILL_CHUNK_TOKENS == EngineConfig().max_num_batched_tokens


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_weight_bytes_count_every_parameter_of_the_built_model_once(name):
    config = PRESETS[name]
    with torch.device("meta"):
        count = sum(p.numel() for p in build_model(config).parameters())  # a reward model has no LM head
    assert WeightBytes.from_config(config, Precision("bf16")).total == 2 * count
    assert WeightBytes.from_config(config, Precision(quant="5")).total == pytest.approx(count * 5 / 8)


def test_engine_schemes_count_their_scales_and_leave_the_rest_at_dtype():
    config = NEMOTRON_340B
    layer_linear = config.parameter_counts()["layers"] - config.num_layers * 4 * config.hidden_size
    rest = config.num_parameters() - layer_linear
    int4 = WeightBytes.from_config(config, Precision("bf16", "int4", head=False)).total
    assert int4 == layer_linear / 2 + layer_linear / GROUP_SIZE * 2 + rest * 2  # packed nibbles, fp16 scales
    rows = config.num_layers * (2 * config.num_heads * config.head_dim + 2 * config.num_kv_heads * config.head_dim
                                + config.intermediate_size + config.hidden_size)  # output channels: q o k v up down
    kept = WeightBytes.from_config(config, Precision("bf16", "int8", head=False)).total
    assert kept == layer_linear + rows * 4 + rest * 2
    # By default the LM head is int8 too (one float32 scale per vocabulary row), under int4 as well.
    head = config.vocab_size * config.hidden_size
    int8 = WeightBytes.from_config(config, Precision("bf16", "int8")).total
    assert int8 == layer_linear + rows * 4 + head + config.vocab_size * 4 + (rest - head) * 2
    assert WeightBytes.from_config(config, Precision("bf16", "int4")).total == int4 - head + config.vocab_size * 4
    assert Precision("bf16", "int4").label == "int4 decoder-layer weights and an int8 LM head, the rest bf16"


def smallest(precision: Precision) -> dict:
    return {s.gpu.name: s for s in smallest_setups(NEMOTRON_340B, WeightBytes.from_config(NEMOTRON_340B, precision),
                                                   precision)}


def test_bf16_340b_needs_8_h200_or_16_h100_or_16_a100():
    setups = smallest(Precision("bf16"))
    assert (setups["H200"].num_gpus, setups["H200"].tp) == (8, 8)
    assert (setups["H100 80GB"].num_gpus, setups["H100 80GB"].tp, setups["H100 80GB"].pp) == (16, 8, 2)
    assert setups["A100 80GB"].num_gpus == 16
    assert all(s.fits for s in (setups["H200"], setups["H100 80GB"], setups["A100 80GB"]))


def test_bf16_340b_does_not_fit_one_h100_node():
    weights = WeightBytes.from_config(NEMOTRON_340B, Precision("bf16"))
    by_gpu = {s.gpu.name: s for s in setups_for_split(NEMOTRON_340B, weights, Precision("bf16"), tp=8, pp=1)}
    assert not by_gpu["H100 80GB"].fits and by_gpu["H200"].fits


def test_fp8_340b_fits_one_8xh100_node_and_not_on_ampere():
    setups = smallest(Precision("fp8"))
    h100 = setups["H100 80GB"]
    assert (h100.num_gpus, h100.tp, h100.pp, h100.fits) == (8, 8, 1, True)
    assert not setups["A100 80GB"].fits and "FP8" in setups["A100 80GB"].note
    # our fp8 scheme keeps embeddings and LM head in bf16 and still fits the node
    assert smallest(Precision("bf16", "fp8"))["H100 80GB"].num_gpus == 8


def test_per_gpu_split():
    whole = totals(NEMOTRON_340B, Precision("bf16"))
    split = totals(NEMOTRON_340B, Precision("bf16"), tp=8, pp=2)
    assert split.num_gpus == 16
    assert split.per_gpu.weights == pytest.approx(whole.whole.weights / 16, rel=0.01)  # + the embedding stage
    assert split.per_gpu.kv_cache == whole.whole.kv_cache / 16  # 8 KV heads over TP 8, 48 layers per stage
    assert split.per_gpu.overhead == 0.5 * GB


def test_kv_heads_are_replicated_when_tp_exceeds_them():
    config = get_preset("minitron-8b")  # 8 KV heads
    kv = lambda tp: totals(config, Precision("bf16"), tp=tp).per_gpu.kv_cache  # noqa: E731
    assert kv(2) == kv(1) / 2 and kv(8) == kv(1) / 8 and kv(16) == kv(8)


def test_context_and_batch_scale_the_kv_cache():
    config = get_preset("nemotron-4-15b")
    base = totals(config, Precision("bf16"), context=1024, batch=1).whole.kv_cache
    assert totals(config, Precision("bf16"), context=2048, batch=3).whole.kv_cache == 6 * base
    assert base == 1024 * config.kv_cache_bytes_per_token(2)


@pytest.mark.parametrize("kwargs, message", [
    ({"tp": 5}, "--tp 5 must divide"), ({"pp": 97}, "--pp 97 exceeds"), ({"context": 8192}, "--context must be"),
    ({"batch": 0}, "--batch must be"),
])
def test_impossible_requests_name_the_option(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        totals(NEMOTRON_340B, Precision("bf16"), **kwargs)


@pytest.mark.parametrize("quant, bits", [("q4_k_m", 4.5), ("Q8_0", 8.0), ("6.5", 6.5)])
def test_precision_names(quant, bits):
    assert Precision(quant=quant).table_bits == bits


@pytest.mark.parametrize("kwargs", [{"dtype": "int8"}, {"quant": "Q3_X"}, {"quant": "0"}])
def test_unknown_precisions_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        Precision(**kwargs)


def test_catalog_covers_datacenter_and_consumer_gpus():
    assert {"H100 80GB", "H200", "A100 80GB", "L40S", "RTX 4090"} <= set(GPUS)
    assert GPUS["H200"].memory_gb == 141 and GPUS["H100 80GB"].fp8 and not GPUS["A100 80GB"].fp8
    assert any(not g.datacenter for g in CATALOG) and all(math.isfinite(g.memory_gb) for g in CATALOG)
