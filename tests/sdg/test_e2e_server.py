"""End to end against the project's own server over real HTTP on 127.0.0.1: a tiny random-weight
Instruct model and a tiny random-weight reward model, each served by `nemotron.server`. Their text
is noise, so these tests check the mechanics: requests reach the servers, records and rejections
are written, parse failures are counted, reward scores arrive intact, a rerun resumes without
calling the models, the CLI survives a SIGKILL, and the in-process engine backend works the same."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
import torch
import yaml

from nemotron.checkpoint.load import load_model
from nemotron.cli.main import main
from nemotron.engine.async_llm import AsyncLLM
from nemotron.engine.llm_engine import EngineConfig, LLMEngine
from nemotron.engine.reward_scorer import RewardScorer
from nemotron.sdg.backends.engine import EngineChat, EngineReward
from nemotron.sdg.config import parse_config
from nemotron.sdg.pipeline import Pipeline, run_pipeline
from nemotron.sdg.store import read_jsonl
from nemotron.server import ServerConfig, create_app
from tests.sdg.fake_server import ThreadServer

REPO = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"

# Short prompts: the tiny model has a 256-token context and a 320-piece tokenizer.
PROMPTS = ["the cat sees the moon", "a dog walks near the river", "the old house is quiet"]
SHORT = {"macro_topics": "List {count} topics.", "reformat_list": "Fix: {response}"}


def pipeline(chat_url: str | None, reward_url: str | None, **models) -> dict:
    return {
        "name": "e2e",
        "seed": 1,
        "models": models or {"generator": {"model": "tiny", "endpoint": chat_url, "max_concurrency": 8},
                             "reward": {"model": "tiny-reward", "kind": "reward", "endpoint": reward_url,
                                        "max_concurrency": 8}},
        "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 8},
        "stages": [
            {"name": "topics", "kind": "macro_topics", "count": 3, "calls": 3, "prompts": SHORT},
            {"name": "prompts", "kind": "seeds", "items": PROMPTS, "field": "prompt"},
            {"name": "answers", "kind": "responses", "input": "prompts", "n": 2, "reward_model": "reward",
             "filters": {"dedup": False}},
            {"name": "pairs", "kind": "preference", "input": "prompts", "n": 2, "judges": ["reward"],
             "reward_model": "reward", "min_margin": -100.0},
            {"name": "dialogues", "kind": "dialogues", "input": "prompts", "user_turns": 2, "personas": ["a cat"],
             "prompts": {"user_turn": "{persona}: {transcript}"}, "reward_model": "reward"},
        ],
        "outputs": {"sft": ["answers"], "dpo": ["pairs"], "chat": ["dialogues"]},
    }


def _serve(model_dir: Path, name: str) -> tuple[ThreadServer, object]:
    app = create_app(lambda: load_model(model_dir, dtype="float32"),
                     ServerConfig(model_name=name, engine=EngineConfig(num_blocks=512, max_num_seqs=32)))
    server = ThreadServer(app).__enter__()
    deadline = time.monotonic() + 60
    while requests.get(server.url.removesuffix("/v1") + "/health", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the model did not load"
        time.sleep(0.05)
    return server, app


@pytest.fixture(scope="module")
def servers(tiny_model_dir, tiny_reward_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    chat, chat_app = _serve(tiny_model_dir, "tiny")
    reward, reward_app = _serve(tiny_reward_dir, "tiny-reward")
    yield chat, chat_app, reward, reward_app
    chat.__exit__()
    reward.__exit__()
    torch.set_num_threads(threads)


def answered(app) -> Counter:
    return Counter({status: n for (endpoint, status), n in app.state.server.metrics.requests.items()
                    if endpoint == CHAT})


def settled(app) -> Counter:
    """`answered` once it stops changing: the server counts a request after its reply has left,
    so a client can have its answer a moment before the count moves."""
    last = None
    while (now := answered(app)) != last:
        last = now
        time.sleep(0.2)
    return now


def test_pipeline_over_http_then_resume_without_calls(servers, tmp_path):
    chat, chat_app, reward, reward_app = servers
    config = parse_config(pipeline(chat.url, reward.url))
    summary = asyncio.run(run_pipeline(config, tmp_path, progress=False))
    chat_answered, reward_answered = settled(chat_app), settled(reward_app)

    # Requests flowed: every call the pipeline counted was answered by the servers.
    made = sum(s["usage"]["calls"] for s in summary["stages"].values())
    scored = sum(s["usage"]["reward_calls"] for s in summary["stages"].values())
    assert sum(chat_answered.values()) == made + sum(s["last_run"]["failed_units"] for s in summary["stages"].values())
    assert sum(reward_answered.values()) >= scored > 0
    for name, stage in summary["stages"].items():
        assert stage["units_done"] + stage["units_failed"] == stage["units"], name
        assert stage["units_failed"] == 0, (name, stage["last_run"]["errors"])
    # Noise does not parse as a list: counted as parse failures, each after one reformatting request.
    topics = summary["stages"]["topics"]
    assert topics["units_done"] == 3 and topics["usage"]["calls"] >= 3
    assert topics["parse"]["failures"] + sum(topics["parse"]["by_method"].values()) == 3
    assert topics["rejections"].get("parse failure", 0) == topics["parse"]["failures"]

    sft = list(read_jsonl(tmp_path / "sft.jsonl"))
    assert 0 < len(sft) <= 6 and summary["stages"]["answers"]["records_generated"] + \
        summary["stages"]["answers"]["rejections"].get("empty reply", 0) == 6
    record = sft[0]
    assert record["messages"][0] == {"role": "user", "content": record["prompt"]}
    assert record["messages"][-1]["role"] == "assistant"
    # The reward scores are those the reward server gives for that conversation.
    direct = requests.post(f"{reward.url}/chat/completions", json={"model": "tiny-reward",
                                                                   "messages": record["messages"]}, timeout=30).json()
    logprobs = {e["token"]: e["logprob"] for e in direct["choices"][0]["logprobs"]["content"]}
    assert record["reward"] == pytest.approx(logprobs, abs=1e-5)  # batched scoring differs in the last bits

    for pair in read_jsonl(tmp_path / "dpo.jsonl"):
        assert pair["chosen_reward"] >= pair["rejected_reward"] and pair["judge"] == "reward"
        assert set(pair["chosen_scores"]) == set(logprobs)
    for dialogue in read_jsonl(tmp_path / "chat.jsonl"):
        assert [m["role"] for m in dialogue["messages"]] == ["user", "assistant"] * 2

    before = (settled(chat_app), settled(reward_app))
    datasets = {n: (tmp_path / f"{n}.jsonl").read_text() for n in ("sft", "dpo", "chat")}
    asyncio.run(run_pipeline(config, tmp_path, progress=False))
    assert (settled(chat_app), settled(reward_app)) == before  # resumed: nothing left to ask
    assert {n: (tmp_path / f"{n}.jsonl").read_text() for n in datasets} == datasets


def test_cli_killed_mid_run_resumes_without_duplicates(servers, tmp_path):
    chat, _, reward, _ = servers
    spec = pipeline(chat.url, reward.url)
    spec["flush_every"], spec["flush_interval"] = 1, 0.05
    spec["stages"] = [{"name": "prompts", "kind": "seeds", "items": [f"{p} {i}" for p in PROMPTS for i in range(8)],
                       "field": "prompt", "filters": {"dedup": False}},
                      {"name": "answers", "kind": "responses", "reward_model": "reward", "n": 2}]
    spec["outputs"] = {"sft": ["answers"]}
    for model in spec["models"].values():
        model.pop("endpoint")
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec))
    command = [sys.executable, "-m", "nemotron", "sdg", "run", str(path), "--out", str(tmp_path / "out"),
               "--endpoint", chat.url, "--reward-endpoint", reward.url, "--max-concurrency", "2", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    units = tmp_path / "out" / "units" / "answers.jsonl"
    deadline = time.monotonic() + 60
    while not units.exists() or units.read_bytes().count(b"\n") < 3:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = units.read_bytes().count(b"\n")
    assert done_at_kill < 24, "the kill came too late"
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    unit_ids = [u["id"] for u in read_jsonl(units)]
    assert len(unit_ids) == len(set(unit_ids)) == 24
    sft = list(read_jsonl(tmp_path / "out" / "sft.jsonl"))
    assert len({r["id"] for r in sft}) == len(sft) > 0
    assert "sft.jsonl" in result.stdout.decode()

    # report and export on the same directory, through the CLI entry point
    assert main(["sdg", "report", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report" / "rewards.png").stat().st_size > 1000
    assert main(["sdg", "export", str(tmp_path / "out"), "--format", "parquet"]) == 0
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out" / "sft.parquet")
    assert table.num_rows == len(sft) and table.column("messages").to_pylist()[0] == sft[0]["messages"]


def test_engine_backend_in_process_matches_the_reward_server(servers, tiny_model_dir, tiny_reward_dir, tmp_path):
    _, _, reward, _ = servers
    loaded = load_model(tiny_model_dir, dtype="float32")
    reward_loaded = load_model(tiny_reward_dir, dtype="float32")

    async def scenario():
        chat = EngineChat(AsyncLLM(LLMEngine(loaded.model, loaded.tokenizer, EngineConfig(num_blocks=256,
                                                                                          max_num_seqs=16))),
                          loaded.tokenizer, "tiny")
        scorer = EngineReward(RewardScorer(reward_loaded.model), reward_loaded.tokenizer, "tiny-reward")
        spec = pipeline(None, None, generator={"model": "tiny"}, reward={"model": "tiny-reward", "kind": "reward"})
        spec["stages"] = [spec["stages"][1], spec["stages"][2]]
        spec["outputs"] = {"sft": ["answers"]}
        try:
            return await Pipeline(parse_config(spec), tmp_path, {"generator": chat, "reward": scorer},
                                  progress=False).run()
        finally:
            await chat.aclose()
            await scorer.aclose()

    summary = asyncio.run(scenario())
    assert summary["stages"]["answers"]["units_done"] == 3 and summary["stages"]["answers"]["usage"]["calls"] == 6
    sft = list(read_jsonl(tmp_path / "sft.jsonl"))
    assert sft and all("<extra_id_1>" not in r["messages"][-1]["content"] for r in sft)
    direct = requests.post(f"{reward.url}/chat/completions", json={"messages": sft[0]["messages"]}, timeout=30).json()
    served = {e["token"]: e["logprob"] for e in direct["choices"][0]["logprobs"]["content"]}
    assert sft[0]["reward"] == pytest.approx(served, abs=1e-5)
