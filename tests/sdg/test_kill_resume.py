"""`nemotron sdg run` killed with SIGKILL mid-run, twice, then rerun: the dataset equals that of an
uninterrupted run, with no record lost and none duplicated. The endpoint is the scripted local
server, whose answers are pure functions of the request."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from nemotron.sdg.store import read_jsonl
from tests.sdg.fake_server import FakeOpenAI, ThreadServer

REPO = Path(__file__).resolve().parents[2]

PIPELINE = {
    "name": "kill",
    "seed": 7,
    "models": {"generator": {"model": "gen", "max_concurrency": 4},
               "reward": {"model": "reward", "kind": "reward", "max_concurrency": 4}},
    "sampling": {"max_tokens": 32},
    "flush_every": 3,
    "flush_interval": 0.05,
    "stages": [
        {"name": "topics", "kind": "macro_topics", "count": 6, "calls": 2},
        {"name": "questions", "kind": "open_questions", "count": 3},
        {"name": "answers", "kind": "responses", "reward_model": "reward",
         "filters": {"min_reward": {"helpfulness": 1.0}}},
        {"name": "pairs", "kind": "preference", "input": "questions", "judges": ["llm"]},
    ],
    "outputs": {"sft": ["answers"], "dpo": ["pairs"]},
}


def start(config: Path, out: Path, url: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nemotron", "sdg", "run", str(config), "--out", str(out), "--endpoint", url,
         "--reward-endpoint", url, "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO / "src")})


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def done_units(units: Path) -> int:
    """Unit results written by the two last stages (they run at the same time)."""
    return lines(units / "answers.jsonl") + lines(units / "pairs.jsonl")


def kill_when(proc: subprocess.Popen, units: Path, at_least: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while done_units(units) < at_least:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, f"{units} never reached {at_least} unit lines"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return done_units(units)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def test_sigkill_mid_run_then_resume_gives_the_same_dataset(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(PIPELINE))
    fake = FakeOpenAI(delay=0.01)
    with ThreadServer(fake.app) as server:
        finish(start(config, tmp_path / "reference", server.url))
        reference_requests = fake.requests

        out = tmp_path / "killed"
        fake.requests = 0
        units = out / "units"
        first = kill_when(start(config, out, server.url), units, 8)
        assert 8 <= first < 50, "the kill came too late to test anything"
        second = kill_when(start(config, out, server.url), units, first + 8)
        assert second < 64, "the second kill came too late to test anything"
        report = finish(start(config, out, server.url))
        resumed_requests = fake.requests

    for name in ("sft", "dpo"):
        reference = list(read_jsonl(tmp_path / "reference" / f"{name}.jsonl"))
        resumed = list(read_jsonl(out / f"{name}.jsonl"))
        assert resumed == reference and reference  # same records, same order
        assert len({r["id"] for r in resumed}) == len(resumed)
    for stage in ("topics", "questions", "answers", "pairs"):
        unit_ids = [u["id"] for u in read_jsonl(out / "units" / f"{stage}.jsonl")]
        assert len(unit_ids) == len(set(unit_ids))  # no unit recorded twice
        assert list(read_jsonl(out / "data" / f"{stage}.jsonl")) == \
            list(read_jsonl(tmp_path / "reference" / "data" / f"{stage}.jsonl"))
    # The interrupted runs redid only calls in flight at the kills: the cache answered the rest.
    assert resumed_requests < reference_requests + 3 * 2 * 4
    sft = len(list(read_jsonl(out / "sft.jsonl")))
    assert "pipeline kill" in report and f"{out / 'sft.jsonl'}: {sft} records" in report
