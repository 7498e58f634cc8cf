"""The pipeline runner: config validation, resuming, failures that never abort, deterministic
collection with filters and dedup, outputs."""
from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from nemotron.sdg.backends import BackendError
from nemotron.sdg.config import PipelineConfigError, load_config, parse_config
from nemotron.sdg.configs import config_path, names
from nemotron.sdg.pipeline import Pipeline, StageChangedError
from nemotron.sdg.store import read_jsonl
from tests.sdg.fake_server import ScriptedChat, ScriptedReward, scripted_reply

MODELS = {"generator": {"model": "scripted"}, "reward": {"model": "reward", "kind": "reward"}}
STAGES = [
    {"name": "topics", "kind": "macro_topics", "count": 4},
    {"name": "qs", "kind": "open_questions", "count": 3},
    {"name": "answers", "kind": "responses", "reward_model": "reward"},
]


def config(stages=STAGES, **extra):
    return parse_config({"name": "t", "models": MODELS, "stages": stages, "outputs": {"sft": ["answers"]}, **extra})


def run(out, cfg=None, chat=None, reward=None):
    backends = {"generator": chat or ScriptedChat(), "reward": reward or ScriptedReward()}
    return asyncio.run(Pipeline(cfg or config(), out, backends, progress=False).run())


def dataset(out, name="sft"):
    return list(read_jsonl(out / f"{name}.jsonl"))


@pytest.mark.parametrize("change, message", [
    ({"stages": [{"name": "a", "kind": "nope"}]}, "unknown kind 'nope'"),
    ({"stages": [{"name": "a", "kind": "macro_topics", "cont": 3}]},
     "unknown option(s) ['cont'] for kind 'macro_topics'"),
    ({"stages": [{"name": "a", "kind": "open_questions"}]}, "'input' is required"),
    ({"stages": [{"name": "a", "kind": "macro_topics"}, {"name": "b", "kind": "subtopics", "input": "zzz"}]},
     "input 'zzz' is not an earlier stage"),
    ({"stages": [{"name": "a", "kind": "macro_topics", "count": 0}]}, "count must be an integer >= 1"),
    ({"stages": [{"name": "a", "kind": "macro_topics", "model": "judge"}]}, "model 'judge' is not defined"),
    ({"stages": [{"name": "a", "kind": "macro_topics", "filters": {"min_reward": {"helpfulness": 3}}}]},
     "reward thresholds in filters need a reward_model"),
    ({"stages": [{"name": "a", "kind": "macro_topics", "reward_model": "reward"}]},
     "does not score with a reward model"),
    ({"stages": [{"name": "a", "kind": "macro_topics"},
                 {"name": "b", "kind": "responses", "reward_model": "generator"}]},
     "reward_model 'generator' is a chat model; a reward model is needed"),
    ({"stages": [{"name": "a", "kind": "macro_topics", "prompts": {"macro_topics": "List {n} things"}}]},
     "unknown placeholders ['n']"),
    ({"stages": [{"name": "a", "kind": "macro_topics", "sampling": {"temperature": -1}}]}, "temperature must be"),
    ({"stages": [{"name": "a", "kind": "macro_topics", "filters": {"min_reward": {"fun": 1}}}]}, "min_reward: fun"),
    ({"stages": [{"name": "a", "kind": "macro_topics", "calls": "two"}]}, "option 'calls' must be int"),
    ({"stages": [{"name": "a", "kind": "macro_topics"}], "bogus": 1}, "unknown key(s) ['bogus']"),
    ({"stages": [{"name": "a", "kind": "macro_topics", "calls": 0}]}, "option 'calls' must be >= 1"),
    ({"stages": [{"name": "a", "kind": "macro_topics", "calls": True}]}, "option 'calls' must be int"),
    ({"stages": [{"name": "a", "kind": "seeds"}]}, "seeds need 'items' or 'path'"),
    ({"stages": [{"name": "a", "kind": "seeds", "items": ["x"]},
                 {"name": "b", "kind": "classify", "domain": "chemistry"}]}, "domain must be one of"),
    ({"stages": [{"name": "a", "kind": "seeds", "items": ["x"]},
                 {"name": "b", "kind": "instruction_following", "types": ["keywords:nope"]}]},
     "unknown constraint types ['keywords:nope']"),
    ({"stages": [{"name": "a", "kind": "seeds", "items": ["x"]},
                 {"name": "b", "kind": "preference", "judges": ["coin"]}]}, "judges must be a non-empty list"),
])
def test_bad_configs_fail_with_the_place_named(change, message):
    with pytest.raises(PipelineConfigError) as info:
        parse_config({"name": "t", "models": MODELS, **change})
    assert message in str(info.value)


