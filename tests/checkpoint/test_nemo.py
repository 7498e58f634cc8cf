"""Reading .nemo checkpoints: each test writes a real NeMo/Megatron layout from a tiny random model and
checks that read_nemo gives back exactly the source model's Hugging Face state dict."""
from __future__ import annotations

import io
import json
import pickle
import re
import sys
import tarfile
import types
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
import yaml

from nemotron.checkpoint import megatron
from nemotron.checkpoint.nemo import read_nemo
from nemotron.errors import CheckpointError
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import build_model, init_random_weights

# GQA with 3 query heads per KV head and head_dim (12) != hidden / heads (8): a wrong QKV layout shows.
CONFIG = ModelConfig(vocab_size=64, hidden_size=48, intermediate_size=80, num_layers=4, num_heads=6,
                     num_kv_heads=2, head_dim=12, torch_dtype="float32")
REWARD = CONFIG.replace(num_reward_attributes=9)
TOKENIZER = b"\x00sentencepiece stand-in\xff"
TOKENIZER_FILE = "a1b2c3d4_tokenizer.model"

# Tensor-parallel split dims, written out independently of megatron.tp_split_dim.
COLUMN = ("linear_qkv.weight", "query_key_value.weight", "linear_fc1.weight", "dense_h_to_4h.weight",
          "word_embeddings.weight", "output_layer.weight")
ROW = ("linear_proj.weight", "self_attention.dense.weight", "linear_fc2.weight", "dense_4h_to_h.weight",
       "rm_head.weight")


class NotATensor:
    """Any non-tensor object in a pickle makes weights_only loading fail."""


def make_model(config: ModelConfig, seed: int = 0):
    model = build_model(config)
    init_random_weights(model, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):  # non-zero, so a +1 on conversion would show
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model.eval()


def hf_state(config: ModelConfig = CONFIG) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in make_model(config).state_dict().items()}


def yaml_config(config: ModelConfig = CONFIG, precision: str = "32", **extra) -> dict:
    raw = {
        "mcore_gpt": True, "num_layers": config.num_layers, "hidden_size": config.hidden_size,
        "ffn_hidden_size": config.intermediate_size, "num_attention_heads": config.num_heads,
        "num_query_groups": config.num_kv_heads, "kv_channels": config.head_dim, "rotary_percentage": 0.5,
        "activation": "squared-relu", "normalization": "layernorm1p", "layernorm_epsilon": 1e-5, "bias": False,
        "share_embeddings_and_output_weights": False, "position_embedding_type": "rope",
        "encoder_seq_length": 4096, "max_position_embeddings": 4096, "precision": precision,
        "tokenizer": {"library": "sentencepiece", "model": f"nemo:{TOKENIZER_FILE}"},
    }
    raw.update(extra)
    return raw


