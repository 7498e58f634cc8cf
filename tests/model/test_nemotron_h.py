"""Nemotron-H against transformers' NemotronHForCausalLM (the reference), fp32 on CPU, and the
equivalences of the decode state: cached = recompute, split prefill = one shot, batch = single."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from nemotron.checkpoint.load import convert, load_model
from nemotron.model.nemotron_h import HybridCache, NemotronHForCausalLM, ssd_chunked, ssd_step
from nemotron.model.nemotron_h_config import NemotronHConfig

pytest.importorskip("transformers")


@dataclass(frozen=True)
class Shape:
    name: str
    layers: tuple[str, ...]  # transformers 5 names
    mamba_heads: int
    n_groups: int
    chunk: int
    kv_heads: int = 2
    hidden: int = 48
    vocab: int = 256


M, A, F = "linear_attention", "full_attention", "mlp"
SHAPES = [
    # Nemotron-H's rhythm (M - M * -), one group, chunks much shorter than the prompts.
    Shape("mamba_mlp_attention_1group", (M, F, M, A, F), mamba_heads=4, n_groups=1, chunk=8),
    # Several groups, GQA 4:1, Mamba layers back to back, a chunk that divides no length used.
    Shape("mamba_pair_4groups", (M, M, F, A, M), mamba_heads=8, n_groups=4, chunk=5, kv_heads=1),
    # No MLP, groups = heads, one chunk longer than the prompt. (transformers' cache cannot run a
    # stack without attention, so every shape has one attention layer.)
    Shape("no_mlp_groups_eq_heads", (M, M, A, M), mamba_heads=6, n_groups=6, chunk=64, kv_heads=4),
]


def make_hf_model(shape: Shape, seed: int = 0):
    """A transformers NemotronHForCausalLM whose every parameter is random (norms, A, D, dt bias too)."""
    from transformers import NemotronHConfig as HFConfig, NemotronHForCausalLM as HFModel

    torch.manual_seed(seed)
    config = HFConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, layers_block_type=list(shape.layers),
        num_attention_heads=4, num_key_value_heads=shape.kv_heads, head_dim=12, intermediate_size=80,
        mamba_num_heads=shape.mamba_heads, mamba_head_dim=8, ssm_state_size=16, n_groups=shape.n_groups,
        conv_kernel=4, chunk_size=shape.chunk, max_position_embeddings=256, eos_token_id=2, pad_token_id=0,
    )
    model = HFModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("A_log"):
                param.uniform_(-1.0, 1.5)  # decay rates exp(A_log) from 0.37 to 4.5
            elif name.endswith("dt_bias"):
                param.uniform_(-2.0, 1.0)
            elif "norm" in name or name.endswith(".D"):
                param.normal_(1.0, 0.2)
            else:
                param.normal_(0.0, 0.1)
    return model


def ours_from_hf(hf_model) -> NemotronHForCausalLM:
    config = NemotronHConfig.from_hf_dict(hf_model.config.to_dict()).replace(torch_dtype="float32")
    model = NemotronHForCausalLM(config).eval()
    model.load_state_dict(hf_model.state_dict(), strict=True)
    return model


@torch.no_grad()
def greedy(model: NemotronHForCausalLM, prompt: torch.Tensor, steps: int) -> list[int]:
    cache = HybridCache(model.config, prompt.shape[0])
    tokens, out = prompt, []
    for _ in range(steps):
        tokens = model(tokens, cache=cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
        out.append(int(tokens[0, 0]))
    return out


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_logits_match_transformers(shape):
    hf_model = make_hf_model(shape)
    ours = ours_from_hf(hf_model)
    ids = torch.randint(0, shape.vocab, (2, 37), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = hf_model(ids).logits, ours(ids)
    assert (expected - actual).abs().max().item() <= 1e-4


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_32_greedy_tokens_match_transformers_generate(shape):
    hf_model = make_hf_model(shape, seed=3)
    ours = ours_from_hf(hf_model)
    prompt = torch.randint(3, shape.vocab, (1, 13), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = hf_model.generate(prompt, max_new_tokens=32, do_sample=False, eos_token_id=None,
                                      pad_token_id=0)[0, prompt.shape[1]:].tolist()
    assert len(reference) == 32 and len(set(reference)) > 3  # not a degenerate repeat of one token
    assert greedy(ours, prompt, 32) == reference


@pytest.mark.parametrize("shape", SHAPES[:2], ids=lambda s: s.name)
def test_cached_decode_equals_full_recompute(shape):
    ours = ours_from_hf(make_hf_model(shape, seed=5))
    ids = torch.randint(0, shape.vocab, (2, 24), generator=torch.Generator().manual_seed(0))
    cache = HybridCache(ours.config, 2)
    with torch.no_grad():
        full = ours(ids)
        steps = [ours(ids[:, :9], cache=cache)] + [ours(ids[:, i:i + 1], cache=cache) for i in range(9, 24)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_split_prefill_equals_one_shot(shape):
    """The state carried across prefill chunks (conv window shorter and longer than a chunk)."""
    ours = ours_from_hf(make_hf_model(shape, seed=6))
    ids = torch.randint(0, shape.vocab, (1, 30), generator=torch.Generator().manual_seed(0))
    one_shot, split = HybridCache(ours.config, 1), HybridCache(ours.config, 1)
    with torch.no_grad():
        whole = ours(ids, cache=one_shot)
        parts = torch.cat([ours(ids[:, a:b], cache=split) for a, b in ((0, 2), (2, 13), (13, 30))], dim=1)
    assert torch.allclose(parts, whole, atol=1e-5)
    for i in range(len(one_shot.ssm)):
        assert torch.allclose(split.ssm[i], one_shot.ssm[i], atol=1e-5)
        assert torch.allclose(split.conv[i], one_shot.conv[i], atol=1e-6)


def test_batch_equals_single():
    ours = ours_from_hf(make_hf_model(SHAPES[1], seed=7))
    batch = torch.randint(0, SHAPES[1].vocab, (3, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        together = ours(batch)
        alone = torch.cat([ours(batch[i:i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 8, 40])
def test_chunked_scan_equals_the_recurrence(chunk):
    g = torch.Generator().manual_seed(0)
    b, t, h, p, n = 2, 17, 3, 4, 5
    x, B, C = (torch.randn(b, t, h, k, generator=g) for k in (p, n, n))
    dt = torch.rand(b, t, h, generator=g)
    A = -torch.rand(h, generator=g) * 2
    start = torch.randn(b, h, p, n, generator=g)
    y, final = ssd_chunked(x, dt, A, B, C, chunk, start)
    state, steps = start, []
    for i in range(t):
        out, state = ssd_step(x[:, i], dt[:, i], A, B[:, i], C[:, i], state)
        steps.append(out)
    assert torch.allclose(y, torch.stack(steps, dim=1), atol=1e-5)
    assert torch.allclose(final, state, atol=1e-5)


def test_hf_save_pretrained_dir_loads_and_matches(tmp_path):
    hf_model = make_hf_model(SHAPES[0], seed=8)
    hf_model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path, dtype="float32")
    assert isinstance(loaded.model, NemotronHForCausalLM)
    ids = torch.randint(0, SHAPES[0].vocab, (1, 21), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (hf_model(ids).logits - loaded.model(ids)).abs().max().item() <= 1e-4


@pytest.fixture
def nvidia_export(tmp_path):
    """NVIDIA's original layout: `backbone.` tensor names, hybrid_override_pattern, attention_head_dim."""
    from safetensors.torch import save_file

    hf_model = make_hf_model(SHAPES[0], seed=9)
    raw = hf_model.config.to_dict()
    raw.pop("layers_block_type")
    raw.update(hybrid_override_pattern="M-M*-", attention_head_dim=raw.pop("head_dim"))
    directory = tmp_path / "nvidia"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(raw))
    tensors = {name.replace("model.", "backbone.", 1): t.contiguous() for name, t in hf_model.state_dict().items()}
    save_file(tensors, str(directory / "model.safetensors"))
    return directory, hf_model


def test_nvidia_export_loads(nvidia_export):
    directory, hf_model = nvidia_export
    loaded = load_model(directory, dtype="float32")
    assert loaded.config.layer_types == ("mamba", "mlp", "mamba", "attention", "mlp")
    ids = torch.randint(0, SHAPES[0].vocab, (1, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (hf_model(ids).logits - loaded.model(ids)).abs().max().item() <= 1e-4


def test_convert_writes_what_transformers_loads(nvidia_export, tmp_path):
    from transformers import NemotronHForCausalLM as HFModel

    directory, hf_model = nvidia_export
    out = convert(directory, tmp_path / "converted")
    reloaded = HFModel.from_pretrained(out, dtype=torch.float32).eval()
    assert reloaded.config.layers_block_type == hf_model.config.layers_block_type
    ids = torch.randint(0, SHAPES[0].vocab, (1, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, hf_model(ids).logits)


@pytest.mark.parametrize("name", ["nemotron-h-8b", "nemotron-h-47b", "nemotron-h-56b"])
def test_preset_parameter_count_is_the_built_models(name):
    from nemotron.model.presets import get_preset

    config = get_preset(name)
    with torch.device("meta"):
        model = NemotronHForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == config.num_parameters()
