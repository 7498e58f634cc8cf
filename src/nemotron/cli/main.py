"""The `nemotron` command. Every error a user can cause ends as one line on stderr, exit status 2."""
from __future__ import annotations

import argparse
import sys

from nemotron.errors import NemotronError


def _add_model_loading(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="compute dtype (default: the checkpoint's stored dtype)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--tokenizer", help="tokenizer.model or tokenizer.json to use instead of the model's own")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow loading pickled checkpoints that hold arbitrary Python objects (trusted files only)")


def _add_sampling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--max-new-tokens", type=int, default=256)
    parser.add_argument("--greedy", action="store_true", help="argmax decoding; ignores every sampling knob")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0, help="0 = off")
    parser.add_argument("--top-p", type=float, default=0.9, help="1.0 = off")
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemotron", description="Run Nemotron-family models. MODEL is a Hugging Face directory, a .nemo "
        "file or directory, or a preset name (random weights); omitted, the embedded demo model is used.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="configuration, parameter count and weight bytes of a model")
    info.add_argument("model")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--trust-pickle", action="store_true")

    generate = commands.add_parser("generate", help="complete a prompt, streaming to the terminal")
    generate.add_argument("args", nargs="+", metavar="[MODEL] PROMPT")
    generate.add_argument("--chat", action="store_true", help="wrap the prompt in the Instruct chat format")
    generate.add_argument("--system", default="", help="system prompt (with --chat)")
    generate.add_argument("--add-bos", action="store_true", help="prepend <s> to the prompt")
    _add_model_loading(generate)
    _add_sampling(generate)

    chat = commands.add_parser("chat", help="interactive chat in the Nemotron Instruct format")
    chat.add_argument("model", nargs="?")
    chat.add_argument("--system", default="", help="system prompt (the recommended one is empty)")
    _add_model_loading(chat)
    _add_sampling(chat)

    convert = commands.add_parser("convert", help="convert a .nemo or HF checkpoint to a Hugging Face directory")
    convert.add_argument("src")
    convert.add_argument("dst")
    convert.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: keep stored dtype")
    convert.add_argument("--shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB, 500MB")
    convert.add_argument("--trust-pickle", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "info":
            from nemotron.cli import info

            info.run(args.model, args.json, args.trust_pickle)
        elif args.command in ("generate", "chat"):
            from nemotron.cli import generate

            generate.run(args)
        elif args.command == "convert":
            from nemotron.cli import convert

            convert.run(args)
    except NemotronError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
