"""Malformed and absurd checkpoints end as one line naming the file and the problem (exit 2 in the CLI),
through `nemotron info`, `generate`, `convert` and the Python API; absurd configs are refused before
anything is allocated."""
from __future__ import annotations

import json
import shutil
import struct
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from nemotron.checkpoint import megatron, preflight
from nemotron.checkpoint.load import convert, load_config, load_model
from nemotron.checkpoint.nemo import read_nemo, read_nemo_config
from nemotron.cli.main import main
from nemotron.errors import CheckpointError, ConfigError, NemotronError
from tests.checkpoint.test_nemo import CONFIG, hf_state, stack_layers, write_root, write_zarr_array, yaml_config


def broken_copy(source: Path, tmp_path: Path, change) -> Path:
    target = tmp_path / "broken"
    shutil.copytree(source, target)
    change(target)
    return target


def rewrite_header(directory: Path, edit) -> None:
    file = directory / "model.safetensors"
    data = file.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8: 8 + length])
    edit(header)
    encoded = json.dumps(header).encode()
    file.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + length:])


def first_tensor(header: dict) -> dict:
    return header[sorted(k for k in header if k != "__metadata__")[0]]


def edit_config(**changes):
    def change(directory: Path) -> None:
        raw = json.loads((directory / "config.json").read_text())
        raw.update(changes)
        (directory / "config.json").write_text(json.dumps(raw))
    return change


def write(name: str, content: bytes):
    return lambda directory: (directory / name).write_bytes(content)


def truncate(name: str, keep: float):
    def change(directory: Path) -> None:
        data = (directory / name).read_bytes()
        (directory / name).write_bytes(data[: int(len(data) * keep)])
    return change


CASES = {
    "empty safetensors": (write("model.safetensors", b""), "model.safetensors is not a readable safetensors file"),
    "truncated safetensors": (truncate("model.safetensors", 0.5), "model.safetensors is not a readable"),
    "truncated safetensors header": (truncate("model.safetensors", 0.0005), "model.safetensors is not a readable"),
    "garbage safetensors": (write("model.safetensors", b"\x13\x37" * 999), "model.safetensors is not a readable"),
    "huge header length": (lambda d: (d / "model.safetensors").write_bytes(
        struct.pack("<Q", 2**62) + (d / "model.safetensors").read_bytes()[8:]), "header too large"),
    "absurd shape": (lambda d: rewrite_header(d, lambda h: first_tensor(h).update(shape=[2**40, 2**40])),
                     "model.safetensors is not a readable"),
    "absurd offsets": (lambda d: rewrite_header(d, lambda h: first_tensor(h).update(data_offsets=[0, 2**60])),
                       "model.safetensors is not a readable"),
    "config is a list": (write("config.json", b"[1, 2]"), "config.json holds a JSON list, not an object"),
    "config is binary": (write("config.json", b"\xff\xfe\x00garbage"), "config.json is not valid JSON"),
    "config misses a field": (lambda d: (d / "config.json").write_text(json.dumps(
        {k: v for k, v in json.loads((d / "config.json").read_text()).items() if k != "hidden_size"})),
        "config.json has no field 'hidden_size'"),
    "layers as a string": (edit_config(num_hidden_layers="2"), "num_layers must be a positive integer, got '2'"),
    "a billion layers": (edit_config(num_hidden_layers=10**9), "no Nemotron model has more than 10000 layers"),
    "zero heads": (edit_config(num_attention_heads=0, head_dim=None), "num_heads must be a positive integer"),
    "heads do not divide": (edit_config(num_key_value_heads=3), "num_kv_heads (3) must divide num_heads (4)"),
    "eps as text": (edit_config(norm_eps="tiny"), "field norm_eps must be a finite number, got 'tiny'"),
    "rope_parameters a list": (edit_config(rope_parameters=[1]), "field rope_parameters must be an object"),
    "eos as text": (edit_config(eos_token_id="x"), "field eos_token_id must be an integer token id"),
    "index a list": (write("model.safetensors.index.json", b"[1]"), "is not a valid safetensors index"),
    "index escapes the directory": (write("model.safetensors.index.json",
                                          b'{"weight_map": {"a": "../../../etc/passwd"}}'),
                                    "maps a tensor to '../../../etc/passwd', which is not a file name"),
}


