"""The pipeline as one flow: stages overlap, a unit in backoff gives its place up, a stage that
waits for its inputs does, several endpoints share a window; and how a run ends: exit status,
errors by status in summary and report, a full or read-only output disk."""
from __future__ import annotations

import asyncio
import errno
import json
import os
import time

import pytest
import yaml
from starlette.responses import JSONResponse

from nemotron.cli.main import main
from nemotron.cli.sdg import apply_overrides, apply_sets, build_args
from nemotron.sdg import store
from nemotron.sdg.backends import BackendStats, ChatResult, ConcurrencyConfig
from nemotron.sdg.backends.http import HttpClient, OpenAIChat, RetryConfig
from nemotron.sdg.config import parse_config
from nemotron.sdg.pipeline import Pipeline, run_pipeline
from nemotron.sdg.report import format_report
from nemotron.sdg.stages import STAGE_KINDS
from nemotron.sdg.stages.conversation import Responses
from nemotron.sdg.store import read_jsonl
from tests.sdg.fake_server import FakeOpenAI, ThreadServer, digest, free_port, scripted_reply

MODELS = {"generator": {"model": "gen"}}
CHAIN = [{"name": "topics", "kind": "macro_topics", "count": 4, "calls": 2},
         {"name": "qs", "kind": "open_questions", "count": 3},
         {"name": "answers", "kind": "responses"}]


class TimedChat:
    """In-process chat whose answers take `delay` seconds; logs (stage prompt kind, start, end)."""

    def __init__(self, delay: float = 0.02, concurrency: int = 8) -> None:
        self.model, self.stats, self.in_flight, self.concurrency = "gen", BackendStats(), 0, concurrency
        self.delay = delay
        self.log: list[tuple[str, float, float]] = []

    async def chat(self, messages, sampling):
        prompt = messages[-1]["content"]
        start = time.monotonic()
        self.in_flight += 1
        slow = "questions" in prompt and digest(prompt)[0] in "0123"  # a quarter of them take longer
        await asyncio.sleep(self.delay * (10 if slow else 1))
        self.in_flight -= 1
        kind = "list" if "numbered list" in prompt else "answer"
        self.log.append((kind if "questions" not in prompt else "questions", start, time.monotonic()))
        return ChatResult(scripted_reply(messages, sampling.seed), 5, 5, "stop")

    async def aclose(self) -> None:
        pass


def test_a_stage_starts_on_its_first_records_before_the_stage_before_it_ends(tmp_path):
    chat = TimedChat()
    config = parse_config({"name": "t", "models": MODELS, "stages": CHAIN})
    summary = asyncio.run(Pipeline(config, tmp_path, {"generator": chat}, progress=False).run())
    assert summary["stages"]["answers"]["records_kept"] == 24 and summary["status"]["exit"] == 0
    last_question = max(end for kind, _, end in chat.log if kind == "questions")
    first_answer = min(start for kind, start, _ in chat.log if kind == "answer")
    assert first_answer < last_question  # answers began while questions were still being written

    # The same dataset as a run where every stage waited for the one before it.
    serial = tmp_path / "serial"
    config = parse_config({"name": "t", "models": MODELS, "unit_window": 1, "stages": CHAIN})
    asyncio.run(Pipeline(config, serial, {"generator": TimedChat(0.0)}, progress=False).run())
    for name in ("topics", "qs", "answers"):
        assert list(read_jsonl(tmp_path / "data" / f"{name}.jsonl")) == list(read_jsonl(serial / "data" / f"{name}.jsonl"))


class WholeStage(Responses):
    kind = "whole_stage_test"
    waits_for_inputs = True


def test_a_stage_that_waits_for_its_inputs_starts_after_them(tmp_path, monkeypatch):
    monkeypatch.setitem(STAGE_KINDS, WholeStage.kind, WholeStage)
    chat = TimedChat()
    config = parse_config({"name": "t", "models": MODELS, "stages": [*CHAIN[:2], {"name": "answers",
                                                                                  "kind": WholeStage.kind}]})
    asyncio.run(Pipeline(config, tmp_path, {"generator": chat}, progress=False).run())
    last_question = max(end for kind, _, end in chat.log if kind == "questions")
    assert min(start for kind, start, _ in chat.log if kind == "answer") >= last_question


def test_units_in_backoff_give_their_place_to_others(tmp_path):
    # Every 4th request is refused with Retry-After 1 s; with 4 places and nothing else to do,
    # the other units would wait behind the sleeping ones.
    fake = FakeOpenAI(delay=0.01, fault=lambda n, body: JSONResponse({"error": {"message": "busy"}}, 503,
                                                                       headers={"Retry-After": "1"})
                      if n % 4 == 1 and n < 40 else None)
    prompts = [f"question {i}" for i in range(40)]
    with ThreadServer(fake.app) as server:
        config = parse_config({"name": "t", "unit_window": 4, "models": {"generator": {
            "model": "gen", "endpoint": server.url, "max_concurrency": 4}}, "stages": [
            {"name": "p", "kind": "seeds", "items": prompts, "field": "prompt"},
            {"name": "answers", "kind": "responses"}]})
        start = time.monotonic()
        summary = asyncio.run(run_pipeline(config, tmp_path, progress=False))
        elapsed = time.monotonic() - start
    assert summary["stages"]["answers"]["records_kept"] == 40
    assert summary["models"]["generator"]["errors"] == {"503": 10} and summary["models"]["generator"]["retries"] == 10
    assert elapsed < 4.0  # ten 1 s sleeps, four places: over 2.5 s if sleepers kept their places


