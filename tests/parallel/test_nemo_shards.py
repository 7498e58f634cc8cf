"""NeMo checkpoints loaded per rank: per-rank model_weights.ckpt files used directly when the
checkpoint's TP/PP equals the run's and resharded when not; zarr and torch_dist read by slice."""
from __future__ import annotations

import json

import pytest
import torch
import torch.distributed.checkpoint as dcp

from nemotron.checkpoint import megatron, megatron_slices, nemo
from nemotron.parallel import ParallelLayout, load_sharded, pipeline_forward, result_to_rank0
from nemotron.parallel.pipeline import MicroBatch
from tests.checkpoint.test_nemo import (CONFIG, REWARD, TOKENIZER_FILE, make_model, pp_stages, stack_layers, tar_dir,
                                        tp_shards, write_root, write_zarr_array, yaml_config)
from tests.parallel.launch import run_ranks

IDS = torch.randint(0, CONFIG.vocab_size, (2, 8), generator=torch.Generator().manual_seed(1))
POSITIONS = torch.arange(8).expand(2, 8)


def write_rank_files(root, state, config, tp, pp):
    weights = megatron.hf_to_megatron(state, config)
    for stage, stage_state in enumerate(pp_stages(weights, pp, config.num_layers)):
        for rank, shard in enumerate(tp_shards(stage_state, tp)):
            directory = root / f"tp_rank_{rank:02d}_pp_rank_{stage:03d}"
            directory.mkdir()
            torch.save(shard, directory / "model_weights.ckpt")
    return root


def _forward(rank, world, path, tp, pp, trust_pickle=False, dtype=None):
    """Logits (or reward scores) on rank 0, and which rank files this rank read tensor data from."""
    real_open = megatron_slices._open_stored

    def recording(*args):
        stored = real_open(*args)
        used_sets.append(stored.used_files)
        return stored

    used_sets = []
    megatron_slices._open_stored = recording
    chunks = []
    real_chunk = nemo._ZarrArray._chunk
    nemo._ZarrArray._chunk = lambda self, index: chunks.append(1) or real_chunk(self, index)
    layout = ParallelLayout.from_world(tp, pp)
    try:
        loaded = load_sharded(path, layout, trust_pickle=trust_pickle, dtype=dtype)
    finally:
        megatron_slices._open_stored, nemo._ZarrArray._chunk = real_open, real_chunk
    used = set().union(*used_sets)
    model = loaded.model
    hidden = pipeline_forward(model, layout, [MicroBatch(POSITIONS, IDS)])[0]
    out = None
    if layout.is_last_stage:
        with torch.no_grad():
            out = model.rm_head(hidden[:, -1]) if loaded.config.is_reward_model else model.lm_head(hidden)
    shape = (2, 9) if loaded.config.is_reward_model else (2, 8, CONFIG.vocab_size)
    out = result_to_rank0(out if layout.tp_rank == 0 else None, shape, torch.float32, layout)
    return {"out": out, "used": used, "chunks": len(chunks), "tokenizer": loaded.tokenizer is not None}


def nemo_root(directory, sp_tokenizer_file, **yaml_fields):
    """write_root with a real SentencePiece model, since loading builds the tokenizer."""
    root = write_root(directory, yaml_config(**yaml_fields))
    (root / TOKENIZER_FILE).write_bytes(sp_tokenizer_file.read_bytes())
    return root


def _expected(model):
    with torch.no_grad():
        return model(IDS, POSITIONS)


@pytest.fixture(scope="module")
def tp2_pp2_nemo(tmp_path_factory, sp_tokenizer_file):
    source = make_model(CONFIG)
    root = write_rank_files(nemo_root(tmp_path_factory.mktemp("nemo") / "src", sp_tokenizer_file),
                            source.state_dict(), CONFIG, 2, 2)
    return source, tar_dir(root, root.parent / "tp2pp2.nemo")


@pytest.mark.parametrize(("tp", "pp"), [(2, 2), (1, 2), (2, 1), (1, 4)])
def test_rank_files_direct_or_resharded(tmp_path, tp2_pp2_nemo, tp, pp):
    source, archive = tp2_pp2_nemo
    results = run_ranks(_forward, tp * pp, tmp_path / "run", str(archive), tp, pp)
    assert (results[0]["out"] - _expected(source)).abs().max().item() <= 1e-5
    assert all(r["tokenizer"] for r in results)
    for rank, result in enumerate(results):
        layout = ParallelLayout(tp, pp, rank)
        if (tp, pp) == (2, 2):  # same layout as the checkpoint: each rank reads its own file only
            assert result["used"] == {(layout.tp_rank, layout.stage)}
        elif tp == 1:  # one rank per stage merges both tensor-parallel files of its checkpoint stage(s)
            assert {key[0] for key in result["used"]} == {0, 1}
        else:  # TP matches, PP does not: a rank reads its TP rank's files of both stages
            assert {key[0] for key in result["used"]} == {layout.tp_rank}


def test_one_file_split_across_ranks_and_reward_head(tmp_path, sp_tokenizer_file):
    source = make_model(REWARD)
    weights = megatron.hf_to_megatron(source.state_dict(), REWARD)
    weights["model.output_layer.weight"] = torch.randn(REWARD.vocab_size, REWARD.hidden_size)  # unused, as in Aligner
    root = nemo_root(tmp_path / "src", sp_tokenizer_file, config=REWARD, reward_model_type="regression",
                     regression={"num_attributes": 9})
    torch.save(weights, root / "model_weights.ckpt")
    results = run_ranks(_forward, 2, tmp_path / "run", str(root), 2, 1)
    with torch.no_grad():
        expected = source(IDS, POSITIONS)
    assert (results[0]["out"] - expected).abs().max().item() <= 1e-5


def test_zarr_read_by_chunk(tmp_path, sp_tokenizer_file):
    source = make_model(CONFIG)
    root = nemo_root(tmp_path / "src", sp_tokenizer_file, precision="bf16-mixed")
    weights = root / "model_weights"
    weights.mkdir()
    (weights / "metadata.json").write_text(json.dumps({"sharded_backend": "zarr"}))
    stacked = stack_layers(megatron.hf_to_megatron(source.state_dict(), CONFIG))
    total_chunks = 0
    for name, tensor in stacked.items():
        write_zarr_array(weights / name, tensor, "bfloat16")
        total_chunks += sum(1 for p in (weights / name).iterdir() if not p.name.startswith("."))
    results = run_ranks(_forward, 2, tmp_path / "run", str(root), 2, 1, False, torch.float32)
    reference = make_model(CONFIG).to(torch.bfloat16).float()  # the weights as stored, in bf16
    assert (results[0]["out"] - _expected(reference)).abs().max().item() <= 1e-5
    # the vocabulary and FFN halves come from half of their chunks: no rank decodes every chunk
    assert all(r["chunks"] < total_chunks for r in results)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_torch_dist_read_by_region(tmp_path, sp_tokenizer_file):
    source = make_model(CONFIG)
    root = nemo_root(tmp_path / "src", sp_tokenizer_file)
    weights = root / "model_weights"
    dcp.save(stack_layers(megatron.hf_to_megatron(source.state_dict(), CONFIG)), checkpoint_id=weights,
             no_dist=True)
    (weights / "metadata.json").write_text(json.dumps({"sharded_backend": "torch_dist"}))
    results = run_ranks(_forward, 4, tmp_path / "run", str(root), 2, 2, True)
    assert (results[0]["out"] - _expected(source)).abs().max().item() <= 1e-5