def write_root(root: Path, raw: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_config.yaml").write_text(yaml.safe_dump(raw))
    (root / TOKENIZER_FILE).write_bytes(TOKENIZER)
    return root


def tar_dir(root: Path, archive: Path, gzip: bool = False) -> Path:
    with tarfile.open(archive, "w:gz" if gzip else "w") as tar:
        tar.add(root, arcname=".")  # NeMo's archives name members ./model_config.yaml etc.
    return archive


def tp_shards(state: dict[str, torch.Tensor], tp: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(tp)]
    for name, tensor in state.items():
        dim = 0 if name.endswith(COLUMN) else 1 if name.endswith(ROW) else None
        for rank in range(tp):
            shards[rank][name] = tensor if dim is None else tensor.chunk(tp, dim)[rank].clone()
    return shards


def pp_stages(state: dict[str, torch.Tensor], pp: int, num_layers: int) -> list[dict[str, torch.Tensor]]:
    per_stage = num_layers // pp
    stages: list[dict[str, torch.Tensor]] = [{} for _ in range(pp)]
    for name, tensor in state.items():
        match = re.search(r"layers\.(\d+)\.", name)
        if match:
            layer = int(match.group(1))
            local = name.replace(f"layers.{layer}.", f"layers.{layer % per_stage}.", 1)
            stages[layer // per_stage][local] = tensor
        else:
            stages[0 if "embedding" in name else pp - 1][name] = tensor
    return stages


def stack_layers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Megatron's distributed checkpoints: `decoder.layers.N.x` -> `decoder.layers.x` of shape (L, ...)."""
    grouped: dict[str, dict[int, torch.Tensor]] = {}
    out = {}
    for name, tensor in state.items():
        match = re.match(r"(.*decoder\.layers)\.(\d+)\.(.*)", name)
        if match:
            grouped.setdefault(f"{match.group(1)}.{match.group(3)}", {})[int(match.group(2))] = tensor
        else:
            out[name] = tensor
    for name, layers in grouped.items():
        out[name] = torch.stack([layers[i] for i in range(len(layers))])
    return out


def write_zarr_array(directory: Path, tensor: torch.Tensor, dtype_name: str) -> None:
    """zarr v2 as Megatron-core writes bf16: raw bf16 words, no compressor; chunks that do not divide
    the shape, so edge chunks carry padding."""
    directory.mkdir()
    chunks = [1] + [max(1, (size * 3 + 4) // 5) for size in tensor.shape[1:]]
    (directory / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": list(tensor.shape), "chunks": chunks, "dtype": dtype_name,
        "compressor": None, "fill_value": None, "order": "C", "filters": None, "dimension_separator": ".",
    }))
    words = tensor.to(torch.bfloat16).view(torch.int16)
    grid = [-(-size // chunk) for size, chunk in zip(tensor.shape, chunks)]
    for index in torch.cartesian_prod(*(torch.arange(n) for n in grid)).reshape(-1, len(grid)).tolist():
        block = torch.zeros(chunks, dtype=torch.int16)
        region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks))
        part = words[region]
        block[tuple(slice(0, s) for s in part.shape)] = part
        (directory / ".".join(map(str, index))).write_bytes(block.numpy().tobytes())


def assert_same(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert torch.equal(loaded[name], tensor), name


# ---- layouts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("gzip", [False, True])
def test_single_file_nemo(tmp_path, gzip):
    state = hf_state()
    weights = megatron.hf_to_megatron(state, CONFIG)
    weights["model.decoder.layers.0.self_attention.linear_qkv._extra_state"] = io.BytesIO(b"fp8 meta")
    root = write_root(tmp_path / "src", yaml_config())
    torch.save(weights, root / "model_weights.ckpt")
    checkpoint = read_nemo(tar_dir(root, tmp_path / "model.nemo", gzip))
    assert checkpoint.config == CONFIG
    assert checkpoint.tokenizer_model == TOKENIZER and checkpoint.tokenizer_filename == TOKENIZER_FILE
    assert_same(checkpoint.state_dict, state)


def test_qkv_layout_is_per_kv_group():
    state = hf_state()
    fused = megatron.hf_to_megatron(state, CONFIG)["model.decoder.layers.1.self_attention.linear_qkv.weight"]
    d, h, r = CONFIG.head_dim, CONFIG.hidden_size, CONFIG.kv_group_size
    rows = fused.view(CONFIG.num_kv_heads, r + 2, d, h)
    q = state["model.layers.1.self_attn.q_proj.weight"].view(CONFIG.num_heads, d, h)
    k = state["model.layers.1.self_attn.k_proj.weight"].view(CONFIG.num_kv_heads, d, h)
    v = state["model.layers.1.self_attn.v_proj.weight"].view(CONFIG.num_kv_heads, d, h)
    for g in range(CONFIG.num_kv_heads):
        for j in range(r):
            assert torch.equal(rows[g, j], q[g * r + j])
        assert torch.equal(rows[g, r], k[g]) and torch.equal(rows[g, r + 1], v[g])
    assert all(torch.equal(a, b) for a, b in zip(megatron.split_qkv(fused, CONFIG), (q.view(-1, h), k.view(-1, h),
                                                                                   v.view(-1, h))))


def test_tensor_parallel_shards(tmp_path):
    state = hf_state()
    root = write_root(tmp_path / "src", yaml_config())
    for rank, shard in enumerate(tp_shards(megatron.hf_to_megatron(state, CONFIG), 2)):
        (root / f"mp_rank_{rank:02d}").mkdir()
        torch.save(shard, root / f"mp_rank_{rank:02d}" / "model_weights.ckpt")
    assert_same(read_nemo(tar_dir(root, tmp_path / "tp2.nemo")).state_dict, state)


def test_tensor_and_pipeline_parallel_shards_give_the_same_logits(tmp_path):
    source = make_model(CONFIG)
    state = {k: v.detach().clone() for k, v in source.state_dict().items()}
    root = write_root(tmp_path / "src", yaml_config())
    for stage, stage_state in enumerate(pp_stages(megatron.hf_to_megatron(state, CONFIG), 2, CONFIG.num_layers)):
        for rank, shard in enumerate(tp_shards(stage_state, 2)):
            directory = root / f"tp_rank_{rank:02d}_pp_rank_{stage:03d}"
            directory.mkdir()
            torch.save(shard, directory / "model_weights.ckpt")
    checkpoint = read_nemo(tar_dir(root, tmp_path / "tp2pp2.nemo"))
    assert_same(checkpoint.state_dict, state)
    loaded = build_model(checkpoint.config).eval()
    loaded.load_state_dict(checkpoint.state_dict, strict=True)
    ids = torch.randint(0, CONFIG.vocab_size, (2, 11), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded(ids), source(ids))


@pytest.mark.parametrize("dtype_name", ["bfloat16", "<V2"])
def test_zarr_distributed_checkpoint(tmp_path, dtype_name):
    state = hf_state()
    root = write_root(tmp_path / "src", yaml_config(precision="bf16-mixed"))
    weights = root / "model_weights"
    weights.mkdir()
    (weights / "metadata.json").write_text(json.dumps({"sharded_backend": "zarr", "sharded_backend_version": 1,
                                                       "common_backend": "torch", "common_backend_version": 1}))
    (weights / "common.pt").write_bytes(b"never unpickled")
    extra = weights / "model.decoder.layers.self_attention.core_attention._extra_state"
    extra.mkdir()
    (extra / "shard_0_4.pt").write_bytes(b"never unpickled")
    for name, tensor in stack_layers(megatron.hf_to_megatron(state, CONFIG)).items():
        write_zarr_array(weights / name, tensor, dtype_name)
    checkpoint = read_nemo(root)  # an extracted directory, as the 340B models ship
    assert checkpoint.config.torch_dtype == "bfloat16"
    assert_same(checkpoint.state_dict, {k: v.to(torch.bfloat16) for k, v in state.items()})
    converted = read_nemo(root, dtype=torch.float32).state_dict
    assert_same(converted, {k: v.to(torch.bfloat16).float() for k, v in state.items()})


def test_zarr_reader_matches_the_zarr_package(tmp_path):
    """Arrays written by the zarr package itself (compressed, Fortran order, two layers per chunk)."""
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("numcodecs")
    if not hasattr(zarr, "create_array"):
        pytest.skip("needs zarr >= 3 to write zarr v2 arrays here")
    state = hf_state()
    root = write_root(tmp_path / "src", yaml_config())
    weights = root / "model_weights"
    weights.mkdir()
    (weights / "metadata.json").write_text(json.dumps({"sharded_backend": "zarr"}))
    for i, (name, tensor) in enumerate(stack_layers(megatron.hf_to_megatron(state, CONFIG)).items()):
        chunks = (2, *(max(1, s // 2 + 1) for s in tensor.shape[1:]))
        array = zarr.create_array(store=str(weights / name), shape=tuple(tensor.shape), chunks=chunks,
                                  dtype="float32", zarr_format=2, order="CF"[i % 2])
        array[...] = tensor.numpy()
    assert_same(read_nemo(root).state_dict, state)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_torch_dist_checkpoint_needs_trust_pickle(tmp_path):
    state = hf_state()
    root = write_root(tmp_path / "src", yaml_config())
    weights = root / "model_weights"
    stacked = stack_layers(megatron.hf_to_megatron(state, CONFIG))
    stacked["model.decoder.layers.self_attention.linear_proj._extra_state"] = io.BytesIO(b"fp8 meta")
    dcp.save(stacked, checkpoint_id=weights, no_dist=True)
    (weights / "metadata.json").write_text(json.dumps({"sharded_backend": "torch_dist",
                                                       "sharded_backend_version": 1}))
    with pytest.raises(CheckpointError, match="trust_pickle"):
        read_nemo(root)
    assert_same(read_nemo(root, trust_pickle=True).state_dict, state)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_torch_dist_metadata_naming_megatron_classes(tmp_path, monkeypatch):
    """Megatron-core adds its save plans to .metadata; reading must not need Megatron installed."""
    state = hf_state()
    root = write_root(tmp_path / "src", yaml_config())
    weights = root / "model_weights"
    dcp.save(stack_layers(megatron.hf_to_megatron(state, CONFIG)), checkpoint_id=weights, no_dist=True)
    (weights / "metadata.json").write_text(json.dumps({"sharded_backend": "torch_dist"}))
    module_name = "megatron.core.dist_checkpointing.strategies.torch"
    plan = type("MCoreSavePlan", (), {"__module__": module_name})
    with monkeypatch.context() as patch:  # a stand-in Megatron, present only while pickling
        parts = module_name.split(".")
        for i in range(1, len(parts) + 1):
            patch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        sys.modules[module_name].MCoreSavePlan = plan
        metadata = pickle.loads((weights / ".metadata").read_bytes())
        metadata.all_local_plans = [plan()]
        (weights / ".metadata").write_bytes(pickle.dumps(metadata))
    assert "megatron" not in sys.modules
    assert_same(read_nemo(root, trust_pickle=True).state_dict, state)


def test_legacy_names(tmp_path):
    state = hf_state()
    weights = megatron.hf_to_megatron(state, CONFIG, legacy=True)
    assert "model.language_model.encoder.layers.0.self_attention.query_key_value.weight" in weights
    weights["model.language_model.rotary_pos_emb.inv_freq"] = torch.ones(6)
    root = write_root(tmp_path / "src", yaml_config(mcore_gpt=False))
    torch.save(weights, root / "model_weights.ckpt")
    assert_same(read_nemo(root).state_dict, state)


def test_reward_model(tmp_path):
    state = hf_state(REWARD)
    weights = megatron.hf_to_megatron(state, REWARD)
    # NeMo-Aligner's reward model keeps the base model's output layer, unused.
    weights["model.output_layer.weight"] = torch.randn(REWARD.vocab_size, REWARD.hidden_size)
    raw = yaml_config(REWARD, reward_model_type="regression", regression={"num_attributes": 9})
    root = write_root(tmp_path / "src", raw)
    for rank, shard in enumerate(tp_shards(weights, 2)):
        (root / f"mp_rank_{rank:02d}").mkdir()
        torch.save(shard, root / f"mp_rank_{rank:02d}" / "model_weights.ckpt")
    checkpoint = read_nemo(root)
    assert checkpoint.config.num_reward_attributes == 9 and checkpoint.config.reward_head_bias
    assert_same(checkpoint.state_dict, state)


# ---- errors -------------------------------------------------------------------------------------
def test_pickled_objects_need_trust_pickle(tmp_path):
    state = hf_state()
    weights = megatron.hf_to_megatron(state, CONFIG)
    weights["model.decoder.layers.0.mlp.linear_fc1._extra_state"] = NotATensor()
    root = write_root(tmp_path / "src", yaml_config())
    torch.save(weights, root / "model_weights.ckpt")
    with pytest.raises(CheckpointError, match="trust_pickle") as err:
        read_nemo(root)
    assert "model_weights.ckpt" in str(err.value)
    assert_same(read_nemo(root, trust_pickle=True).state_dict, state)


@pytest.mark.parametrize("change, message", [
    ("missing", "'decoder.layers.1.mlp.linear_fc2.weight'"),
    ("shape", r"'model.decoder.layers.2.self_attention.linear_qkv.weight' has shape \(96, 48\), "
              r"the config expects \(120, 48\)"),
    ("unknown", "'model.decoder.layers.0.mlp.gate_proj.weight'"),
    ("tokenizer", "no file a1b2c3d4_tokenizer.model"),
])
def test_errors_name_the_tensor(tmp_path, change, message):
    weights = megatron.hf_to_megatron(hf_state(), CONFIG)
    root = write_root(tmp_path / "src", yaml_config())
    if change == "missing":
        del weights["model.decoder.layers.1.mlp.linear_fc2.weight"]
    elif change == "shape":
        weights["model.decoder.layers.2.self_attention.linear_qkv.weight"] = torch.zeros(96, 48)
    elif change == "unknown":
        weights["model.decoder.layers.0.mlp.gate_proj.weight"] = torch.zeros(80, 48)
    else:
        (root / TOKENIZER_FILE).unlink()
    torch.save(weights, root / "model_weights.ckpt")
    with pytest.raises(CheckpointError, match=message):
        read_nemo(root)
