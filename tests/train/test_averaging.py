"""Weight averaging (WARM): the averaged state dict is exactly the members' mean; `nemotron train
average` merges model directories of one shape and refuses others; `nemotron train reward --seeds`
trains one member per seed and averages them into one reward model of the same shape."""
from __future__ import annotations

import json

import pytest
import torch

from nemotron.checkpoint.hf import iter_tensors
from nemotron.checkpoint.load import load_model
from nemotron.cli.main import main
from nemotron.errors import CheckpointError, ConfigError
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import NemotronForCausalLM, NemotronForRewardModel, init_random_weights
from nemotron.train.averaging import average_model_dirs, average_state_dicts
from nemotron.train.checkpoint import save_model_dir

from .test_alignment_cli import LOOP, _pairs, base_dir  # noqa: F401  (base_dir: a fixture)


def _model(tokenizer, seed: int, layers: int = 2) -> NemotronForCausalLM:
    config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_layers=layers,
                         num_heads=4, num_kv_heads=2, head_dim=8, max_position_embeddings=128, torch_dtype="float32")
    model = NemotronForCausalLM(config)
    init_random_weights(model, seed=seed, std=0.05)
    return model


def test_the_average_is_the_weighted_mean_of_the_members():
    generator = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(3, 4, generator=generator), "b": torch.randn(4, generator=generator),
               "half": torch.randn(5, generator=generator).to(torch.bfloat16), "count": torch.tensor([7])}
              for _ in range(3)]
    mean = average_state_dicts(states)
    torch.testing.assert_close(mean["w"], (states[0]["w"] + states[1]["w"] + states[2]["w"]) / 3, rtol=0, atol=1e-6)
    assert mean["half"].dtype == torch.bfloat16 and torch.equal(mean["count"], torch.tensor([7]))
    weighted = average_state_dicts(states[:2], weights=[3, 1])
    torch.testing.assert_close(weighted["b"], 0.75 * states[0]["b"] + 0.25 * states[1]["b"], rtol=0, atol=1e-6)


def test_states_of_different_shapes_or_weights_are_refused():
    a, b = {"w": torch.zeros(2, 3)}, {"w": torch.zeros(3, 2)}
    with pytest.raises(CheckpointError, match=r"w is \(3, 2\) there and \(2, 3\)"):
        average_state_dicts([a, b])
    with pytest.raises(CheckpointError, match="lacks w"):
        average_state_dicts([a, {"v": torch.zeros(2, 3)}])
    with pytest.raises(CheckpointError, match="integer tensor n differs"):
        average_state_dicts([{"n": torch.tensor(1)}, {"n": torch.tensor(2)}])
    with pytest.raises(ConfigError, match="at least 2 models"):
        average_state_dicts([a])
    with pytest.raises(ConfigError, match="2 averaging weights for 3 models"):
        average_state_dicts([a, a, a], weights=[1, 1])


def test_average_command_merges_model_directories_and_refuses_other_shapes(tmp_path, capsys, tokenizer):
    dirs = [save_model_dir(_model(tokenizer, seed), tokenizer, tmp_path / f"m{seed}") for seed in range(3)]
    assert main(["train", "average", str(tmp_path / "avg"), *map(str, dirs)]) == 0
    members = [dict(iter_tensors(d)) for d in dirs]
    averaged = dict(iter_tensors(tmp_path / "avg"))
    assert averaged.keys() == members[0].keys()
    for name, tensor in averaged.items():
        torch.testing.assert_close(tensor, sum(m[name] for m in members) / 3, rtol=0, atol=1e-6)
    loaded = load_model(tmp_path / "avg")  # config and tokenizer come along: a model like any other
    assert loaded.tokenizer is not None and loaded.config == load_model(dirs[0]).config

    deeper = save_model_dir(_model(tokenizer, 0, layers=3), tokenizer, tmp_path / "deeper")
    capsys.readouterr()
    assert main(["train", "average", str(tmp_path / "x"), str(dirs[0]), str(deeper)]) == 2
    err = capsys.readouterr().err
    assert "config.json differ" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "average", str(tmp_path / "x"), str(dirs[0])]) == 2
    assert "at least 2 models" in capsys.readouterr().err
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="is a LoRA adapter; merge it"):
        average_model_dirs([dirs[0], adapter], tmp_path / "x")


def test_reward_seeds_train_members_and_average_them_into_one_reward_model(tmp_path, capsys, base_dir):  # noqa: F811
    pairs, held_out = _pairs(tmp_path / "pairs.jsonl", 12), _pairs(tmp_path / "held_out.jsonl", 6, offset=50)
    out = tmp_path / "rm"
    assert main(["train", "reward", "--model", str(base_dir), "--data", str(pairs), "--valid", str(held_out),
                 "--out", str(out), "--add-layers", "1", "--seeds", "3", "5", *LOOP]) == 0
    first, second = (dict(iter_tensors(out / f"seed-{s}" / "final")) for s in (3, 5))
    assert any(not torch.equal(first[k], second[k]) for k in first)  # the batch orders differ
    final = load_model(out / "final")
    assert isinstance(final.model, NemotronForRewardModel) and final.config.num_layers == 3  # the members' shape
    for name, tensor in final.model.state_dict().items():
        torch.testing.assert_close(tensor, (first[name] + second[name]) / 2, rtol=0, atol=1e-6)
    report = json.loads((out / "warm.json").read_text())
    assert report["seeds"] == [3, 5] and set(report["members"]) == {"3", "5"}
    assert report["average"] == json.loads((out / "reward_eval.json").read_text())["accuracy"]
    assert "of the average" in capsys.readouterr().out

    # A rerun resumes each member at its end, and the average is the same.
    assert main(["train", "reward", "--model", str(base_dir), "--data", str(pairs), "--valid", str(held_out),
                 "--out", str(out), "--add-layers", "1", "--seeds", "3", "5", *LOOP]) == 0
    for name, tensor in dict(iter_tensors(out / "final")).items():
        torch.testing.assert_close(tensor, final.model.state_dict()[name])
    for bad in (["--seeds", "1"], ["--seeds", "1", "1"], ["--seeds", "1", "2", "--lora-r", "2"]):
        capsys.readouterr()
        assert main(["train", "reward", "--model", str(base_dir), "--data", str(pairs), "--out", str(tmp_path / "x"),
                     *bad, *LOOP]) == 2
        assert "--seeds" in capsys.readouterr().err


def test_the_last_checkpoints_of_a_run_average_into_a_model(tmp_path, base_dir):  # noqa: F811
    pairs = _pairs(tmp_path / "pairs.jsonl", 12)
    out = tmp_path / "rm"
    assert main(["train", "reward", "--model", str(base_dir), "--data", str(pairs), "--out", str(out),
                 *LOOP, "--checkpoint-every", "1", "--keep-checkpoints", "3"]) == 0
    kept = sorted(p.name for p in out.glob("checkpoint-*"))
    assert kept == ["checkpoint-0000002", "checkpoint-0000003", "checkpoint-0000004"]
    assert main(["train", "average", str(tmp_path / "swa"), *(str(out / k) for k in kept)]) == 0
    states = [dict(iter_tensors(out / k)) for k in kept]
    for name, tensor in dict(iter_tensors(tmp_path / "swa")).items():
        torch.testing.assert_close(tensor, sum(s[name] for s in states) / 3, rtol=0, atol=1e-6)
    assert isinstance(load_model(tmp_path / "swa").model, NemotronForRewardModel)
