import argparse
import json

import torch

from nemotron.checkpoint.load import load_model
from nemotron.train.cli import add_train_commands, run_train


def nemotron(*argv: str) -> None:
    parser = argparse.ArgumentParser()
    add_train_commands(parser.add_subparsers(dest="command", required=True))
    run_train(parser.parse_args(["train", *argv]))


def test_tokenizer_pretrain_sft_from_the_command_line(tmp_path, documents, chats):
    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents[:200]))
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps(c) + "\n" for c in chats[:50]))
    nemotron("tokenizer", "--data", str(text), str(chat), "--out", str(tmp_path / "tok"), "--vocab-size", "800")
    tiny = ["--layers", "1", "--hidden-size", "32", "--ffn-size", "64", "--heads", "4", "--kv-heads", "2",
            "--head-dim", "8", "--context", "64"]
    nemotron("pretrain", "--data", str(text), "--valid", str(text), "--tokenizer", str(tmp_path / "tok"),
             "--out", str(tmp_path / "pre"), "--steps", "4", "--warmup", "1", "--batch-size", "2", "--seq-len", "32",
             *tiny)
    nemotron("sft", "--data", str(chat), "--model", str(tmp_path / "pre" / "final"), "--out", str(tmp_path / "sft"),
             "--steps", "3", "--warmup", "1", "--batch-size", "2", "--seq-len", "64")
    pre, sft = load_model(tmp_path / "pre" / "final"), load_model(tmp_path / "sft" / "final")
    assert pre.config == sft.config and pre.config.num_layers == 1 and sft.tokenizer is not None
    assert not torch.equal(pre.model.lm_head.weight, sft.model.lm_head.weight)
    assert (tmp_path / "sft" / "checkpoint-0000003" / "trainer_state.pt").is_file()