def test_ready_made_configs_load():
    assert names() == ["dialogues", "preference_pairs", "sft_prompts"]
    for name in names():
        cfg = load_config(config_path(name))
        assert cfg.outputs and all(s.name for s in cfg.stages)


def test_run_outputs_and_rerun_makes_no_calls(tmp_path):
    chat, reward = ScriptedChat(), ScriptedReward()
    summary = run(tmp_path, chat=chat, reward=reward)
    sft = dataset(tmp_path)
    assert len(sft) == 12 and summary["stages"]["answers"]["records_kept"] == 12
    assert all(r["messages"][-1]["role"] == "assistant" and "reward" in r for r in sft)
    assert summary["stages"]["answers"]["usage"]["calls"] == 12 and summary["stages"]["answers"]["usage"]["reward_calls"] == 12
    assert json.loads((tmp_path / "run.json").read_text())["outputs"] == {"sft": ["answers"]}

    again_chat, again_reward = ScriptedChat(), ScriptedReward()
    run(tmp_path, chat=again_chat, reward=again_reward)
    assert again_chat.calls == [] and again_reward.calls == 0  # every unit was already done
    assert dataset(tmp_path) == sft


def test_resume_after_losing_unit_results_uses_the_cache(tmp_path):
    run(tmp_path)
    full = dataset(tmp_path)
    units = tmp_path / "units" / "answers.jsonl"
    lines = units.read_bytes().splitlines(keepends=True)
    units.write_bytes(b"".join(lines[:5]) + lines[5][:40])  # a crash mid-write: 5 whole lines and a torn one
    chat, reward = ScriptedChat(), ScriptedReward()
    run(tmp_path, chat=chat, reward=reward)
    assert chat.calls == [] and reward.calls == 0  # the 7 redone units were answered by the cache
    assert dataset(tmp_path) == full and len({r["id"] for r in full}) == len(full)


def test_transient_failures_are_counted_and_retried_by_the_next_run(tmp_path):
    broken = {"on": True}

    def reply(messages, seed):
        if broken["on"] and messages[-1]["content"].startswith("item") and seed % 3 == 0:
            raise BackendError("gave up after 6 attempts; last error: HTTP 503: busy")
        return scripted_reply(messages, seed)

    first = run(tmp_path, chat=ScriptedChat(reply))
    failed = first["stages"]["answers"]["units_failed"]
    assert failed > 0 and first["stages"]["answers"]["last_run"]["failed_units"] == failed
    assert list(first["stages"]["answers"]["last_run"]["errors"]) == ["gave up after 6 attempts; last error: HTTP 503: busy"]
    assert len(dataset(tmp_path)) == 12 - failed
    assert len(list(read_jsonl(tmp_path / "failures.jsonl"))) == failed
    broken["on"] = False
    second = run(tmp_path, chat=ScriptedChat(reply))
    assert second["stages"]["answers"]["units_failed"] == 0 and second["stages"]["answers"]["last_run"]["units_run"] == failed
    clean = tmp_path / "clean"
    run(clean)
    assert dataset(tmp_path) == dataset(clean)  # same dataset as a run that never failed


def test_refused_requests_are_recorded_not_retried(tmp_path):
    def reply(messages, seed):
        if messages[-1]["content"].startswith("item"):
            raise BackendError("HTTP 400: prompt too long", status=400)
        return scripted_reply(messages, seed)

    summary = run(tmp_path, chat=ScriptedChat(reply))
    assert summary["stages"]["answers"]["rejections"] == {"refused": 12} and summary["stages"]["answers"]["units_failed"] == 0


def test_changed_generation_settings_are_refused_but_filters_recollect(tmp_path):
    run(tmp_path)
    changed = config([*STAGES[:2], {**STAGES[2], "sampling": {"temperature": 0.1}}])
    with pytest.raises(StageChangedError, match="stage answers: its settings changed \\(sampling\\)"):
        run(tmp_path, changed)
    stricter = config([*STAGES[:2], {**STAGES[2], "filters": {"min_reward": {"helpfulness": 2.0}}}])
    chat, reward = ScriptedChat(), ScriptedReward()
    summary = run(tmp_path, stricter, chat=chat, reward=reward)
    assert chat.calls == [] and reward.calls == 0
    kept = dataset(tmp_path)
    assert 0 < len(kept) < 12 and all(r["reward"]["helpfulness"] >= 2.0 for r in kept)
    assert summary["stages"]["answers"]["rejections"] == {"reward filter": 12 - len(kept)}


