"""From a .nemo archive to a running model, through the user-facing entry points."""
from __future__ import annotations

import json

import torch

from nemotron.checkpoint import megatron
from nemotron.checkpoint.load import convert, load_config, load_model
from nemotron.cli.main import main
from tests.checkpoint.test_nemo import CONFIG, TOKENIZER_FILE, make_model, tar_dir, write_root, yaml_config


def write_nemo_with_real_tokenizer(tmp_path, tokenizer_file):
    model = make_model(CONFIG)
    root = write_root(tmp_path / "root", yaml_config())
    (root / TOKENIZER_FILE).write_bytes(tokenizer_file.read_bytes())
    torch.save(megatron.hf_to_megatron(model.state_dict(), CONFIG), root / "model_weights.ckpt")
    return model, tar_dir(root, tmp_path / "model.nemo")


def test_nemo_to_hf_conversion_keeps_logits_and_tokenizer(tmp_path, sp_tokenizer_file):
    model, archive = write_nemo_with_real_tokenizer(tmp_path, sp_tokenizer_file)
    out = convert(archive, tmp_path / "hf")
    assert (out / "tokenizer.model").read_bytes() == sp_tokenizer_file.read_bytes()
    converted = load_model(out)
    direct = load_model(archive)
    ids = torch.randint(0, CONFIG.vocab_size, (1, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(ids)
        assert torch.equal(converted.model(ids), expected)
        assert torch.equal(direct.model(ids), expected)
    assert direct.tokenizer.encode("the cat") == converted.tokenizer.encode("the cat")


def test_config_of_a_nemo_archive_without_converting_weights(tmp_path, sp_tokenizer_file):
    _, archive = write_nemo_with_real_tokenizer(tmp_path, sp_tokenizer_file)
    assert load_config(archive) == CONFIG.replace(max_position_embeddings=4096)


def test_info_on_a_nemo_archive(tmp_path, sp_tokenizer_file, capsys):
    _, archive = write_nemo_with_real_tokenizer(tmp_path, sp_tokenizer_file)
    assert main(["info", str(archive), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["source"] == "NeMo checkpoint" and info["parameters"] == CONFIG.num_parameters()


def test_bf16_load_halves_memory(tiny_model_dir):
    loaded = load_model(tiny_model_dir, dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in loaded.model.parameters())
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        reference = load_model(tiny_model_dir, dtype="float32").model(ids)
        assert (loaded.model(ids).float() - reference).abs().max() < 0.05 * reference.abs().max()