def test_several_endpoints_share_one_window_by_weight_and_fail_over(tmp_path):
    fast, slow = FakeOpenAI(delay=0.05), FakeOpenAI(delay=0.05)
    with ThreadServer(fast.app) as a, ThreadServer(slow.app) as b:
        dead = f"http://127.0.0.1:{free_port()}/v1"
        client = HttpClient([a.url, {"url": b.url, "weight": 2}, dead], concurrency=ConcurrencyConfig(2),
                            retry=RetryConfig(max_attempts=6, base_delay=0.01, timeout=5))
        assert client.limiter.limit == 8  # 2 + 4 + 2

        async def go():
            backend = OpenAIChat(client, "gen")
            from nemotron.sdg.backends import Sampling
            results = await asyncio.gather(*(backend.chat([{"role": "user", "content": f"q{i}"}], Sampling(seed=i))
                                             for i in range(60)))
            stats = client.endpoint_stats()
            await backend.aclose()
            return results, stats

        results, stats = asyncio.run(go())
    assert len(results) == 60 and client.stats.failures == 0  # the dead endpoint's calls failed over
    assert stats[dead]["marked_down"] == 1 and stats[dead]["down"] and stats[dead]["requests"] <= 6
    assert client.limiter.ceiling == 6  # its share left the window
    assert fast.requests > 0 and slow.requests / fast.requests > 1.4  # weight 2 gets about twice the calls
    assert slow.max_in_flight <= 4 and fast.max_in_flight <= 3


def write_config(tmp_path, stages, **extra) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "models": {"generator": {"model": "gen", "max_attempts": 2}},
                                    "stages": stages, "outputs": {"out": [stages[-1]["name"]]}, **extra}))
    return str(path)


