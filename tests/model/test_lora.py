"""LoRA against PEFT: our adapters load in `peft` and give the same logits, PEFT's load in ours,
and merging keeps the logits."""
from __future__ import annotations

import pytest
import torch

from nemotron.checkpoint.peft import load_adapter, save_adapter
from nemotron.errors import ConfigError
from nemotron.model.config import ModelConfig
from nemotron.model.lora import LoraConfig, LoraLinear, apply_lora, merge_lora
from nemotron.model.nemotron import NemotronForCausalLM
from tests.model.reference import SHAPES, make_hf_model

peft = pytest.importorskip("peft")


def _ours(hf_model) -> NemotronForCausalLM:
    config = ModelConfig.from_hf_dict(hf_model.config.to_dict()).replace(torch_dtype="float32")
    model = NemotronForCausalLM(config).eval()
    model.load_state_dict(hf_model.state_dict(), strict=True)
    return model


def _randomize_adapters(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)


TOKENS = torch.tensor([[5, 17, 99, 3, 250, 42, 7, 8, 120, 64]])


def test_our_adapter_loads_in_peft_with_the_same_logits(tmp_path):
    hf = make_hf_model(SHAPES[0], seed=0)
    base_logits = _ours(hf)(TOKENS).detach()
    ours = apply_lora(_ours(hf), LoraConfig(r=4, alpha=8.0, target_modules=("q_proj", "v_proj", "down_proj")))
    _randomize_adapters(ours)
    save_adapter(ours, tmp_path / "adapter", base_model="tiny")
    with torch.no_grad():
        expected = ours(TOKENS)
        peft_model = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
        got = peft_model(input_ids=TOKENS).logits
    assert (expected - base_logits).abs().max().item() > 1e-3  # the adapter does change the model
    assert (got - expected).abs().max().item() <= 1e-5


def test_a_peft_adapter_loads_in_ours_with_the_same_logits(tmp_path):
    hf = make_hf_model(SHAPES[1], seed=1)
    base = _ours(hf)  # before PEFT rewrites the transformers model in place
    base_logits = base(TOKENS).detach()
    peft_model = peft.get_peft_model(hf, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["o_proj", "up_proj"],
                                                         lora_dropout=0.0))
    _randomize_adapters(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        expected = peft_model.eval()(input_ids=TOKENS).logits
        ours = load_adapter(base, tmp_path / "adapter")
        got = ours(TOKENS)
    assert (expected - base_logits).abs().max().item() > 1e-3  # the adapter does change the model
    assert (got - expected).abs().max().item() <= 1e-5


def test_merging_keeps_the_logits_and_leaves_plain_linears():
    hf = make_hf_model(SHAPES[3], seed=2)
    model = apply_lora(_ours(hf), LoraConfig(r=2, alpha=4.0))
    _randomize_adapters(model)
    with torch.no_grad():
        before = model(TOKENS)
        merge_lora(model)
        after = model(TOKENS)
    assert not any(isinstance(m, LoraLinear) for m in model.modules())
    assert set(model.state_dict()) == set(_ours(hf).state_dict())
    assert (before - after).abs().max().item() <= 1e-5


def test_only_adapters_train_and_a_model_without_targets_is_refused():
    hf = make_hf_model(SHAPES[0], seed=0)
    model = apply_lora(_ours(hf), LoraConfig(r=2))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    with pytest.raises(ConfigError, match="no linear layer"):
        apply_lora(_ours(hf), LoraConfig(target_modules=("gate_proj",)))
