"""Options may come anywhere on the command line, for every command."""
from __future__ import annotations

import pytest

from nemotron.cli.main import build_parser, main

# (command, positionals, options): every placement of the options among the positionals parses alike.
CASES = [
    (["generate"], ["MODEL", "a prompt"], ["--dtype", "bfloat16", "-n", "3", "--greedy"]),
    (["chat"], ["MODEL"], ["--system", "be brief", "--top-k", "5"]),
    (["info"], ["MODEL"], ["--json", "--trust-pickle"]),
    (["convert"], ["SRC", "DST"], ["--dtype", "float16", "--shard-size", "1GB"]),
    (["memory"], ["MODEL"], ["--tp", "2", "--json", "--context", "512"]),
    (["quantize"], ["SRC", "DST"], ["--scheme", "int8"]),
    (["serve"], ["MODEL"], ["--port", "9001", "--dtype", "float32"]),
    (["sdg", "run"], ["pipeline.yaml"], ["--out", "data", "--model", "m"]),
    (["sdg", "report"], ["data"], ["--no-plots"]),
    (["train", "sft"], [], ["--model", "dir", "--data", "a.jsonl", "--out", "o", "--steps", "3"]),
]


def _placements(positionals: list[str], options: list[str]) -> list[list[str]]:
    """Options (kept in flag/value pairs) before, between and after the positionals."""
    groups, i = [], 0
    while i < len(options):
        takes_value = i + 1 < len(options) and not options[i + 1].startswith("-")
        groups.append(options[i: i + 1 + takes_value])
        i += 1 + takes_value
    flat = [arg for group in groups for arg in group]
    out = [flat + positionals, positionals + flat]
    for cut in range(1, len(positionals) + 1):
        out.append(positionals[:cut] + flat + positionals[cut:])
    if len(groups) > 1 and positionals:  # options split around the first positional
        out.append(groups[0] + positionals[:1] + [a for g in groups[1:] for a in g] + positionals[1:])
    return out


@pytest.mark.parametrize("command, positionals, options", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_options_anywhere(command, positionals, options):
    parser = build_parser()
    parsed = [vars(parser.parse_args(command + argv)) for argv in _placements(positionals, options)]
    assert all(p == parsed[0] for p in parsed[1:])


def test_generate_model_dtype_prompt_is_understood():
    args = build_parser().parse_args(["generate", "MODEL", "--dtype", "bfloat16", "the prompt"])
    assert args.args == ["MODEL", "the prompt"] and args.dtype == "bfloat16"


def test_a_prompt_that_starts_with_a_dash_follows_double_dash():
    args = build_parser().parse_args(["generate", "MODEL", "-n", "2", "--", "-not an option"])
    assert args.args == ["MODEL", "-not an option"] and args.max_new_tokens == 2


def test_unknown_option_is_still_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "MODEL", "--no-such-flag"])
    assert exit_info.value.code == 2 and "--no-such-flag" in capsys.readouterr().err


def test_end_to_end_with_an_option_between_model_and_prompt(capsys, tiny_model_dir):
    argv = ["generate", str(tiny_model_dir), "--greedy", "-n", "4", "The cat"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(["generate", "--greedy", str(tiny_model_dir), "The cat", "-n", "4"]) == 0
    assert capsys.readouterr().out == first


def test_the_cli_makes_openmp_threads_wait_passively_unless_told(monkeypatch):
    import os

    from nemotron.cli.main import main

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main(["info", "tiny"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert main(["info", "tiny"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


@pytest.mark.parametrize("argv, expected", [
    (["generate", "-n", "2", "--", "-x"], ["-x"]),  # no MODEL before --: Python 3.11's intermixed parsing failed
    (["generate", "-n", "2", "--", "-n is a flag"], ["-n is a flag"]),
    (["generate", "-n", "2", "--", "MODEL", "-x"], ["MODEL", "-x"]),
    (["generate", "MODEL", "-n", "2", "--", "--verbose"], ["MODEL", "--verbose"]),
])
def test_everything_after_double_dash_is_positional(argv, expected):
    args = build_parser().parse_args(argv)
    assert args.args == expected and args.max_new_tokens == 2


def test_a_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "-n", "abc", "hi"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("nemotron generate: error: argument -n/--max-new-tokens: invalid int value")


def test_an_unusable_device_is_one_line(capsys):
    assert main(["generate", "--device", "bogus", "-n", "1", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device 'bogus': ") and err.count("\n") == 1
