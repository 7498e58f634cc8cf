"""`nemotron train dpo | rpo | reward | reward-eval | report` and LoRA adapters from the command line,
on `nemotron sdg`-style files, through to `convert --merge-lora` and `generate --lora`."""
from __future__ import annotations

import json

import pytest
import torch

from nemotron.checkpoint.load import load_model
from nemotron.cli.main import main
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import NemotronForCausalLM, NemotronForRewardModel, init_random_weights
from nemotron.train.checkpoint import save_model_dir


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tokenizer):
    config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=8, max_position_embeddings=128, torch_dtype="float32")
    model = NemotronForCausalLM(config)
    init_random_weights(model, seed=0, std=0.05)
    return save_model_dir(model, tokenizer, tmp_path_factory.mktemp("base"))


def _pairs(path, n, offset=0):
    rows = []
    for k in range(offset, offset + n):
        prompt = [{"role": "user", "content": f"What is {k} plus one?"}]
        rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": f"{k} plus one is {k + 1}."}],
                     "rejected": [{"role": "assistant", "content": "The dog runs."}], "chosen_reward": 3.0,
                     "rejected_reward": 0.5 + (k % 3) * 0.5, "judge": "ground_truth",
                     "category": "math" if k % 2 else "chat"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rated(path, n):
    rows = [{"prompt": f"Say {k}.", "response": f"{k}." if k % 2 else "No.", "helpfulness": 4.0 if k % 2 else 1.0,
             "correctness": 4.0 if k % 2 else 0.0, "verbosity": 1.0} for k in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


LOOP = ("--steps", "4", "--warmup", "1", "--batch-size", "4", "--seq-len", "64", "--log-every", "1",
        "--checkpoint-every", "2", "--lr", "5e-3", "--no-progress")


def test_dpo_with_lora_writes_a_peft_adapter_that_merges_and_generates(tmp_path, capsys, base_dir):
    data = _pairs(tmp_path / "pairs.jsonl", 12)
    assert main(["train", "dpo", "--model", str(base_dir), "--data", str(data), "--valid", str(data),
                 "--out", str(tmp_path / "dpo"), "--sft-weight", "0.1", "--lora-r", "4",
                 "--micro-batch-size", "2", *LOOP]) == 0
    adapter = tmp_path / "dpo" / "final"
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (tmp_path / "dpo" / "checkpoint-0000004" / "adapter_model.safetensors").is_file()  # adapters only
    records = [json.loads(line) for line in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "accuracy", "margin"} <= records[0].keys() and "valid_loss" in records[-1]

    assert main(["convert", str(base_dir), str(tmp_path / "merged"), "--merge-lora", str(adapter)]) == 0
    base, merged = load_model(base_dir), load_model(tmp_path / "merged")
    assert not torch.equal(base.model.model.layers[0].self_attn.q_proj.weight,
                           merged.model.model.layers[0].self_attn.q_proj.weight)
    capsys.readouterr()
    prompt = ("generate", "What is 3 plus one?", "-n", "8", "--greedy", "--dtype", "float32")  # exact: fp32
    assert main([prompt[0], str(tmp_path / "merged"), *prompt[1:]]) == 0
    from_merged = capsys.readouterr().out
    assert main([prompt[0], str(base_dir), *prompt[1:], "--lora", str(adapter)]) == 0
    assert capsys.readouterr().out == from_merged
    assert main(["convert", str(base_dir), str(tmp_path / "merged.gguf"), "--merge-lora", str(adapter),
                 "--to", "gguf", "--gguf-type", "f32"]) == 0  # the merged model as one GGUF file
    capsys.readouterr()
    assert main([prompt[0], str(tmp_path / "merged.gguf"), *prompt[1:]]) == 0
    assert capsys.readouterr().out == from_merged


def test_rpo_needs_rewards_and_trains_every_weight(tmp_path, capsys, base_dir):
    data = _pairs(tmp_path / "pairs.jsonl", 8)
    assert main(["train", "rpo", "--model", str(base_dir), "--data", str(data), "--out", str(tmp_path / "rpo"),
                 "--eta", "2", *LOOP]) == 0
    trained = load_model(tmp_path / "rpo" / "final")
    assert not torch.equal(trained.model.lm_head.weight, load_model(base_dir).model.lm_head.weight)
    no_rewards = tmp_path / "bare.jsonl"
    no_rewards.write_text(json.dumps({"prompt": "Hi", "chosen": "Hello", "rejected": "Go"}) + "\n")
    capsys.readouterr()
    assert main(["train", "rpo", "--model", str(base_dir), "--data", str(no_rewards), "--out",
                 str(tmp_path / "x"), *LOOP]) == 2
    assert "RPO needs the reward gap" in capsys.readouterr().err


def test_reward_model_from_a_language_model_evaluates_and_reports(tmp_path, capsys, base_dir):
    pairs, rated = _pairs(tmp_path / "pairs.jsonl", 12), _rated(tmp_path / "rated.jsonl", 8)
    held_out = _pairs(tmp_path / "held_out.jsonl", 6, offset=50)
    assert main(["train", "reward", "--model", str(base_dir), "--data", str(pairs), str(rated),
                 "--valid", str(held_out), "--out", str(tmp_path / "rm"), *LOOP]) == 0
    reward = load_model(tmp_path / "rm" / "final")
    assert isinstance(reward.model, NemotronForRewardModel) and reward.config.num_reward_attributes == 9
    evaluation = json.loads((tmp_path / "rm" / "reward_eval.json").read_text())
    assert evaluation["pairs"] == 6 and set(evaluation["by_category"]) == {"math", "chat"}
    from nemotron.model.config import REWARD_WEIGHTS
    from nemotron.train.preference_data import encode_scored, read_preference_data
    from nemotron.train.reward import score

    rows = read_preference_data([held_out])
    sequences = [encode_scored(r.prompt, reply, reward.tokenizer)[-64:] for r in rows for reply in (r.chosen, r.rejected)]
    margin = (score(reward.model, sequences, reward.tokenizer.pad_id or 0) @ torch.tensor(REWARD_WEIGHTS)).view(-1, 2)
    margin = margin[:, 0] - margin[:, 1]
    assert evaluation["accuracy"] == pytest.approx((margin > 0).float().mean().item())
    assert evaluation["bt_loss"] == pytest.approx(-torch.nn.functional.logsigmoid(margin).mean().item(), rel=1e-4)
    capsys.readouterr()
    assert main(["train", "reward-eval", str(tmp_path / "rm" / "final"), "--data", str(held_out), str(rated),
                 "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["pairs"] == 6 and set(table["attributes"]) == {"helpfulness", "correctness", "verbosity"}
    assert main(["train", "report", str(tmp_path / "rm")]) == 0
    assert (tmp_path / "rm" / "curves.png").stat().st_size > 10_000


def test_reward_model_with_added_layers_trains_only_them_and_loads_deeper(tmp_path, base_dir):
    pairs = _pairs(tmp_path / "pairs.jsonl", 12)
    base = load_model(base_dir).model
    assert main(["train", "reward", "--model", str(base_dir), "--data", str(pairs), "--out", str(tmp_path / "rm"),
                 "--add-layers", "2", "--train-added-only", *LOOP]) == 0
    reward = load_model(tmp_path / "rm" / "final").model
    assert reward.config.num_layers == 4 and len(reward.model.layers) == 4
    for name, weight in base.model.state_dict().items():  # the language model's layers are untouched
        assert torch.equal(reward.model.state_dict()[name], weight) == (not name.startswith("norm.")), name
    assert reward.model.layers[2].self_attn.o_proj.weight.abs().sum() > 0  # the added layers learned
    assert reward.rm_head.weight.abs().sum() > 0


def test_added_layers_need_add_layers_and_no_lora(tmp_path, capsys, base_dir):
    pairs = _pairs(tmp_path / "pairs.jsonl", 4)
    for extra in (["--train-added-only"], ["--add-layers", "1", "--train-added-only", "--lora-r", "2"]):
        assert main(["train", "reward", "--model", str(base_dir), "--data", str(pairs), "--out",
                     str(tmp_path / "x"), *extra, *LOOP]) == 2
        assert "--train-added-only needs --add-layers" in capsys.readouterr().err
    assert main(["train", "reward", "--model", str(base_dir), "--data", str(pairs), "--out", str(tmp_path / "x"),
                 "--add-layers", "-1", *LOOP]) == 2


def test_reward_model_with_an_lm_loss_logs_it_and_needs_a_language_model(tmp_path, capsys, base_dir):
    pairs = _pairs(tmp_path / "pairs.jsonl", 8)
    assert main(["train", "reward", "--model", str(base_dir), "--data", str(pairs), "--out", str(tmp_path / "rm"),
                 "--lm-weight", "0.5", "--add-layers", "1", *LOOP]) == 0
    records = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["lm_loss"] > 0 for r in records if "loss" in r)
    assert isinstance(load_model(tmp_path / "rm" / "final").model, NemotronForRewardModel)  # no LM head kept
    capsys.readouterr()
    assert main(["train", "reward", "--model", str(tmp_path / "rm" / "final"), "--data", str(pairs), "--out",
                 str(tmp_path / "again"), "--lm-weight", "0.5", *LOOP]) == 2
    assert "--lm-weight, --distill-weight and --dense-weight need a language model" in capsys.readouterr().err


def test_reward_model_keeps_the_weights_of_its_best_validation(tmp_path, capsys, base_dir):
    import torch.nn.functional as F

    from nemotron.model.config import REWARD_WEIGHTS
    from nemotron.train.preference_data import encode_scored, read_preference_data
    from nemotron.train.reward import score

    pairs, held_out = _pairs(tmp_path / "pairs.jsonl", 12), _pairs(tmp_path / "held_out.jsonl", 4, offset=50)
    assert main(["train", "reward", "--model", str(base_dir), "--data", str(pairs), "--valid", str(held_out),
                 "--out", str(tmp_path / "rm"), "--eval-every", "1", "--eval-batches", "1", "--keep-best",
                 *LOOP, "--lr", "5e-2"]) == 0
    records = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "valid_accuracy" in r]
    assert [r["step"] for r in evaluations] == [1, 2, 3, 4]
    ranked = sorted(evaluations, key=lambda r: (-r["valid_accuracy"], r["valid_loss"], r["step"]))
    assert evaluations[-1]["best_step"] == ranked[0]["step"]
    # OUT/final holds the kept weights: their validation loss over the 4 pairs (one batch) is the one logged.
    final = load_model(tmp_path / "rm" / "final")
    rows = read_preference_data([held_out])
    sequences = [encode_scored(r.prompt, reply, final.tokenizer)[-64:]  # --seq-len 64 keeps the end
                 for r in rows for reply in (r.chosen, r.rejected)]
    reward = score(final.model, sequences, final.tokenizer.pad_id) @ torch.tensor(REWARD_WEIGHTS)
    loss = -F.logsigmoid(reward[0::2] - reward[1::2]).mean().item()
    assert loss == pytest.approx(ranked[0]["valid_loss"], abs=2e-4)
    assert ranked[0]["step"] != 4 and abs(loss - evaluations[-1]["valid_loss"]) > 1e-2  # not the last weights

    capsys.readouterr()
    assert main(["train", "reward", "--model", str(base_dir), "--data", str(pairs), "--out", str(tmp_path / "x"),
                 "--keep-best", "--eval-every", "1", *LOOP]) == 2
    err = capsys.readouterr().err
    assert "keep_best needs validation data (--valid)" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "reward", "--model", str(base_dir), "--data", str(pairs), "--valid", str(held_out),
                 "--out", str(tmp_path / "x"), "--keep-best", *LOOP]) == 2
    err = capsys.readouterr().err
    assert "keep_best needs eval_every > 0" in err and len(err.strip().splitlines()) == 1


