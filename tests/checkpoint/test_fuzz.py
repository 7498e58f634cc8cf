"""Bounded fuzzing of the loaders: whatever a checkpoint's bytes, loading either succeeds or raises a
NemotronError (one line in the CLI), never another exception. NEMOTRON_FUZZ_EXAMPLES raises the count
for a longer local run (random, not the fixed CI examples)."""
from __future__ import annotations

import json
import os
import shutil
import struct
import tarfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nemotron.checkpoint import megatron
from nemotron.checkpoint.load import convert, load_config, load_model
from nemotron.errors import NemotronError
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import build_model, init_random_weights
from tests.checkpoint.test_nemo import CONFIG, hf_state, tar_dir, write_root, yaml_config

EXAMPLES = int(os.environ.get("NEMOTRON_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="NEMOTRON_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SMALL = ModelConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_layers=2, num_heads=2,
                    num_kv_heads=1, head_dim=8, torch_dtype="float32")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.sampled_from([0, 1, 2, 7, 16, 10**9, -1])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    from nemotron.checkpoint.hf import save_hf_dir

    model = build_model(SMALL)
    init_random_weights(model, 0)
    return save_hf_dir(model.state_dict(), SMALL, tmp_path_factory.mktemp("fuzz") / "model")


def copy_of(directory: Path, tmp: Path) -> Path:
    target = tmp / "case"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(directory, target)
    return target


def load_everything(path: Path, out: Path) -> None:
    """Each entry point once; a NemotronError is an acceptable outcome, anything else fails the test."""
    for attempt in (lambda: load_config(path), lambda: load_model(path),
                    lambda: convert(path, out)):
        try:
            attempt()
        except NemotronError as err:
            assert "\n" not in str(err), str(err)
        finally:
            shutil.rmtree(out, ignore_errors=True)


def split_safetensors(data: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8: 8 + length]), data[8 + length:]


@FUZZ
@given(field=st.sampled_from(["dtype", "shape", "data_offsets", None]), value=json_values,
       pick=st.integers(0, 100))
def test_safetensors_header_fields(hf_dir, tmp_path, field, value, pick):
    case = copy_of(hf_dir, tmp_path)
    header, body = split_safetensors((case / "model.safetensors").read_bytes())
    names = sorted(k for k in header if k != "__metadata__")
    name = names[pick % len(names)]
    if field is None:
        header[name] = value  # the whole entry replaced
    else:
        header[name][field] = value
    encoded = json.dumps(header).encode()
    (case / "model.safetensors").write_bytes(struct.pack("<Q", len(encoded)) + encoded + body)
    load_everything(case, tmp_path / "out")


@FUZZ
@given(cut=st.integers(0, 4000), flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=4))
def test_safetensors_bytes(hf_dir, tmp_path, cut, flips):
    case = copy_of(hf_dir, tmp_path)
    data = bytearray((case / "model.safetensors").read_bytes())
    for position, byte in flips:
        data[position % len(data)] = byte
    if cut:
        data = data[: len(data) - cut]
    (case / "model.safetensors").write_bytes(bytes(data))
    load_everything(case, tmp_path / "out")


@FUZZ
@given(key=st.sampled_from(["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
                            "partial_rotary_factor", "rope_theta", "norm_eps", "eos_token_id", "torch_dtype",
                            "rope_parameters", "rope_scaling", "quantization_config", "num_reward_attributes",
                            "reward_head_bias", "model_type", "hidden_act"]),
       value=json_values, whole=st.booleans())
def test_config_json_values(hf_dir, tmp_path, key, value, whole):
    case = copy_of(hf_dir, tmp_path)
    raw = json.loads((case / "config.json").read_text())
    raw.pop("rope_parameters", None) if key == "partial_rotary_factor" else None
    (case / "config.json").write_text(json.dumps(value if whole else {**raw, key: value}))
    load_everything(case, tmp_path / "out")


@pytest.fixture(scope="module")
def nemo_archive(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fuzz_nemo")
    root = write_root(tmp / "src", yaml_config())
    torch.save(megatron.hf_to_megatron(hf_state(), CONFIG), root / "model_weights.ckpt")
    return tar_dir(root, tmp / "model.nemo")


@FUZZ
@given(cut=st.integers(0, 30000), flips=st.lists(st.tuples(st.integers(0, 3071), st.integers(0, 255)),
                                                  min_size=1, max_size=6))
def test_nemo_tar_headers(nemo_archive, tmp_path, cut, flips):
    """Bytes flipped in the first member headers (where names, sizes, types and checksums live)."""
    data = bytearray(nemo_archive.read_bytes())
    for position, byte in flips:
        data[position] = byte
        if position % 512 < 148 or position % 512 >= 156:  # keep most checksums valid, so parsing goes deeper
            block = position - position % 512
            data[block + 148: block + 156] = b" " * 8
            data[block + 148: block + 156] = b"%06o\0 " % sum(data[block: block + 512])
    case = tmp_path / "case.nemo"
    case.write_bytes(bytes(data[: len(data) - cut]))
    load_everything(case, tmp_path / "out")


@FUZZ
@given(key=st.sampled_from(["num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads",
                            "num_query_groups", "kv_channels", "rotary_percentage", "layernorm_epsilon",
                            "precision", "tokenizer", "activation", "normalization", "regression",
                            "reward_model_type", "max_position_embeddings", "rotary_base"]),
       value=json_values)
def test_nemo_yaml_values(nemo_archive, tmp_path, key, value):
    root = tmp_path / "root"
    shutil.rmtree(root, ignore_errors=True)
    with tarfile.open(nemo_archive) as tar:
        tar.extractall(root, filter="data")
    raw = yaml.safe_load((root / "model_config.yaml").read_text())
    raw[key] = value
    (root / "model_config.yaml").write_text(yaml.safe_dump(raw))
    load_everything(root, tmp_path / "out")


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.sampled_from([0, 0, 0, 1, 100, 5000]))
def test_nemo_weights_bytes(nemo_archive, tmp_path, flips, cut):
    """model_weights.ckpt (a torch zip) with bytes flipped anywhere, or cut short."""
    root = tmp_path / "root"
    shutil.rmtree(root, ignore_errors=True)
    with tarfile.open(nemo_archive) as tar:
        tar.extractall(root, filter="data")
    data = bytearray((root / "model_weights.ckpt").read_bytes())
    for where, byte in flips:
        data[int(where * len(data))] = byte
    (root / "model_weights.ckpt").write_bytes(bytes(data[: len(data) - cut]))
    load_everything(root, tmp_path / "out")
