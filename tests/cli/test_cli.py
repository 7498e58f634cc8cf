"""The `nemotron` command as a user runs it: output, exit codes, one-line errors."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from nemotron.cli.main import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_info_of_a_directory_reads_headers(capsys, tiny_model_dir):
    code, out, _ = run_cli(capsys, "info", str(tiny_model_dir), "--json")
    info = json.loads(out)
    assert code == 0
    assert info["parameters"] == info["parameters_on_disk"] == sum(
        t.numel() for t in load_file(tiny_model_dir / "model.safetensors").values())
    assert info["weight_bytes"] == info["parameters"] * 4  # stored as float32


def test_info_of_the_340b_preset(capsys):
    code, out, _ = run_cli(capsys, "info", "nemotron-4-340b")
    assert code == 0
    assert "341" in out and "GQA 12:1" in out and "rotary on 96 of 192 channels" in out


def test_greedy_generation_is_deterministic_and_streams(capsys, tiny_model_dir):
    args = ("generate", str(tiny_model_dir), "The cat sees the moon", "-n", "12", "--greedy")
    code, first, err = run_cli(capsys, *args)
    assert code == 0 and "12 tokens" in err and "finish: length" in err
    assert run_cli(capsys, *args)[1] == first


def test_seeded_sampling_is_reproducible(capsys, tiny_model_dir):
    args = ("generate", str(tiny_model_dir), "A bird", "-n", "10", "--seed", "7", "--top-k", "20")
    assert run_cli(capsys, *args)[1] == run_cli(capsys, *args)[1]


PENALISED = ("--seed", "7", "--temperature", "0.9", "--min-p", "0.05", "--presence-penalty", "0.5",
             "--frequency-penalty", "1.5")


@pytest.mark.parametrize("options", [("--greedy",), ("--seed", "7", "--top-k", "20", "--temperature", "0.9"),
                                     PENALISED])
def test_generate_runs_the_engine_and_equals_the_reference_decoder(capsys, monkeypatch, tiny_model_dir, options):
    from nemotron.checkpoint.load import load_model
    from nemotron.engine import llm
    from nemotron.engine.generate import stream_generate
    from nemotron.engine.sampling import SamplingParams

    steps = []
    step = llm.LLMEngine.step
    monkeypatch.setattr(llm.LLMEngine, "step", lambda engine: steps.append(1) or step(engine))
    code, out, _ = run_cli(capsys, "generate", str(tiny_model_dir), "The cat sees the moon", "-n", "16",
                             "--dtype", "float32", *options)
    loaded = load_model(tiny_model_dir, dtype="float32")
    greedy = options[0] == "--greedy"
    params = SamplingParams(max_tokens=16, temperature=0.0 if greedy else 0.9, top_k=0 if greedy else 20,
                            top_p=0.9, seed=None if greedy else 7)  # --top-p defaults to 0.9
    if options == PENALISED:
        params = SamplingParams(max_tokens=16, temperature=0.9, top_p=0.9, seed=7, min_p=0.05, presence_penalty=0.5,
                                frequency_penalty=1.5)
    ids = loaded.tokenizer.encode("The cat sees the moon")
    reference = "".join(chunk.text for chunk in stream_generate(loaded.model, loaded.tokenizer, ids, params))
    assert code == 0 and len(steps) >= 16 and out == reference + "\n"


def test_chat_mode_stops_at_the_chat_stop_string(capsys, tiny_model_dir):
    code, out, err = run_cli(capsys, "generate", str(tiny_model_dir), "hello", "--chat", "-n", "5", "--greedy")
    assert code == 0 and "<extra_id_1>" not in out


@pytest.mark.parametrize("argv, needle", [
    (("generate", "/nonexistent/model", "hi"), "is not a directory, a .nemo file or a preset"),
    (("generate", "tiny", "hi"), "--tokenizer"),
    (("info", "llama-70b"), "presets:"),
])
def test_errors_are_one_line(capsys, argv, needle):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and needle in error_lines[0]
    assert "Traceback" not in err


def test_bad_sampling_parameter_is_one_line(capsys, tiny_model_dir):
    code, _, err = run_cli(capsys, "generate", str(tiny_model_dir), "hi", "--top-p", "1.5")
    assert code == 2 and err.strip().startswith("error: top_p")


def test_shape_mismatch_names_the_tensor(capsys, tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    tensors = load_file(broken / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"] = torch.zeros(7, 64)
    save_file(tensors, broken / "model.safetensors")
    code, _, err = run_cli(capsys, "generate", str(broken), "hi")
    assert code == 2 and "model.layers.1.mlp.up_proj.weight" in err and "(7, 64)" in err


def test_pickled_checkpoint_with_objects_needs_trust_pickle(capsys, tiny_model_dir, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(tiny_model_dir / "config.json", pickled)
    shutil.copy(tiny_model_dir / "tokenizer.model", pickled)
    state = dict(load_file(tiny_model_dir / "model.safetensors"))
    # An arbitrary class instance: what weights_only=True refuses to unpickle.
    torch.save({**state, "model.extra": argparse.Namespace(note="hi")}, pickled / "pytorch_model.bin")
    code, _, err = run_cli(capsys, "generate", str(pickled), "hi", "-n", "2")
    assert code == 2 and "--trust-pickle" in err


def test_convert_to_sharded_directory_round_trips(capsys, tiny_model_dir, tmp_path):
    code, _, _ = run_cli(capsys, "convert", str(tiny_model_dir), str(tmp_path / "out"), "--shard-size", "40KB")
    assert code == 0
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    assert (tmp_path / "out" / "tokenizer.model").is_file()
    args = ("generate", "{}", "The dog", "-n", "6", "--greedy")
    original = run_cli(capsys, *[a.format(tiny_model_dir) for a in args])[1]
    assert run_cli(capsys, *[a.format(tmp_path / "out") for a in args])[1] == original


def test_interactive_chat_over_a_real_process(tiny_model_dir):
    done = subprocess.run([sys.executable, "-m", "nemotron", "chat", str(tiny_model_dir), "-n", "4", "--greedy"],
                          input="hello there\n/reset\nagain\n/exit\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("assistant> ") == 2


def test_a_closed_or_full_output_ends_without_a_traceback(tiny_model_dir):
    command = [sys.executable, "-m", "nemotron", "generate", str(tiny_model_dir), "The dog", "-n", "240",
               "--seed", "1"]
    reader = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.read(5)
    reader.stdout.close()  # `| head -c 5`
    assert reader.wait(timeout=120) == 141 and b"Traceback" not in reader.stderr.read()
    with open("/dev/full", "w") as full:
        done = subprocess.run(command[:-4] + ["-n", "3", "--seed", "1"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().endswith("error: cannot write the output: No space left on device")


def test_chat_skips_a_line_that_is_not_utf8(tiny_model_dir):
    done = subprocess.run([sys.executable, "-m", "nemotron", "chat", str(tiny_model_dir), "-n", "3", "--greedy"],
                          input=b"hello\ncaf\xe9\nagain\n", capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(b"assistant> ") == 2 and b"that line is not UTF-8" in done.stderr


def test_convert_refuses_a_directory_with_a_checkpoint_and_a_dtype_for_a_quantized_one(tiny_model_dir, tmp_path,
                                                                                     capsys):
    assert run_cli(capsys, "convert", str(tiny_model_dir), str(tmp_path / "out"))[0] == 0
    status, _, err = run_cli(capsys, "convert", str(tiny_model_dir), str(tmp_path / "out"), "--dtype", "bfloat16")
    assert status == 2 and "already holds a checkpoint; choose an empty directory" in err
    assert run_cli(capsys, "quantize", str(tiny_model_dir), str(tmp_path / "q"), "--scheme", "int8")[0] == 0
    status, _, err = run_cli(capsys, "convert", str(tmp_path / "q"), str(tmp_path / "q16"), "--dtype", "bfloat16")
    assert status == 2 and "is quantized (int8): its tensors keep the dtypes they are stored in" in err
    status, out, _ = run_cli(capsys, "info", str(tmp_path / "q"))
    assert status == 0 and "WARNING" not in out
