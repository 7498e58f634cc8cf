"""`nemotron quantize SRC DST`: the checkpoint it writes, and that it loads straight into the engine."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from nemotron.checkpoint.load import load_model
from nemotron.cli.main import main
from nemotron.engine.llm import LLM
from nemotron.engine.sampling import SamplingParams
from nemotron.errors import CheckpointError, ConfigError
from nemotron.quant import Int8Linear, quantize
from nemotron.quant.checkpoint import quantize_checkpoint
from tests.quant.test_transform import same_state


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def quantized_dirs(tmp_path_factory, float_model_dir):
    root = tmp_path_factory.mktemp("quantized")
    for scheme in ("int8", "int4", "fp8"):
        assert main(["quantize", str(float_model_dir), str(root / scheme), "--scheme", scheme]) == 0
    return root


@pytest.mark.parametrize("scheme, ratio", [("int8", 0.54), ("int4", 0.40), ("fp8", 0.54)])
def test_checkpoint_loads_as_the_in_memory_quantized_model(float_model_dir, quantized_dirs, scheme, ratio):
    directory = quantized_dirs / scheme
    loaded = load_model(directory)
    assert loaded.config.quantization == scheme
    assert same_state(loaded.model, quantize(load_model(float_model_dir).model, scheme))
    assert loaded.tokenizer is not None
    config = json.loads((directory / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "nemotron" and config["scheme"] == scheme
    size = (directory / "model.safetensors").stat().st_size
    assert size < ratio * (float_model_dir / "model.safetensors").stat().st_size  # float32 source


def test_tensors_keep_hugging_face_names_with_quantized_suffixes(quantized_dirs):
    int4 = load_file(quantized_dirs / "int4" / "model.safetensors")
    assert int4["model.layers.0.self_attn.q_proj.weight_packed"].dtype == torch.uint8
    assert int4["model.layers.1.mlp.down_proj.weight_scale"].shape == (128, 2)
    assert "model.layers.0.self_attn.q_proj.weight" not in int4
    # The LM head is int8 under every scheme, one float32 scale per vocabulary row.
    assert int4["lm_head.weight"].dtype == torch.int8 and int4["lm_head.weight_scale"].shape == (320,)  # vocabulary 320
    assert int4["model.embed_tokens.weight"].dtype == torch.float32
    assert load_file(quantized_dirs / "fp8" / "model.safetensors")["model.layers.0.mlp.up_proj.weight"].dtype \
        == torch.float8_e4m3fn


@pytest.mark.parametrize("scheme", ["int8", "int4", "fp8"])
def test_engine_and_cli_generate_from_the_quantized_directory(capsys, quantized_dirs, scheme):
    directory = quantized_dirs / scheme
    llm = LLM(load_model(directory))
    [result] = llm.generate(["The cat sees the moon"], SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))
    assert len(result.outputs[0].token_ids) == 8
    code = main(["generate", str(directory), "The cat", "-n", "4", "--greedy", "--device", "cpu"])
    assert code == 0 and capsys.readouterr().out


def test_keep_head_leaves_the_lm_head_as_it_was(capsys, tmp_path, float_model_dir, quantized_dirs):
    code, _ = run_cli(capsys, "quantize", float_model_dir, tmp_path / "kept", "--scheme", "int8", "--keep-head")
    assert code == 0
    tensors = load_file(tmp_path / "kept" / "model.safetensors")
    assert tensors["lm_head.weight"].dtype == torch.float32 and "lm_head.weight_scale" not in tensors
    assert json.loads((tmp_path / "kept" / "config.json").read_text())["quantization_config"]["lm_head"] is False
    kept, quantized = load_model(tmp_path / "kept"), load_model(quantized_dirs / "int8")
    assert type(kept.model.lm_head) is torch.nn.Linear and isinstance(quantized.model.lm_head, Int8Linear)
    assert not kept.config.quantized_lm_head and quantized.config.quantized_lm_head
    assert same_state(kept.model, quantize(load_model(float_model_dir).model, "int8", head=False))
    assert main(["info", str(quantized_dirs / "int8")]) == 0
    assert "as stored (int8 decoder layers, the LM head in int8, the rest float32)" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "kept")]) == 0
    assert "as stored (int8 decoder layers, the rest float32)" in capsys.readouterr().out
    # A checkpoint from before heads were quantized has no "lm_head" field: its head is unquantized.
    older = copy_with(tmp_path, tmp_path / "kept", edit_config=lambda c: c["quantization_config"].pop("lm_head"))
    assert type(load_model(older).model.lm_head) is torch.nn.Linear


def test_a_head_that_does_not_match_the_config_is_refused(tmp_path, quantized_dirs):
    unquantized_head = copy_with(tmp_path, quantized_dirs / "int8",
                                 edit_config=lambda c: c["quantization_config"].__setitem__("lm_head", False))
    with pytest.raises(CheckpointError, match="unexpected tensor 'lm_head.weight_scale'"):
        load_model(unquantized_head)
    with pytest.raises(ConfigError, match="lm_head must be true or false"):
        load_model(copy_with(tmp_path / "b", quantized_dirs / "int8",
                             edit_config=lambda c: c["quantization_config"].__setitem__("lm_head", "yes")))


def test_shards_and_index_when_the_checkpoint_is_large(tmp_path, float_model_dir, quantized_dirs, capsys):
    code, _ = run_cli(capsys, "quantize", float_model_dir, tmp_path / "out", "--scheme", "int8",
                      "--shard-size", "100KB")
    assert code == 0
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    assert not list((tmp_path / "out").glob("*.partial"))
    assert same_state(load_model(tmp_path / "out").model, load_model(quantized_dirs / "int8").model)


def test_user_errors_are_one_line(capsys, tmp_path, quantized_dirs, float_model_dir):
    code, err = run_cli(capsys, "quantize", "tiny", tmp_path / "a", "--scheme", "int8")
    assert code == 2 and "preset" in err and err.count("\n") == 1
    code, err = run_cli(capsys, "quantize", quantized_dirs / "int8", tmp_path / "b", "--scheme", "int4")
    assert code == 2 and "already quantized (int8)" in err
    code, err = run_cli(capsys, "quantize", float_model_dir, quantized_dirs / "int8", "--scheme", "int4")
    assert code == 2 and "already holds a checkpoint" in err


def test_int4_needs_widths_divisible_by_128(capsys, tmp_path, tiny_model_dir):
    code, err = run_cli(capsys, "quantize", tiny_model_dir, tmp_path / "q", "--scheme", "int4")  # hidden 64
    assert code == 2 and "divisible by 128, got 64" in err and err.count("\n") == 1


def copy_with(tmp_path, source, edit_tensors=None, edit_config=None):
    directory = tmp_path / "edited"
    shutil.copytree(source, directory)
    if edit_tensors:
        tensors = load_file(directory / "model.safetensors")
        edit_tensors(tensors)
        save_file(tensors, str(directory / "model.safetensors"))
    if edit_config:
        config = json.loads((directory / "config.json").read_text())
        edit_config(config)
        (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_a_tampered_checkpoint_is_refused(tmp_path, quantized_dirs):
    name = "model.layers.0.mlp.up_proj.weight"
    as_float = copy_with(tmp_path, quantized_dirs / "int8",
                         edit_tensors=lambda t: t.__setitem__(name, t[name].float()))
    with pytest.raises(CheckpointError, match="up_proj.weight.*torch.float32.*int8 scheme stores torch.int8"):
        load_model(as_float)


def test_missing_scales_are_refused(tmp_path, quantized_dirs):
    directory = copy_with(tmp_path, quantized_dirs / "int4",
                          edit_tensors=lambda t: t.pop("model.layers.1.self_attn.o_proj.weight_scale"))
    with pytest.raises(CheckpointError, match="missing tensor.*o_proj.weight_scale"):
        load_model(directory)


@pytest.mark.parametrize("entry, message", [
    ({"quant_method": "gptq", "bits": 4}, "quant_method 'gptq'"),
    ({"quant_method": "nemotron", "scheme": "int3"}, "quantization must be one of int8, int4, fp8"),
    ({"quant_method": "nemotron"}, "no field 'scheme'"),
])
def test_foreign_or_unknown_quantization_configs_are_refused(tmp_path, quantized_dirs, entry, message):
    directory = copy_with(tmp_path, quantized_dirs / "int8",
                          edit_config=lambda c: c.__setitem__("quantization_config", entry))
    with pytest.raises(ConfigError, match=message):
        load_model(directory)


def test_a_failed_run_leaves_no_partial_shards(tmp_path, float_model_dir):
    source = copy_with(tmp_path, float_model_dir, edit_tensors=lambda t: t.pop("lm_head.weight"))
    with pytest.raises(CheckpointError, match="missing tensor.*lm_head.weight"):
        quantize_checkpoint(source, tmp_path / "out", "int8", max_shard_bytes=50_000)
    assert not list((tmp_path / "out").iterdir())