def test_dedup_reports_the_pair(tmp_path):
    def reply(messages, seed):
        prompt = messages[-1]["content"]
        if "numbered list" in prompt:
            return ("1. The long and complicated history of jazz music in the United States of America\n"
                    "2. Ocean tides\n3. The long and complicated history of jazz music in the United States\n"
                    "4. ocean tides!")
        return scripted_reply(messages, seed)

    topics_only = parse_config({"name": "t", "models": MODELS, "stages": [STAGES[0]]})
    summary = run(tmp_path, topics_only, chat=ScriptedChat(reply))
    assert summary["stages"]["topics"]["records_kept"] == 2
    rejected = {r["text"]: r for r in read_jsonl(tmp_path / "rejected" / "topics.jsonl")}
    kept = {r["topic"]: r["id"] for r in read_jsonl(tmp_path / "data" / "topics.jsonl")}
    assert rejected["ocean tides!"]["reason"] == "exact duplicate"
    assert rejected["ocean tides!"]["duplicate_of"] == kept["Ocean tides"]
    near = rejected["The long and complicated history of jazz music in the United States"]
    assert near["reason"] == "near duplicate"
    longer = "The long and complicated history of jazz music in the United States of America"
    assert near["duplicate_of"] == kept[longer]
    assert 0.5 < near["similarity"] < 1.0


def test_length_filter_and_limit(tmp_path):
    stages = [STAGES[0], {**STAGES[1], "limit": 2, "filters": {"length": {"unit": "words", "min": 4}}}]
    summary = run(tmp_path, parse_config({"name": "t", "models": MODELS, "stages": stages}))
    assert summary["stages"]["qs"]["inputs"] == 2 and summary["stages"]["qs"]["records_kept"] == 6  # "item xxxxxx number N": 4 words
    stages[1]["filters"]["length"]["min"] = 5
    summary = run(tmp_path / "b", parse_config({"name": "t", "models": MODELS, "stages": stages}))
    assert summary["stages"]["qs"]["records_kept"] == 0 and summary["stages"]["qs"]["rejections"] == {"length filter": 6}


def test_prompt_overrides_reach_the_model(tmp_path):
    chat = ScriptedChat()
    stages = [{"name": "topics", "kind": "macro_topics", "count": 2,
               "prompts": {"macro_topics": "Write {count} topics as a numbered list."}}]
    run(tmp_path, parse_config({"name": "t", "models": MODELS, "stages": stages}), chat=chat)
    assert chat.calls[0][0] == [{"role": "user", "content": "Write 2 topics as a numbered list."}]


def test_yaml_file_round_trip(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "y", "models": MODELS, "stages": STAGES, "outputs": {"sft": "answers"}}))
    cfg = load_config(path)
    assert cfg.outputs == {"sft": ("answers",)} and cfg.stage("qs").inputs == ("topics",)
    with pytest.raises(PipelineConfigError, match="no pipeline config"):
        load_config(tmp_path / "missing.yaml")


def test_a_stage_alone_through_the_python_api(tmp_path):
    from nemotron.sdg.pipeline import run_stage

    chat = ScriptedChat(lambda m, seed: f"So the answer is {4 if seed % 2 else 5}.")
    pairs = asyncio.run(run_stage("preference", [{"prompt": "2+2?", "answer": "4"}], tmp_path,
                                  {"generator": chat}, n=6))
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"], p["judge"]) for p in pairs] == \
        [("So the answer is 4.", "So the answer is 5.", "ground_truth")]
    again = ScriptedChat()
    assert asyncio.run(run_stage("preference", [{"prompt": "2+2?", "answer": "4"}], tmp_path,
                                 {"generator": again}, n=6)) == pairs and again.calls == []


