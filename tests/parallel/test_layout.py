"""The slices each rank owns, without any processes: heads, KV replication, vocabulary, stages, and
the readers' slice arithmetic (fused QKV rows, safetensors and pickle slices)."""
from __future__ import annotations

import pytest
import torch

from nemotron.checkpoint import megatron
from nemotron.checkpoint.hf import SliceReader, save_hf_dir
from nemotron.checkpoint.megatron_slices import qkv_rows
from nemotron.errors import ConfigError
from nemotron.model.nemotron import build_model, init_random_weights
from nemotron.model.presets import get_preset
from nemotron.parallel import ParallelLayout, Shard, bubble_fraction
from nemotron.parallel.pipeline import global_layer_name
from tests.checkpoint.test_nemo import CONFIG as GQA_CONFIG
from tests.conftest import TINY_CONFIG


def test_340b_on_tp8_pp2_and_tp16():
    config = get_preset("nemotron-4-340b")
    layouts = [ParallelLayout(8, 2, rank) for rank in range(16)]
    assert [layout.stage_layers(96) for layout in layouts[::8]] == [range(0, 48), range(48, 96)]
    assert [layout.kv_heads(config) for layout in layouts[:8]] == [range(g, g + 1) for g in range(8)]
    assert layouts[9].local_config(config).num_layers == 48 and layouts[9].local_config(config).num_heads == 12
    # TP 16 over 8 KV heads: ranks 2g and 2g + 1 hold KV head g and its query heads
    wide = [ParallelLayout(16, 1, rank) for rank in range(16)]
    for layout in wide:
        group = layout.kv_heads(config).start
        heads = layout.query_heads(config)
        assert len(heads) == 6 and {h // config.kv_group_size for h in heads} == {group}
        assert group == layout.tp_rank // 2


def test_uneven_splits():
    layout = ParallelLayout(3, 1, 2)
    assert layout.vocab_rows(320) == (214, 320, 107)  # 107 + 107 + 106 rows, the last padded by one
    assert [ParallelLayout(1, 3, s).stage_layers(8) for s in range(3)] == [range(0, 3), range(3, 6), range(6, 8)]
    assert global_layer_name("model.layers.1.mlp.up_proj.weight", ParallelLayout(1, 3, 1), 8) == \
        "model.layers.4.mlp.up_proj.weight"


@pytest.mark.parametrize(("tp", "pp", "message"), [(3, 1, "attention heads"), (8, 1, "attention heads"),
                                                   (1, 3, "exceeds the number of layers")])
def test_impossible_layouts_are_refused(tp, pp, message):
    with pytest.raises(ConfigError, match=message):
        ParallelLayout(tp, pp, 0).check(TINY_CONFIG)


def test_bubble_fraction():
    assert bubble_fraction(1, 1) == 0 and bubble_fraction(2, 1) == 0.5 and bubble_fraction(4, 13) == 3 / 16


def test_qkv_rows_select_heads_from_the_grouped_layout():
    fused = torch.arange(megatron.fused_qkv_shape(GQA_CONFIG)[0], dtype=torch.float32)[:, None]
    q, k, v = megatron.split_qkv(fused.expand(-1, GQA_CONFIG.hidden_size), GQA_CONFIG)
    d = GQA_CONFIG.head_dim
    for part, whole in (("q", q), ("k", k), ("v", v)):
        for rows in (((0, whole.shape[0]),), ((d, 3 * d),), ((0, d), (2 * d, 3 * d))):
            wanted = Shard(rows).take(whole)[:, 0]
            picked = torch.cat([fused[a:b, 0] for a, b in qkv_rows(part, rows, GQA_CONFIG)])
            assert torch.equal(picked, wanted), (part, rows)


@pytest.mark.parametrize("pickle", [False, True])
def test_slice_reader(tmp_path, pickle):
    model = build_model(TINY_CONFIG)
    init_random_weights(model, seed=3)
    state = model.state_dict()
    if pickle:  # saved from the bare trunk: names without the `model.` prefix
        TINY_CONFIG.save_json(tmp_path / "config.json")
        torch.save({k.removeprefix("model."): v for k, v in state.items()}, tmp_path / "pytorch_model.bin")
    else:
        save_hf_dir(state, TINY_CONFIG, tmp_path)
    reader = SliceReader(tmp_path)
    name = "model.layers.1.mlp.down_proj.weight"
    assert reader.shape(name) == tuple(state[name].shape)
    shard = Shard(((1, 5), (9, 12)), (16, 48))
    assert torch.equal(reader.read(name, shard.rows, shard.cols), shard.take(state[name]))
    assert torch.equal(reader.read("model.norm.bias"), state["model.norm.bias"])


@pytest.mark.parametrize(("tp", "pp"), [(1, 1), (2, 1), (4, 1), (8, 1), (2, 2), (1, 3)])
def test_memory_planner_weights_are_the_busiest_ranks_shard(tp, pp):
    """The planner's per-GPU weight bytes equal what the busiest rank holds (KV weights replicated
    beyond the KV-head count included): a preset's shards built in process, no communication."""
    import torch

    from nemotron.memory.planner import Precision, WeightBytes, plan
    from nemotron.model.config import ModelConfig
    from nemotron.parallel import shard_bytes
    from nemotron.parallel.shard_load import RandomSource, shard_model

    config = ModelConfig(vocab_size=512, hidden_size=64, intermediate_size=256, num_layers=6, num_heads=8,
                         num_kv_heads=2, head_dim=16, torch_dtype="bfloat16")
    planned = plan(config, WeightBytes.from_config(config, Precision("bf16")), tp=tp, pp=pp, context=16)
    held = max(shard_bytes(shard_model(config, ParallelLayout(tp, pp, rank), RandomSource(config, 0),
                                       torch.bfloat16, "cpu", "preset"))
               for rank in range(tp * pp))
    assert planned.per_gpu.weights == held