def test_reward_model_keeps_its_best_across_an_interruption(tmp_path, base_dir, monkeypatch):
    import functools

    from nemotron.checkpoint.hf import iter_tensors
    from nemotron.train import trainer as trainer_module

    pairs, held_out = _pairs(tmp_path / "pairs.jsonl", 12), _pairs(tmp_path / "held_out.jsonl", 4, offset=50)

    def train(out: str) -> int:
        return main(["train", "reward", "--model", str(base_dir), "--data", str(pairs), "--valid", str(held_out),
                     "--out", str(tmp_path / out), "--eval-every", "1", "--eval-batches", "1", "--keep-best",
                     *LOOP, "--lr", "5e-2"])

    def weights(directory):
        return dict(iter_tensors(tmp_path / directory))

    assert train("whole") == 0
    records = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    best_step = [r for r in records if "best_step" in r][-1]["best_step"]
    assert best_step <= 2  # this setup's best comes before the interruption below: what a resume must remember
    with monkeypatch.context() as patch:  # interrupted after step 2 (and its checkpoint)
        patch.setattr(trainer_module, "TrainConfig", functools.partial(trainer_module.TrainConfig, stop_at_step=2))
        assert train("resumed") == 0
    assert train("resumed") == 0
    records = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if "best_step" in r][-1]["best_step"] == best_step
    best, last = weights("whole/final"), weights("whole/checkpoint-0000004")
    for name, tensor in weights("resumed/final").items():
        torch.testing.assert_close(tensor, best[name])
    # The step-4 checkpoint holds the last weights (those its optimizer state belongs to), not the kept ones.
    assert any(not torch.equal(tensor, last[name]) for name, tensor in best.items())
    for name, tensor in weights("resumed/checkpoint-0000004").items():
        torch.testing.assert_close(tensor, last[name])


def test_reward_model_distilling_the_language_model_logs_it_and_needs_one(tmp_path, capsys, base_dir):
    pairs = _pairs(tmp_path / "pairs.jsonl", 8)
    assert main(["train", "reward", "--model", str(base_dir), "--data", str(pairs), "--out", str(tmp_path / "rm"),
                 "--distill-weight", "1", "--distill-scale", "0.05", "--add-layers", "1", *LOOP]) == 0
    records = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["distill"] > 0 for r in records if "loss" in r)
    assert main(["train", "reward", "--model", str(base_dir), "--data", str(pairs), "--valid", str(pairs), "--out",
                 str(tmp_path / "dense"), "--dense-weight", "1", "--distill-scale", "0.05", *LOOP]) == 0
    records = [json.loads(line) for line in (tmp_path / "dense" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["dense"] > 0 for r in records if "loss" in r) and records[-1]["valid_dense"] > 0
    capsys.readouterr()
    assert main(["train", "reward", "--model", str(tmp_path / "rm" / "final"), "--data", str(pairs), "--out",
                 str(tmp_path / "x"), "--distill-weight", "1", *LOOP]) == 2
    assert "--dense-weight need a language model" in capsys.readouterr().err
