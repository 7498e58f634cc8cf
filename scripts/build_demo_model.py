#!/usr/bin/env python
"""Rebuild the embedded demo model (src/nemotron/assets/demo) from scratch: the same as
`nemotron train demo`. Takes about 20 minutes on a 2-core CPU; rerunning resumes from build/demo.

    python scripts/build_demo_model.py              # corpus -> tokenizer -> pretraining -> SFT -> export
    python scripts/build_demo_model.py --measure    # training tokens/s of the candidate shapes here
"""
from __future__ import annotations

import argparse
import sys

from nemotron.errors import NemotronError
from nemotron.train.cli import add_train_commands, run_train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build_demo_model.py")
    add_train_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", "demo", *(sys.argv[1:] if argv is None else argv)])
    try:
        run_train(args)
    except NemotronError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
