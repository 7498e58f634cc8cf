"""`nemotron memory` as a user runs it: presets, checkpoint directories (real tensor sizes), errors."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from nemotron.cli.main import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_340b_q4_k_m(capsys):
    code, out, _ = run_cli(capsys, "memory", "nemotron-4-340b", "--quant", "Q4_K_M", "--json")
    report = json.loads(out)
    assert code == 0 and report["whole_model"]["total"] / 1e9 == pytest.approx(194.2, rel=0.01)
    assert report["tp"] == report["pp"] == 1 and report["context"] == 4096


def test_text_report_lists_terms_and_setups(capsys):
    code, out, _ = run_cli(capsys, "memory", "nemotron-4-340b", "--dtype", "fp8", "--tp", "8")
    assert code == 0
    for word in ("weights", "KV cache", "activations", "prompt logprobs", "overhead", "total", "per GPU (TP 8 x PP 1 = 8 GPUs)"):
        assert word in out
    h100 = next(line for line in out.splitlines() if line.strip().startswith("H100 80GB"))
    a100 = next(line for line in out.splitlines() if line.strip().startswith("A100 80GB"))
    assert h100.endswith("fits") and "no FP8" in a100


def test_checkpoint_directory_uses_its_tensor_sizes(capsys, tiny_model_dir):
    code, out, _ = run_cli(capsys, "memory", tiny_model_dir, "--json")
    stored = sum(t.numel() * t.element_size() for t in load_file(tiny_model_dir / "model.safetensors").values())
    report = json.loads(out)
    assert code == 0 and report["whole_model"]["weights"] == stored
    assert "tensor sizes" in report["weights_from"]
    code, out, _ = run_cli(capsys, "memory", tiny_model_dir, "--dtype", "bf16", "--json")
    assert json.loads(out)["whole_model"]["weights"] == stored / 2  # stored float32; what-if in bf16


def test_a_config_json_alone_is_enough_to_plan(capsys, tmp_path, tiny_model_dir):
    (tmp_path / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    code, out, _ = run_cli(capsys, "memory", tmp_path, "--json")
    report = json.loads(out)
    assert code == 0 and report["whole_model"]["weights"] == report["parameters"] * 4  # stored float32


def test_quantized_checkpoint_directory(capsys, tmp_path, tiny_model_dir):
    assert main(["quantize", str(tiny_model_dir), str(tmp_path / "q"), "--scheme", "int8"]) == 0
    code, out, _ = run_cli(capsys, "memory", tmp_path / "q", "--json")
    stored = sum(t.numel() * t.element_size() for t in load_file(tmp_path / "q" / "model.safetensors").values())
    assert code == 0 and json.loads(out)["whole_model"]["weights"] == stored
    code, out, _ = run_cli(capsys, "memory", tmp_path / "q", "--tp", "2", "--json")
    per_gpu = json.loads(out)["per_gpu"]["weights"]
    assert stored / 2 < per_gpu < stored / 2 * 1.05  # norms are replicated on both ranks


@pytest.mark.parametrize("argv, message", [
    (["tiny", "--tp", "3"], "--tp 3 must divide"),
    (["tiny", "--quant", "Q9"], "unknown quantization 'Q9'"),
    (["no-such-model"], "not a directory"),
])
def test_errors_are_one_line(capsys, argv, message):
    code, _, err = run_cli(capsys, "memory", *argv)
    assert code == 2 and message in err and err.count("\n") == 1


def test_an_absurd_layer_count_is_refused_at_once(capsys, tmp_path, tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 10**9}))
    code, _, err = run_cli(capsys, "memory", tmp_path)
    assert code == 2 and "no Nemotron model has more than 10000 layers" in err and err.count("\n") == 1
