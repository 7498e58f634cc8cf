"""mimalloc preloaded by the `nemotron` program (nemotron.allocator)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nemotron import allocator

linux_with_mimalloc = pytest.mark.skipif(not sys.platform.startswith("linux") or allocator.library_path() is None,
                                         reason="mimalloc is preloaded on Linux, from the cmeel-mimalloc wheel")


@linux_with_mimalloc
def test_preload_env_adds_the_library_and_keeps_what_was_preloaded():
    env = allocator.preload_env({"PATH": "/bin", "LD_PRELOAD": "/opt/libother.so"}, platform="linux")
    library = str(allocator.library_path())
    assert env["LD_PRELOAD"] == f"{library} /opt/libother.so"
    assert env["PATH"] == "/bin"
    assert allocator.preload_env({}, platform="linux")["LD_PRELOAD"] == library
    # mimalloc purges freed memory without decommitting it, unless told otherwise
    assert env["MIMALLOC_PURGE_DECOMMITS"] == "0"
    assert allocator.preload_env({"MIMALLOC_PURGE_DECOMMITS": "1"}, platform="linux")["MIMALLOC_PURGE_DECOMMITS"] == "1"


@linux_with_mimalloc
def test_preload_env_changes_nothing_when_it_must_not():
    assert allocator.preload_env({allocator.SWITCH: "system"}, platform="linux") is None
    assert allocator.preload_env({allocator.SWITCH: "System"}, platform="linux") is None
    assert allocator.preload_env({}, platform="darwin") is None
    # A re-executed process finds itself preloaded and does not re-execute again.
    again = allocator.preload_env({}, platform="linux")
    assert allocator.preload_env(again, platform="linux") is None


def run_program(*argv: str, **env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.SWITCH)}
    out = subprocess.run([sys.executable, "-m", "nemotron", *argv], capture_output=True, text=True, check=True,
                         env={**environment, **env}).stdout
    return json.loads(out)


@linux_with_mimalloc
def test_the_program_runs_on_mimalloc_unless_told_not_to():
    assert run_program("info", "tiny", "--json")["allocator"] == "mimalloc"
    assert run_program("info", "tiny", "--json", NEMOTRON_ALLOCATOR="system")["allocator"] == \
        "glibc (NEMOTRON_ALLOCATOR=system)"


def test_in_process_calls_of_main_do_not_reexecute(capsys):
    from nemotron.cli.main import main

    # main(argv) is how tests and embedding code call the CLI: it must return, not replace the process.
    assert main(["info", "tiny", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["allocator"] == allocator.in_use()