@pytest.mark.parametrize("command", ["info", "generate", "convert"])
@pytest.mark.parametrize("case", list(CASES))
def test_malformed_hf_checkpoint_is_one_line_exit_2(capsys, tmp_path, tiny_model_dir, case, command):
    change, needle = CASES[case]
    broken = broken_copy(tiny_model_dir, tmp_path, change)
    argv = {"info": ["info", str(broken)], "generate": ["generate", str(broken), "hi", "-n", "1"],
            "convert": ["convert", str(broken), str(tmp_path / "out")]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert needle in err and str(broken) in err


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_hf_checkpoint_raises_a_nemotron_error(tmp_path, tiny_model_dir, case):
    change, needle = CASES[case]
    broken = broken_copy(tiny_model_dir, tmp_path, change)
    calls = [lambda: load_model(broken), lambda: convert(broken, tmp_path / "o")]
    if "config" in case:  # load_config reads config.json alone
        calls.append(lambda: load_config(broken))
    for call in calls:
        with pytest.raises(NemotronError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            call()


# ---- the config against the weights, before allocating ----------------------------------------
def test_a_billion_layers_fails_in_milliseconds(capsys, tmp_path, tiny_model_dir):
    broken = broken_copy(tiny_model_dir, tmp_path, edit_config(num_hidden_layers=10**9))
    start = time.perf_counter()
    assert main(["generate", str(broken), "hi"]) == 2
    assert time.perf_counter() - start < 5
    assert "num_layers is 1000000000; no Nemotron model has more than 10000" in capsys.readouterr().err


def test_a_layer_count_the_weights_lack_is_named(capsys, tmp_path, tiny_model_dir):
    broken = broken_copy(tiny_model_dir, tmp_path, edit_config(num_hidden_layers=9_000))
    assert main(["generate", str(broken), "hi"]) == 2
    assert "declares num_hidden_layers 9000, the weights hold 2 layer(s)" in capsys.readouterr().err


def test_a_huge_model_in_a_pickle_is_refused_by_the_memory_planner(tmp_path, tiny_model_dir):
    """No headers to compare against: the planner's figure against the machine's memory refuses it."""
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save(load_file(tiny_model_dir / "model.safetensors"), pickled / "pytorch_model.bin")
    raw = json.loads((tiny_model_dir / "config.json").read_text())
    (pickled / "config.json").write_text(json.dumps({**raw, "num_hidden_layers": 9_000, "intermediate_size": 10**7}))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"the weights need [\d,.]+ GB in float32 .* by the memory planner"):
        load_model(pickled)
    assert time.perf_counter() - start < 5


def test_a_preset_too_large_for_the_device_is_refused_unless_forced(monkeypatch, tiny_model_dir):
    monkeypatch.setattr(preflight, "available_memory", lambda device: (10**5, "the test device has 1 MB free"))
    with pytest.raises(CheckpointError, match="the test device has 1 MB free; pass --force"):
        load_model("nemotron-4-340b")
    with pytest.raises(CheckpointError, match="the test device has 1 MB free"):
        load_model(tiny_model_dir)
    assert load_model(tiny_model_dir, force=True).config.num_layers == 2


def test_force_on_the_command_line(monkeypatch, capsys, tiny_model_dir):
    monkeypatch.setattr(preflight, "available_memory", lambda device: (10**3, "the test device has 1 kB free"))
    assert main(["generate", str(tiny_model_dir), "hi", "-n", "2"]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main(["generate", str(tiny_model_dir), "--force", "hi", "-n", "2", "--greedy"]) == 0


def test_planner_figure_matches_the_real_weights(tiny_model_dir):
    config = load_config(tiny_model_dir)
    real = sum(t.numel() * t.element_size() for t in load_file(tiny_model_dir / "model.safetensors").values())
    assert preflight.weight_bytes(config, torch.float32) == real
    assert preflight.weight_bytes(config.replace(num_layers=10_000, intermediate_size=10**9), torch.bfloat16) > 10**15


@pytest.mark.parametrize("change, needle", [
    (edit_config(intermediate_size=96), "tensor 'model.layers.0.mlp.down_proj.weight' has shape (64, 128), "
                                        "the configuration expects (64, 96)"),
    (edit_config(num_hidden_layers=3), "declares num_hidden_layers 3, the weights hold 2 layer(s)"),
    (edit_config(vocab_size=300), "'lm_head.weight' has shape (320, 64), the configuration expects (300, 64)"),
])
def test_convert_refuses_a_config_that_does_not_match_the_tensors(capsys, tmp_path, tiny_model_dir, change, needle):
    broken = broken_copy(tiny_model_dir, tmp_path, change)
    assert main(["convert", str(broken), str(tmp_path / "out")]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_convert_refuses_an_extra_tensor(tmp_path, tiny_model_dir):
    def add_tensor(directory: Path) -> None:
        tensors = load_file(directory / "model.safetensors")
        save_file({**tensors, "model.layers.0.mlp.gate_proj.weight": torch.zeros(2, 2)}, directory / "model.safetensors")

    broken = broken_copy(tiny_model_dir, tmp_path, add_tensor)
    with pytest.raises(CheckpointError, match="'model.layers.0.mlp.gate_proj.weight' .* has no place"):
        convert(broken, tmp_path / "out")


# ---- NeMo: the YAML against the weights ----------------------------------------------------------
def nemo_root(tmp_path: Path, **yaml_changes) -> Path:
    root = write_root(tmp_path / "src", yaml_config(**yaml_changes))
    torch.save(megatron.hf_to_megatron(hf_state(), CONFIG), root / "model_weights.ckpt")
    return root


@pytest.mark.parametrize("changes, needle, error", [
    ({"num_layers": 8}, "declares num_layers 8, the weights hold 4 layer(s)", CheckpointError),
    ({"num_layers": 10**9}, "num_layers is 1000000000; no Nemotron model has more than", ConfigError),
    ({"num_layers": "4"}, "num_layers must be a positive integer", ConfigError),
    ({"ffn_hidden_size": 96}, "'model.decoder.layers.0.mlp.linear_fc1.weight' has shape (80, 48)", CheckpointError),
    ({"tokenizer": "a string"}, "field tokenizer must be a mapping", ConfigError),
    ({"layernorm_epsilon": "small"}, "field layernorm_epsilon must be a finite number", ConfigError),
])
def test_nemo_yaml_that_does_not_fit_is_refused_before_reading_tensors(tmp_path, changes, needle, error):
    root = nemo_root(tmp_path, **changes)
    start = time.perf_counter()
    only_full_read = "ffn_hidden_size" in changes or "tokenizer" in changes  # shapes and tokenizer: read_nemo
    for read in (read_nemo,) if only_full_read else (read_nemo, read_nemo_config):
        with pytest.raises(error, match=needle.replace("(", r"\(").replace(")", r"\)")):
            read(root)
    assert time.perf_counter() - start < 5


def test_nemo_yaml_that_is_not_a_mapping(capsys, tmp_path):
    root = nemo_root(tmp_path)
    (root / "model_config.yaml").write_text("- just\n- a list\n")
    assert main(["info", str(root)]) == 2
    assert "model_config.yaml does not hold a mapping" in capsys.readouterr().err


@pytest.mark.parametrize("edit, needle", [
    (lambda meta: meta.update(shape=[10**9, *meta["shape"][1:]]), "stacks 1000000000 layers"),
    (lambda meta: meta.update(chunks="big"), "both must be lists"),
    (lambda meta: meta.update(dtype=["f4"]), "not a dtype string"),
    (lambda meta: meta.update(dtype="<U8"), "weights are floating point"),
    (lambda meta: meta.clear(), "zarr_format None"),
])
def test_malformed_zarr_arrays(tmp_path, edit, needle):
    root = write_root(tmp_path / "src", yaml_config(precision="bf16-mixed"))
    weights = root / "model_weights"
    weights.mkdir()
    (weights / "metadata.json").write_text(json.dumps({"sharded_backend": "zarr"}))
    for name, tensor in stack_layers(megatron.hf_to_megatron(hf_state(), CONFIG)).items():
        write_zarr_array(weights / name, tensor, "bfloat16")
    target = weights / "model.decoder.layers.mlp.linear_fc2.weight" / ".zarray"
    meta = json.loads(target.read_text())
    edit(meta)
    target.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=needle):
        read_nemo_config(root)


def test_yaml_from_a_nemo_archive_is_named_in_errors(tmp_path):
    root = nemo_root(tmp_path)
    (root / "model_config.yaml").write_text(yaml.safe_dump({**yaml_config(), "activation": "gelu"}))
    with pytest.raises(ConfigError, match="activation 'gelu'"):
        read_nemo(root)


# ---- pickled weights with the wrong contents ---------------------------------------------------------
def pickled_dir(tmp_path: Path, tiny_model_dir: Path, content) -> Path:
    directory = tmp_path / "pickled"
    directory.mkdir()
    shutil.copy(tiny_model_dir / "config.json", directory)
    if isinstance(content, bytes):
        (directory / "pytorch_model.bin").write_bytes(content)
    else:
        torch.save(content, directory / "pytorch_model.bin")
    return directory


@pytest.mark.parametrize("content, needle", [
    ([1, 2], "pytorch_model.bin holds a list, not a state dict"),
    ({1: torch.zeros(2)}, "pytorch_model.bin holds an entry keyed 1, not by a tensor name"),
    (b"garbage", "pytorch_model.bin is not a PyTorch checkpoint in torch.save's zip format"),
])
def test_pickled_hf_weights_with_wrong_contents(tmp_path, tiny_model_dir, content, needle):
    directory = pickled_dir(tmp_path, tiny_model_dir, content)
    for trust in (False, True):
        with pytest.raises(CheckpointError, match=needle):
            load_model(directory, trust_pickle=trust)


@pytest.mark.parametrize("change, needle", [
    (lambda w: w.update({1: torch.zeros(2)}), "model_weights.ckpt holds an entry keyed 1"),
    (lambda w: w.update({"model.embedding.word_embeddings.weight": torch.tensor(1.0)}),
     "has shape \\(\\), too few dimensions for a weight split along dimension 0"),
    (lambda w: w.update({"model.rm_head.weight": torch.tensor(1.0)}), "too few dimensions"),
    (lambda w: w.update({"model.embedding.word_embeddings.weight": torch.zeros(5)}), "not two dimensions"),
])
def test_nemo_weights_with_wrong_contents(tmp_path, change, needle):
    weights = megatron.hf_to_megatron(hf_state(), CONFIG)
    change(weights)
    root = write_root(tmp_path / "src", yaml_config())
    torch.save(weights, root / "model_weights.ckpt")
    with pytest.raises(CheckpointError, match=needle):
        read_nemo_config(root)


def test_nemo_weights_that_are_not_a_torch_file(tmp_path):
    root = nemo_root(tmp_path)
    (root / "model_weights.ckpt").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(CheckpointError, match=r"model_weights.ckpt is not a readable PyTorch file: [^.]*$"):
        read_nemo(root)
    (root / "model_weights.ckpt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="model_weights.ckpt is not a readable PyTorch file"):
        read_nemo(root, trust_pickle=True)


def test_a_broken_tokenizer_inside_a_nemo_is_named(tmp_path):
    root = nemo_root(tmp_path)
    (root / "a1b2c3d4_tokenizer.model").write_bytes(b"not sentencepiece")
    with pytest.raises(NemotronError, match=f"{root}/a1b2c3d4_tokenizer.model is not a valid SentencePiece model"):
        load_model(root)


def test_memory_command_with_a_config_that_does_not_match_the_files(capsys, tmp_path, tiny_model_dir):
    broken = broken_copy(tiny_model_dir, tmp_path, edit_config(num_hidden_layers=1))
    assert main(["memory", str(broken)]) == 2  # was an IndexError: per-layer sizes indexed by the config
    assert "declares num_hidden_layers 1, the weights hold 2 layer(s)" in capsys.readouterr().err


def test_convert_output_that_cannot_be_written(capsys, monkeypatch, tmp_path, tiny_model_dir):
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("")
    assert main(["convert", str(tiny_model_dir), str(in_the_way)]) == 2
    assert capsys.readouterr().err == f"error: cannot write {in_the_way}: File exists\n"

    def full_disk(tensors, filename, metadata=None):
        raise OSError(28, "No space left on device", filename)

    monkeypatch.setattr("nemotron.checkpoint.hf.save_file", full_disk)
    with pytest.raises(CheckpointError, match=r"cannot write .*model.safetensors: No space left on device"):
        convert(tiny_model_dir, tmp_path / "out")


def test_threads_must_be_positive(capsys, tiny_model_dir):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(tiny_model_dir), "hi", "--threads", "-1"])
    assert exit_info.value.code == 2 and "--threads: must be a positive integer" in capsys.readouterr().err


def test_a_nemo_too_large_for_the_device_is_refused_before_its_weights_are_read(monkeypatch, tmp_path):
    root = nemo_root(tmp_path)
    monkeypatch.setattr(preflight, "available_memory", lambda device: (10**3, "the test device has 1 kB free"))

    def read_weights(*args, **kwargs):
        raise AssertionError("weights read before the memory check")

    monkeypatch.setattr("nemotron.checkpoint.nemo.read_nemo", read_weights)
    with pytest.raises(CheckpointError, match="the test device has 1 kB free; pass --force"):
        load_model(root)


def test_a_nemotron_h_preset_too_large_is_refused_by_the_hybrid_planner(monkeypatch):
    monkeypatch.setattr(preflight, "available_memory", lambda device: (10**6, "the test device has 1 MB free"))
    with pytest.raises(CheckpointError, match=r"nemotron-h-8b: the weights need [\d.]+ GB in bfloat16"):
        load_model("nemotron-h-8b")


def test_quantize_output_that_cannot_be_written(capsys, monkeypatch, tmp_path, tiny_model_dir):
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("")
    assert main(["quantize", str(tiny_model_dir), str(in_the_way), "--scheme", "int8"]) == 2
    assert capsys.readouterr().err.endswith(f"error: cannot write {in_the_way}: File exists\n")

    def full_disk(tensors, filename, metadata=None):
        raise OSError(28, "No space left on device", filename)

    monkeypatch.setattr("nemotron.quant.checkpoint.save_file", full_disk)
    assert main(["quantize", str(tiny_model_dir), str(tmp_path / "out"), "--scheme", "int8"]) == 2
    err = capsys.readouterr().err
    assert err.endswith(".safetensors.partial: No space left on device\n") and "Traceback" not in err
    assert not any((tmp_path / "out").glob("*.safetensors*"))  # nothing half-written is left behind
