"""`nemotron generate` and `nemotron chat`: arguments. The work is in `nemotron.cli.textgen`, imported
only when one of these commands runs (so other commands start without loading torch)."""
from __future__ import annotations

import argparse

from nemotron.cli.main import add_model_loading, add_parallel


def add_sampling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--max-new-tokens", type=int, default=256)
    parser.add_argument("--greedy", action="store_true", help="argmax decoding (NeMo's); ignores every sampling knob "
                        "and penalty (--temperature 0 is vLLM's greedy: the penalties still apply)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0, help="0 = off")
    parser.add_argument("--top-p", type=float, default=0.9, help="1.0 = off")
    parser.add_argument("--min-p", type=float, default=0.0,
                        help="drop tokens less likely than this times the most likely one; 0 = off")
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--presence-penalty", type=float, default=0.0,
                        help="-2..2: subtracted from the logit of every token generated so far")
    parser.add_argument("--frequency-penalty", type=float, default=0.0,
                        help="-2..2: subtracted from a generated token's logit once per occurrence")
    parser.add_argument("--seed", type=int, default=None)


def register(commands) -> None:
    generate = commands.add_parser("generate", help="complete a prompt, streaming to the terminal")
    generate.add_argument("args", nargs="+", metavar="[MODEL] PROMPT",
                          help="the prompt, after the model when one is given (a prompt that starts with - "
                               "goes after --)")
    generate.add_argument("--chat", action="store_true", help="wrap the prompt in the Instruct chat format")
    generate.add_argument("--system", default="", help="system prompt (with --chat)")
    generate.add_argument("--add-bos", action="store_true", help="prepend <s> to the prompt")
    add_model_loading(generate)
    add_parallel(generate)
    add_sampling(generate)
    generate.set_defaults(func=run)

    chat = commands.add_parser("chat", help="interactive chat in the Nemotron Instruct format")
    chat.add_argument("model", nargs="?")
    chat.add_argument("--system", default="", help="system prompt (the recommended one is empty)")
    add_model_loading(chat)
    add_parallel(chat)
    add_sampling(chat)
    chat.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from nemotron.cli import textgen

    textgen.run(args)
