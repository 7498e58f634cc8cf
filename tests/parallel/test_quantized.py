"""Quantized checkpoints (`nemotron quantize`) shard with their scales: TP 2 over int8 / int4 / fp8
weights gives the one-process logits of the same quantized model."""
from __future__ import annotations

import pytest
import torch

from nemotron.checkpoint.load import load_model
from nemotron.errors import ConfigError
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import build_model
from nemotron.parallel import ParallelLayout, load_sharded, shard_plan
from nemotron.quant.checkpoint import quantize_checkpoint
from nemotron.quant.linear import QuantizedLinear
from nemotron.quant.transform import quantize
from tests.conftest import random_model_dir
from tests.parallel.launch import run_ranks

# o_proj's and down_proj's inputs split in two stay multiples of int4's 128-channel groups.
CONFIG = ModelConfig(vocab_size=320, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=64, max_position_embeddings=64, torch_dtype="float32")
IDS = torch.tensor([[2, 40, 7, 100, 255, 31, 9]])


@pytest.fixture(scope="module")
def float_dir(tmp_path_factory, sp_tokenizer_file):
    return random_model_dir(tmp_path_factory, sp_tokenizer_file, CONFIG, "tp_quant_float", seed=2)


def _logits(rank, world, path):
    layout = ParallelLayout.from_world(world)
    model = load_sharded(path, layout).model
    with torch.no_grad():
        logits = model(IDS)
    shapes = {name: (m.out_features, m.in_features) for name, m in model.named_modules()
              if isinstance(m, QuantizedLinear)}
    head = model.lm_head  # the vocabulary-parallel head: this rank's int8 rows and their scales
    return {"logits": logits, "shapes": shapes,
            "head": (head.weight.dtype, tuple(head.weight.shape), tuple(head.weight_scale.shape))}


@pytest.mark.parametrize("scheme", ["int8", "int4", "fp8"])
def test_quantized_tensor_parallel_matches_one_process(tmp_path, float_dir, scheme):
    quantized_dir = quantize_checkpoint(float_dir, tmp_path / scheme, scheme)
    results = run_ranks(_logits, 2, tmp_path / "run", str(quantized_dir))
    full = load_model(quantized_dir).model
    with torch.no_grad():
        expected = full(IDS)
    for result in results:
        assert result["head"] == (torch.int8, (CONFIG.vocab_size // 2, CONFIG.hidden_size), (CONFIG.vocab_size // 2,))
        for name, module in full.named_modules():
            # column-parallel outputs, row-parallel inputs halve (the head: checked above)
            if isinstance(module, QuantizedLinear) and name != "lm_head":
                column = name.endswith(("qkv_proj", "up_proj"))
                assert result["shapes"][name] == ((module.out_features // 2, module.in_features) if column else
                                                  (module.out_features, module.in_features // 2)), name
    if scheme != "fp8":
        for result in results:
            assert (result["logits"] - expected).abs().max().item() <= 1e-5
        return
    # FP8 scales activations per token at run time; a row-parallel rank scales its slice of each row,
    # so the rounding differs from one process. Both must be as close to the float model.
    with torch.no_grad():
        reference = load_model(float_dir).model(IDS)
    one_process = (expected - reference).abs().max().item()
    assert (results[0]["logits"] - reference).abs().max().item() <= 1.5 * one_process


def test_an_int8_head_over_a_vocabulary_tp_does_not_divide(tmp_path_factory, tmp_path, sp_tokenizer_file):
    """321 rows over 2 ranks: the second rank's head is padded with a zero row and a zero scale,
    whose logit the gather drops."""
    odd = random_model_dir(tmp_path_factory, sp_tokenizer_file, CONFIG.replace(vocab_size=321), "tp_odd_vocab", seed=3)
    quantized_dir = quantize_checkpoint(odd, tmp_path / "int8", "int8")
    results = run_ranks(_logits, 2, tmp_path / "run", str(quantized_dir))
    with torch.no_grad():
        expected = load_model(quantized_dir).model(IDS)
    assert expected.shape[-1] == 321
    for result in results:
        assert result["head"] == (torch.int8, (161, CONFIG.hidden_size), (161,))
        assert (result["logits"] - expected).abs().max().item() <= 1e-5


def test_int4_refuses_shards_that_cut_a_group():
    config = CONFIG.replace(head_dim=32)  # o_proj input 128: halves of 64 columns split a 128-group
    with torch.device("meta"):
        model = quantize(build_model(config), "int4")
    with pytest.raises(ConfigError, match="128-aligned"):
        shard_plan(model, ParallelLayout(tp=2, rank=0))


def test_int4_shards_follow_the_layers_group_size():
    """GGML's Q4_0 blocks load as int4 groups of 32: a row-parallel shard is cut on those groups."""
    from nemotron.quant.linear import Int4Linear
    from nemotron.quant.transform import decoder_linears

    config = CONFIG.replace(head_dim=32)  # o_proj input 128, halves of 64 columns: two 32-groups each
    with torch.device("meta"):
        model = build_model(config)
    for parent, name, linear in list(decoder_linears(model)):
        setattr(parent, name, Int4Linear.empty(linear.in_features, linear.out_features, "meta", group_size=32))
    plan = shard_plan(model, ParallelLayout(tp=2, rank=1))
    scale = plan["model.layers.0.self_attn.o_proj.weight_scale"]
    packed = plan["model.layers.0.self_attn.o_proj.weight_packed"]
    assert scale.cols == (2, 4) and packed.cols == (32, 64)
