"""Numerical parity with transformers' NemotronForCausalLM (the reference), fp32 on CPU."""
from __future__ import annotations

import pytest
import torch

from nemotron.checkpoint.hf import save_hf_dir
from nemotron.checkpoint.load import load_model
from nemotron.engine.kv_cache import ContiguousKVCache
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import NemotronForCausalLM
from tests.model.reference import SHAPES, make_hf_model

pytest.importorskip("transformers")


def ours_from_hf(hf_model) -> NemotronForCausalLM:
    config = ModelConfig.from_hf_dict(hf_model.config.to_dict()).replace(torch_dtype="float32")
    model = NemotronForCausalLM(config).eval()
    model.load_state_dict(hf_model.state_dict(), strict=True)
    return model


@torch.no_grad()
def greedy_with_cache(model: NemotronForCausalLM, prompt: torch.Tensor, steps: int) -> list[int]:
    cache = ContiguousKVCache(model.config, prompt.shape[0], prompt.shape[1] + steps, torch.float32)
    tokens, out = prompt, []
    for _ in range(steps):
        logits = model(tokens, cache.positions(tokens.shape[1], tokens.shape[0]), cache, last_only=True)
        cache.advance(tokens.shape[1])
        tokens = logits[:, -1].argmax(-1, keepdim=True)
        out.append(int(tokens[0, 0]))
    return out


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_logits_match_transformers(shape):
    hf_model = make_hf_model(shape)
    ours = ours_from_hf(hf_model)
    ids = torch.randint(0, shape.vocab, (3, 37), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf_model(ids).logits
        actual = ours(ids)
    assert (expected - actual).abs().max().item() <= 1e-4


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_32_greedy_tokens_match_transformers_generate(shape):
    hf_model = make_hf_model(shape, seed=3)
    ours = ours_from_hf(hf_model)
    prompt = torch.randint(4, shape.vocab, (1, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = hf_model.generate(prompt, max_new_tokens=32, do_sample=False, eos_token_id=None,
                                      pad_token_id=0)[0, prompt.shape[1]:].tolist()
    assert len(reference) == 32
    assert greedy_with_cache(ours, prompt, 32) == reference


def test_cached_decode_equals_full_recompute():
    ours = ours_from_hf(make_hf_model(SHAPES[0], seed=5))
    prompt = torch.randint(0, SHAPES[0].vocab, (2, 9), generator=torch.Generator().manual_seed(0))
    cache = ContiguousKVCache(ours.config, 2, 20, torch.float32)
    with torch.no_grad():
        # prefill in two chunks, then single tokens: every path through causal_attention
        ours(prompt[:, :5], cache.positions(5, 2), cache)
        cache.advance(5)
        chunk = ours(prompt[:, 5:], cache.positions(4, 2), cache)
        cache.advance(4)
        full = ours(prompt)
    assert torch.allclose(chunk, full[:, 5:], atol=1e-5)


def test_batch_equals_single():
    ours = ours_from_hf(make_hf_model(SHAPES[1], seed=6))
    batch = torch.randint(0, SHAPES[1].vocab, (4, 13), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        together = ours(batch)
        alone = torch.cat([ours(batch[i:i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_hf_save_pretrained_dir_loads_and_matches(tmp_path):
    hf_model = make_hf_model(SHAPES[0], seed=7)
    hf_model.save_pretrained(tmp_path)  # transformers' own layout: config.json + model.safetensors
    loaded = load_model(tmp_path, dtype="float32")
    ids = torch.randint(0, SHAPES[0].vocab, (1, 21), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (hf_model(ids).logits - loaded.model(ids)).abs().max().item() <= 1e-4


def test_transformers_loads_our_sharded_save(tmp_path):
    from transformers import NemotronForCausalLM as HFNemotron

    hf_model = make_hf_model(SHAPES[2], seed=8)
    ours = ours_from_hf(hf_model)
    save_hf_dir(ours.state_dict(), ours.config, tmp_path, max_shard_bytes=40_000)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    reloaded = HFNemotron.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.randint(0, SHAPES[2].vocab, (1, 15), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (reloaded(ids).logits - ours(ids)).abs().max().item() <= 1e-4