def test_exit_status_when_units_give_up_or_a_stage_keeps_nothing(tmp_path, capsys):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = write_config(tmp_path, [{"name": "topics", "kind": "macro_topics", "count": 3}])
    assert main(["sdg", "run", config, "--out", str(tmp_path / "dead"), "--endpoint", dead, "--no-progress",
                 "--set", "models.generator.timeout=2"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: 1 unit(s) gave up after their retries (topics 1)")
    summary = json.loads((tmp_path / "dead" / "summary.json").read_text())
    assert summary["status"]["exit"] == 3 and summary["models"]["generator"]["errors"] == {"connection": 2}
    assert summary["models"]["generator"]["given_up"] == 1 and summary["models"]["generator"]["retries"] == 1

    fake = FakeOpenAI()
    with ThreadServer(fake.app) as server:
        assert main(["sdg", "run", config, "--out", str(tmp_path / "empty"), "--endpoint", server.url,
                     "--no-progress", "--set", "stages.topics.filters={length: {min: 50}}"]) == 4
        assert capsys.readouterr().err.strip().splitlines()[-1] == "error: stage(s) topics kept no records"
        assert main(["sdg", "run", config, "--out", str(tmp_path / "ok"), "--endpoint", server.url,
                     "--no-progress"]) == 0


def test_errors_by_status_and_retries_reach_summary_and_report(tmp_path):
    fake = FakeOpenAI(fault=lambda n, body: JSONResponse({"error": {"message": "slow down"}}, 429)
                      if n % 5 == 2 else JSONResponse({"error": {"message": "oops"}}, 502) if n % 5 == 4 else None)
    with ThreadServer(fake.app) as server:
        config = parse_config({"name": "t", "models": {"generator": {"model": "gen", "endpoint": server.url}},
                               "stages": CHAIN[:2]})
        summary = asyncio.run(run_pipeline(config, tmp_path, progress=False))
    model = summary["models"]["generator"]
    assert set(model["errors"]) == {"429", "502"} and model["retries"] == sum(model["errors"].values())
    report = format_report(tmp_path)
    assert f"{model['retries']} retries, 0 given up; errors: 429 x{model['errors']['429']}" in report
    assert "status: exit 0: complete" in report


def run_cli(config, out, url, capsys) -> tuple[int, str]:
    code = main(["sdg", "run", config, "--out", str(out), "--endpoint", url, "--no-progress"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
def test_full_or_read_only_disk_is_one_line_exit_2_and_loses_nothing(tmp_path, capsys, monkeypatch, error):
    config = write_config(tmp_path, CHAIN, flush_every=2)
    fake = FakeOpenAI()
    with ThreadServer(fake.app) as server:
        assert run_cli(config, tmp_path / "clean", server.url, capsys)[0] == 0
        real, writes = store._write_all, []

        def failing(fd, data):
            writes.append(1)
            if len(writes) > 1:  # the disk fills up after the first batch, mid-batch
                real(fd, data[:len(data) // 2])
                raise OSError(error, os.strerror(error))
            real(fd, data)

        monkeypatch.setattr(store, "_write_all", failing)
        code, err = run_cli(config, tmp_path / "out", server.url, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith("error: cannot write ") and "units/" in lines[0]
        assert ("disk is full" if error == errno.ENOSPC else "read-only") in lines[0]
        monkeypatch.setattr(store, "_write_all", real)
        assert run_cli(config, tmp_path / "out", server.url, capsys)[0] == 0
    assert list(read_jsonl(tmp_path / "out" / "out.jsonl")) == list(read_jsonl(tmp_path / "clean" / "out.jsonl"))
    for name in ("topics", "qs", "answers"):
        ids = [u["id"] for u in read_jsonl(tmp_path / "out" / "units" / f"{name}.jsonl")]
        assert len(ids) == len(set(ids))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_read_only_output_directory(tmp_path, capsys):
    config = write_config(tmp_path, CHAIN[:1])
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, err = run_cli(config, out, "http://127.0.0.1:9/v1", capsys)
    finally:
        out.chmod(0o755)
    assert code == 2 and err.startswith(f"error: cannot write {out}") and len(err.strip().splitlines()) == 1


def test_set_and_model_flags(tmp_path):
    data = {"name": "x", "models": {"generator": {"model": "gen", "endpoint": "http://a:1/v1"},
                                    "big": {"model": "big", "endpoint": "http://b:1/v1"},
                                    "reward": {"model": "rm", "kind": "reward", "endpoint": "http://r:1/v1"}},
            "stages": [{"name": "topics", "kind": "macro_topics", "count": 20},
                       {"name": "qs", "kind": "open_questions", "model": "big"},
                       {"name": "pairs", "kind": "preference", "reward_model": "reward"}]}
    changed = apply_sets(data, ["stages.topics.count=5", "seed=3", "models.big.max_concurrency=7",
                                "stages.pairs.judges=[llm]"])
    assert changed["stages"][0]["count"] == 5 and changed["seed"] == 3 and data["stages"][0]["count"] == 20
    assert changed["models"]["big"]["max_concurrency"] == 7 and changed["stages"][2]["judges"] == ["llm"]
    with pytest.raises(Exception, match="no stage named 'nope'"):
        apply_sets(data, ["stages.nope.count=5"])
    with pytest.raises(Exception, match="expected KEY=VALUE"):
        apply_sets(data, ["seed"])

    warnings = []
    args = build_args(["sdg", "run", "x", "--out", "o", "--endpoint", "http://c:1/v1",
                       "--judge-endpoint", "http://j:1/v1", "--judge-model", "judge-m"])
    config = apply_overrides(parse_config(changed), args, warn=warnings.append)
    assert config.models["generator"].endpoint == "http://c:1/v1" and config.models["big"].endpoint == "http://b:1/v1"
    assert config.models["judge"].model == "judge-m" and config.stage("pairs").judge_model == "judge"
    assert config.stage("qs").judge_model is None  # only stages that judge get the judge
    assert any("replaces models.generator.endpoint http://a:1/v1" in w for w in warnings)
    assert any("stage qs uses model 'big' (http://b:1/v1), not it" in w for w in warnings)


def test_a_full_disk_under_the_call_cache_is_one_line_too(tmp_path, capsys, monkeypatch):
    import sqlite3

    from nemotron.sdg.cache import CallCache

    config = write_config(tmp_path, CHAIN)
    fake = FakeOpenAI()
    with ThreadServer(fake.app) as server:
        real_init, inserts = CallCache.__init__, []

        class FillingDisk:
            """The cache's connection, on a disk that fills up after a few answers."""

            def __init__(self, db):
                self.db = db

            def executemany(self, sql, rows):
                rows = list(rows)
                inserts.extend(rows)
                if len(inserts) > 5:
                    raise sqlite3.OperationalError("database or disk is full")
                return self.db.executemany(sql, rows)

            def __getattr__(self, name):
                return getattr(self.db, name)

        def init(self, path):
            real_init(self, path)
            self._db = FillingDisk(self._db)

        monkeypatch.setattr(CallCache, "__init__", init)
        code, err = run_cli(config, tmp_path / "out", server.url, capsys)
        assert code == 2 and err.startswith("error: cannot write ") and "cache.sqlite: database or disk is full" in err
        assert len(err.strip().splitlines()) == 1
        monkeypatch.setattr(CallCache, "__init__", real_init)
        assert run_cli(config, tmp_path / "out", server.url, capsys)[0] == 0
        assert run_cli(config, tmp_path / "clean", server.url, capsys)[0] == 0
    assert list(read_jsonl(tmp_path / "out" / "out.jsonl")) == list(read_jsonl(tmp_path / "clean" / "out.jsonl"))
