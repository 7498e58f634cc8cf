"""`nemotron train tokenizer|pretrain|sft|demo`: the parsers and work live in nemotron.train.cli."""
from __future__ import annotations

from nemotron.train.cli import add_train_commands, run_train


def register(commands) -> None:
    add_train_commands(commands).set_defaults(func=run_train)