def test_checker_libraries_load_before_the_first_call_and_the_collector_skips_them(tmp_path, monkeypatch):
    """NLTK and langdetect (seconds to load) are loaded before any unit runs, not inside a call in
    flight; a pipeline without constraint checks does not load them; what existed before the run is
    out of the garbage collector's view during it, young objects are collected less often, and
    both come back after."""
    import gc

    from nemotron.sdg import constraints
    from nemotron.sdg.stages import conversation

    events = []
    monkeypatch.setattr(conversation, "load_checkers", lambda: events.append("load"))

    class Recording(ScriptedChat):
        async def chat(self, messages, sampling):
            events.append(("call", gc.get_freeze_count() > 0 and gc.get_threshold()[0] >= 50_000))
            return await super().chat(messages, sampling)

    thresholds = gc.get_threshold()
    run(tmp_path / "a", chat=Recording())
    assert events[0] == "load" and events.count("load") == 1
    assert all(frozen for _, frozen in events[1:]) and gc.get_freeze_count() == 0 and gc.get_threshold() == thresholds
    events.clear()
    run(tmp_path / "b", config([STAGES[0], STAGES[1], {**STAGES[2], "check_constraints": False}]), chat=Recording())
    assert "load" not in events and events
    constraints.load_checkers()
    from nemotron.sdg.constraints import language, text
    assert all(f.cache_info().currsize == 1 for f in (text._sentence_tokenizer, text._word_tokenizer, language._factory))


def test_a_stage_data_file_that_cannot_be_written_fails_the_run_and_a_rerun_completes(tmp_path, monkeypatch):
    """Finished stages' data files are written off the event loop; a failure there still ends the
    run with the one-line output error, and the same run again completes as a clean one."""
    from nemotron.sdg import scheduler
    from nemotron.sdg.store import OutputError

    real = scheduler.write_atomic

    def failing(path, records):
        if path.parent.name == "data" and path.stem == "qs":
            raise OutputError(f"cannot write {path}: No space left on device")
        return real(path, records)

    monkeypatch.setattr(scheduler, "write_atomic", failing)
    with pytest.raises(OutputError, match="qs.jsonl: No space left"):
        run(tmp_path / "out")
    monkeypatch.setattr(scheduler, "write_atomic", real)
    run(tmp_path / "out")
    run(tmp_path / "clean")
    assert dataset(tmp_path / "out") == dataset(tmp_path / "clean")
    assert (tmp_path / "out" / "data" / "qs.jsonl").read_text() == (tmp_path / "clean" / "data" / "qs.jsonl").read_text()


def test_a_timed_flush_that_fails_fails_the_run(tmp_path, monkeypatch):
    """The ticker's flush (every `flush_interval` seconds) is awaited by no unit: its error must
    still end the run with the one-line output error, not be dropped with its journal batch."""
    from nemotron.sdg.store import OutputError, RecordStore

    real, calls = RecordStore.append, []

    def failing_once(self, records):
        calls.append(1)
        if len(calls) == 1:
            raise OutputError(f"cannot write {self.path}: No space left on device")
        return real(self, records)

    class Slow(ScriptedChat):
        async def chat(self, messages, sampling):
            await asyncio.sleep(0.01)
            return await super().chat(messages, sampling)

    monkeypatch.setattr(RecordStore, "append", failing_once)
    with pytest.raises(OutputError, match="No space left"):
        run(tmp_path / "out", config(flush_every=10_000, flush_interval=0.02), chat=Slow())
    monkeypatch.setattr(RecordStore, "append", real)
    run(tmp_path / "out")
    run(tmp_path / "clean")
    assert dataset(tmp_path / "out") == dataset(tmp_path / "clean")


def test_an_output_folder_that_cannot_be_made_is_one_error(tmp_path):
    from nemotron.sdg.store import OutputError

    (tmp_path / "afile").write_text("hi")
    with pytest.raises(OutputError, match="cannot make the output folder .*afile/units"):
        run(tmp_path / "afile")


def test_a_seed_file_that_is_not_utf8_is_one_error(tmp_path):
    from nemotron.sdg.stages.base import StageInputError

    (tmp_path / "seeds.txt").write_bytes(b"\xff\xfe bad\n")
    cfg = config([{"name": "a", "kind": "seeds", "path": str(tmp_path / "seeds.txt")}], outputs={"sft": ["a"]})
    with pytest.raises(StageInputError, match="seeds.txt is not UTF-8 text"):
        run(tmp_path / "out", cfg)


def test_max_concurrency_zero_is_refused():
    import argparse

    from nemotron.cli.sdg import apply_overrides
    from nemotron.errors import ConfigError

    args = argparse.Namespace(endpoint=None, model=None, reward_endpoint=None, reward_model=None, judge_endpoint=None,
                              judge_model=None, max_concurrency=0)
    with pytest.raises(ConfigError, match="--max-concurrency must be >= 1, got 0"):
        apply_overrides(config(), args)
