"""`nemotron info` and `nemotron memory` on Nemotron-H presets and checkpoint directories."""
from __future__ import annotations

import json

import pytest
import torch

from nemotron.cli.main import main
from nemotron.model.nemotron_h import NemotronHForCausalLM, init_random_weights
from nemotron.model.nemotron_h_config import NemotronHConfig


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def hybrid_dir(tmp_path_factory):
    from nemotron.checkpoint.hf import save_hf_dir

    config = NemotronHConfig(vocab_size=96, hidden_size=32, layer_types=("mamba", "mlp", "attention", "mamba"),
                             intermediate_size=48, num_heads=4, num_kv_heads=2, head_dim=8, mamba_num_heads=4,
                             mamba_head_dim=8, ssm_state_size=8, n_groups=2, torch_dtype="float32")
    model = NemotronHForCausalLM(config)
    init_random_weights(model, seed=0)
    directory = tmp_path_factory.mktemp("nemotron_h")
    save_hf_dir(model.state_dict(), config, directory)
    return directory, model.eval()


def test_info_of_the_8b_preset(capsys):
    code, out, _ = run_cli(capsys, "info", "nemotron-h-8b")
    assert code == 0
    assert "24 Mamba-2, 4 attention, 24 MLP" in out and "8.10B" in out and "103.6 MB per sequence" in out


def test_info_of_a_directory_counts_the_tensors_on_disk(capsys, hybrid_dir):
    code, out, _ = run_cli(capsys, "info", str(hybrid_dir[0]), "--json")
    info = json.loads(out)
    assert code == 0 and info["architecture"] == "hybrid causal LM"
    assert info["parameters"] == info["parameters_on_disk"]
    assert info["config"]["hybrid_override_pattern"] == "M-*M"


def test_memory_counts_attention_kv_and_a_constant_mamba_state(capsys):
    _, out, _ = run_cli(capsys, "memory", "nemotron-h-8b", "--context", "2048", "--json")
    short = json.loads(out)["whole_model"]
    _, out, _ = run_cli(capsys, "memory", "nemotron-h-8b", "--context", "8192", "--json")
    long = json.loads(out)["whole_model"]
    assert long["mamba_state"] == short["mamba_state"] == 24 * (3 * 10240 + 128 * 64 * 128) * 4
    assert long["kv_cache"] == 4 * short["kv_cache"] == 8192 * 2 * 4 * 8 * 128 * 2


def test_hybrid_models_refuse_engine_quantization(capsys):
    code, _, err = run_cli(capsys, "memory", "nemotron-h-8b", "--quant", "int8")
    assert code == 2 and "Nemotron-H" in err


def test_save_hf_dir_round_trip_loads(hybrid_dir):
    from nemotron.checkpoint.load import load_model

    directory, model = hybrid_dir
    loaded = load_model(directory)
    assert loaded.config == model.config
    ids = torch.randint(0, 96, (1, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.model(ids), model(ids))


def test_info_says_why_the_engine_has_no_prefix_caching(capsys):
    code, out, _ = run_cli(capsys, "info", "nemotron-h-8b")
    assert code == 0 and "prefix caching is off" in out


def test_generate_and_chat_on_a_hybrid_checkpoint(capsys, tmp_path, monkeypatch):
    """`nemotron generate` / `chat` stream from a Nemotron-H directory with a byte-level BPE tokenizer.json."""
    pytest.importorskip("transformers")
    import io

    from nemotron.checkpoint.load import load_model
    from nemotron.engine.generate import generate
    from nemotron.engine.sampling import SamplingParams
    from tests.engine.test_hybrid_engine import HYBRID_SHAPES, write_hybrid_dir

    write_hybrid_dir(tmp_path, HYBRID_SHAPES[2], seed=14)
    loaded = load_model(tmp_path, dtype="float32")
    expected = generate(loaded.model, loaded.tokenizer, loaded.tokenizer.encode("The lazy dog"),
                        SamplingParams(max_new_tokens=8, greedy=True)).text
    code, out, err = run_cli(capsys, "generate", str(tmp_path), "The lazy dog", "--greedy", "-n", "8",
                             "--dtype", "float32")
    assert code == 0 and out == expected + "\n" and "tokens/s" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n/exit\n"))
    code, out, _ = run_cli(capsys, "chat", str(tmp_path), "--greedy", "-n", "4", "--dtype", "float32")
    assert code == 0 and out.startswith("you> assistant> ")
