"""Quantized against unquantized greedy decoding, on a model where agreement means something.

A default random model cannot tell quantizers apart: its next-token distributions are near-uniform,
so any perturbation flips decisions (int8 keeps only ~40% of 64-token continuations). A model with
only a planted map would pass any quantizer. `planted_map_model` sits between, like a trained model:
decisive on most steps, contested on a few, with its decisions in the quantized layers. The tests
check those properties of the reference first, then the int8 bar, then that the same bar rejects a
quantizer with ~17x the error (int4), so the bar is not a formality. The trained demo model, far
less decisive, is held to a per-step bar.
"""
from __future__ import annotations

import random

import pytest
import torch

from nemotron.assets import DEMO_MODEL_DIR
from nemotron.checkpoint.load import load_model
from nemotron.quant import quantize
from nemotron.quant.quality import PLANTED_CONFIG, QualityProbe, planted_map_model

NEW_TOKENS = 64
_rng = random.Random(0)
PROMPTS = [[_rng.randrange(4, PLANTED_CONFIG.vocab_size) for _ in range(16)] for _ in range(64)]


@pytest.fixture(scope="module")
def probe() -> QualityProbe:
    torch.manual_seed(0)
    return QualityProbe(planted_map_model(), PROMPTS, NEW_TOKENS)


def quantized(scheme: str):
    loaded = planted_map_model()
    quantize(loaded.model, scheme)
    return loaded


@pytest.fixture(scope="module")
def reports(probe) -> dict:
    return {scheme: probe.compare(quantized(scheme)) for scheme in ("int8", "fp8", "int4")}


def test_the_reference_is_decisive_but_not_trivially(probe):
    report = probe.compare(planted_map_model())
    assert report.prefix_agreement == 1.0 and report.logits_max_abs_error == 0.0  # deterministic
    assert report.reference_top1_median > 0.95
    assert 0.003 <= report.reference_contested <= 0.05  # contested steps exist, and are rare
    assert report.reference_distinct > 40  # continuations wander; they do not settle into a loop


@torch.no_grad()
def test_the_decisions_live_in_the_quantized_layers(probe):
    ablated = planted_map_model()
    ablated.model.model.layers[1].mlp.down_proj.weight.zero_()
    assert probe.compare(ablated).prefix_agreement < 0.1


def test_int8_keeps_95_percent_of_greedy_tokens(reports):
    int8 = reports["int8"]
    assert int8.tokens == 64 * NEW_TOKENS
    assert int8.prefix_agreement >= 0.95, int8.summary()  # tokens before each continuation's first divergence
    assert int8.teacher_forced_agreement >= 0.995
    assert int8.logits_relative_error < 0.02 and int8.mean_kl < 1e-4


def test_the_bar_rejects_a_coarser_quantizer(reports):
    int8, fp8, int4 = reports["int8"], reports["fp8"], reports["int4"]
    assert int4.prefix_agreement < 0.95, int4.summary()
    assert int8.logits_relative_error < fp8.logits_relative_error < int4.logits_relative_error
    assert int8.mean_kl < fp8.mean_kl < int4.mean_kl
    assert int8.prefix_agreement > fp8.prefix_agreement > int4.prefix_agreement



@pytest.mark.skipif(not (DEMO_MODEL_DIR / "model.safetensors").is_file(), reason="demo model not built")
def test_int8_stays_close_per_step_on_the_trained_demo_model():
    """A small trained model is contested far more often (~15% of its greedy steps), so its 64-token
    agreement is lower (benchmarks/quant_quality.py --model src/nemotron/assets/demo); step by step,
    given the same context, int8 still picks the same token almost always."""
    reference = load_model(DEMO_MODEL_DIR, dtype="float32")
    candidate = load_model(DEMO_MODEL_DIR, dtype="float32")
    quantize(candidate.model, "int8")
    prompts = [reference.tokenizer.encode(text) for text in (
        "Once upon a time, there was a little girl named", "The sun was setting over the river when",
        "Tom and his dog went to the park. They", "The capital of France is")]
    report = QualityProbe(reference, prompts, NEW_TOKENS).compare(candidate)
    assert report.teacher_forced_agreement >= 0.98, report.summary()
    assert report.logits_relative_error < 0.02 and report.mean_kl < 1e-3
