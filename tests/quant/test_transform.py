"""`quantize(model, scheme)`: what it replaces, that fusing commutes with it, and that the engine runs
the result."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nemotron.checkpoint.load import load_model
from nemotron.engine.llm import LLM
from nemotron.engine.sampling import SamplingParams
from nemotron.errors import ConfigError, NemotronError
from nemotron.model.config import QUANTIZATION_SCHEMES
from nemotron.model.nemotron import build_model, fuse_qkv, init_random_weights
from nemotron.quant import Int8Linear, QuantizedLinear, quantize
from nemotron.quant.linear import SCHEMES as QUANTIZED_MODULES
from nemotron.quant.transform import check_device
from tests.quant.conftest import QUANT_CONFIG

SCHEMES = ["int8", "int4", "fp8"]


def random_model(config=QUANT_CONFIG):
    model = build_model(config)
    init_random_weights(model, seed=0, std=0.1)
    return model.eval()


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("head", [True, False])
def test_decoder_linears_are_quantized_and_fused_the_rest_untouched(scheme, head):
    model = random_model()
    before = copy.deepcopy(model.state_dict())
    float_head = copy.deepcopy(model.lm_head)
    quantize(model, scheme, head=head)
    for layer in model.model.layers:
        attention = layer.self_attn
        assert attention.q_proj is None and isinstance(attention.qkv_proj, QUANTIZED_MODULES[scheme])
        assert all(isinstance(m, QUANTIZED_MODULES[scheme]) for m in (attention.o_proj, layer.mlp.up_proj, layer.mlp.down_proj))
        assert not any(isinstance(m, nn.Linear) for m in layer.modules())
    if head:  # int8 whatever the scheme
        assert type(model.lm_head) is Int8Linear and same_state(model.lm_head, Int8Linear.from_float(float_head))
    else:
        assert type(model.lm_head) is nn.Linear and torch.equal(model.lm_head.weight, before["lm_head.weight"])
    for name in ("model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.bias"):
        assert torch.equal(model.state_dict()[name], before[name])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_quantizing_then_fusing_equals_fusing_then_quantizing(scheme):
    """Scales are per output row, so q/k/v quantized apart and concatenated equal the fused weight
    quantized whole: the engine's fuse_qkv before or after makes no difference."""
    unfused = quantize(random_model(), scheme)
    fused = quantize(fuse_qkv(random_model()), scheme)
    assert same_state(unfused, fused)


def same_state(a: nn.Module, b: nn.Module) -> bool:
    """Bit-identical state dicts (float8 compared through its bytes)."""
    sa, sb = a.state_dict(), b.state_dict()
    as_bytes = lambda t: t.view(torch.uint8) if t.element_size() == 1 else t  # noqa: E731
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and torch.equal(as_bytes(sa[k]), as_bytes(sb[k])) for k in sa)


@torch.no_grad()
def full_recompute_greedy(model, prompt, steps):
    tokens = list(prompt)
    for _ in range(steps):
        tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens[len(prompt):]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_engine_decodes_a_quantized_model_like_a_full_recompute(float_model_dir, scheme):
    loaded = load_model(float_model_dir)
    quantize(loaded.model, scheme)
    prompts = [[5, 17, 33, 8, 100], [250, 3, 3, 9]]
    results = LLM(loaded).generate(prompts, SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))
    for prompt, result in zip(prompts, results):
        assert result.outputs[0].token_ids == full_recompute_greedy(loaded.model, prompt, 12)
    assert isinstance(loaded.model.model.layers[0].self_attn.qkv_proj, QuantizedLinear)  # fuse_qkv left it alone


def test_reward_models_keep_their_head():
    model = random_model(QUANT_CONFIG.replace(num_reward_attributes=9))
    expected = model(torch.tensor([[5, 6, 7]]))
    quantize(model, "int8")
    assert isinstance(model.rm_head, nn.Linear)
    assert torch.allclose(model(torch.tensor([[5, 6, 7]])), expected, atol=0.05)


def test_the_config_knows_every_scheme():
    assert tuple(QUANTIZED_MODULES) == QUANTIZATION_SCHEMES == tuple(SCHEMES)


def test_unknown_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="int8, int4, fp8"):
        quantize(random_model(), "int3")


def test_fp8_is_refused_on_gpus_without_fp8(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    with pytest.raises(NemotronError, match="8.9 or newer.*A100.*8.0"):
        check_device("fp8", "cuda")
    check_device("int8", "cuda")  # weight-only schemes run anywhere
