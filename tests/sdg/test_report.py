"""`nemotron sdg report / export / configs`, the progress display, and CLI error handling."""
from __future__ import annotations

import asyncio
import io

import pyarrow.parquet as pq
import pytest

from nemotron.cli.main import main
from nemotron.sdg.config import parse_config
from nemotron.sdg.export import export
from nemotron.sdg.pipeline import Pipeline
from nemotron.sdg.progress import Progress
from nemotron.sdg.report import format_report, plot, record_text
from nemotron.sdg.store import read_jsonl, write_atomic
from tests.sdg.fake_server import ScriptedChat, ScriptedReward

MODELS = {"generator": {"model": "scripted"}, "reward": {"model": "reward", "kind": "reward"}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    config = parse_config({"name": "rep", "models": MODELS, "outputs": {"sft": ["answers"], "dpo": ["pairs"]},
                           "stages": [
                               {"name": "topics", "kind": "macro_topics", "count": 4},
                               {"name": "qs", "kind": "open_questions", "count": 2},
                               {"name": "ifp", "kind": "instruction_following", "input": "qs"},
                               {"name": "answers", "kind": "responses", "input": ["qs", "ifp"],
                                "reward_model": "reward", "filters": {"min_reward": {"helpfulness": 1.0}}},
                               {"name": "pairs", "kind": "preference", "input": "qs", "reward_model": "reward",
                                "n": 3}]})
    asyncio.run(Pipeline(config, out, {"generator": ScriptedChat(), "reward": ScriptedReward()}, progress=False).run())
    return out


def test_report_counts_reasons_and_tokens(run_dir):
    text = format_report(run_dir)
    lines = text.splitlines()
    assert lines[0] == f"pipeline rep in {run_dir}"
    topics = next(line for line in lines if line.startswith("topics"))
    assert topics.split()[:3] == ["topics", "macro_topics", "1/1"]
    assert "rejections:" in text and "reward filter" in text
    assert "list parsing:" in text and "parsed: numbered 4; failures 0; items 8" in text
    sft = len(list(read_jsonl(run_dir / "sft.jsonl")))
    assert f"{run_dir / 'sft.jsonl'}: {sft} records" in text
    assert "model calls (0 from the cache on resumes)" in text


def test_plots_are_written(run_dir):
    paths = plot(run_dir)
    assert [p.name for p in paths] == ["rewards.png", "lengths.png", "preference.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in paths)


def test_parquet_export_keeps_nested_fields(run_dir):
    paths = export(run_dir)
    assert sorted(p.name for p in paths) == ["dpo.parquet", "sft.parquet"]
    sft = list(read_jsonl(run_dir / "sft.jsonl"))
    table = pq.read_table(run_dir / "sft.parquet").to_pylist()
    assert [r["messages"] for r in table] == [r["messages"] for r in sft]
    assert [r["reward"] for r in table] == [r["reward"] for r in sft]
    dpo = pq.read_table(run_dir / "dpo.parquet")
    assert {"prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"} <= set(dpo.column_names)


def test_parquet_export_falls_back_to_json_text_for_mixed_columns(tmp_path):
    from nemotron.sdg.export import to_parquet

    to_parquet([{"id": "a", "answer": 4}, {"id": "b", "answer": "x + 1"}, {"id": "c"}], tmp_path / "m.parquet")
    assert pq.read_table(tmp_path / "m.parquet").column("answer").to_pylist() == ["4", '"x + 1"', None]


def test_record_text_picks_the_generated_part():
    assert record_text({"chosen": "yes", "prompt": "q"}) == "yes"
    assert record_text({"chosen": [{"role": "assistant", "content": "yes"}], "prompt": [{"role": "user"}]}) == "yes"
    assert record_text({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) == "a"
    assert record_text({"topic": "t"}) == "t"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_and_lines_in_a_log():
    state = {"tokens": 0}
    gauges = lambda: (3, 8, state["tokens"])  # noqa: E731
    tty = Tty()
    bar = Progress("answers", total=10, done=2, gauges=gauges, stream=tty)
    state["tokens"] = 5000
    bar.advance(3)
    bar.tick()
    bar.close()
    shown = tty.getvalue()
    assert "answers" in shown and "5/10" in shown and "in flight 3/8" in shown and "5.0k tok" in shown
    log = io.StringIO()
    lines = Progress("answers", total=10, done=0, gauges=gauges, stream=log, log_interval=0.0)
    lines.advance(4)
    lines.tick()
    lines.close()
    assert log.getvalue().splitlines()[0].startswith("[answers] 4/10 units, ETA ")
    silent = io.StringIO()
    Progress("x", 1, 0, gauges, enabled=False, stream=silent).close()
    assert silent.getvalue() == ""


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["sdg", "run", "sft_prompts", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "model 'generator' has neither an endpoint nor an engine" in capsys.readouterr().err
    assert main(["sdg", "run", "nope.yaml", "--out", str(tmp_path / "o")]) == 2
    assert "no ready-made pipeline of that name" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [{name: a, kind: macro_topics, cont: 3}]\n")
    assert main(["sdg", "run", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "stages[0] (a): unknown option(s) ['cont']" in capsys.readouterr().err
    assert main(["sdg", "report", str(tmp_path)]) == 2
    assert "not a pipeline output directory" in capsys.readouterr().err
    assert main(["sdg", "configs"]) == 0
    assert "sft_prompts" in capsys.readouterr().out


def test_export_before_the_run_finished(tmp_path):
    write_atomic(tmp_path / "run.json", [])
    (tmp_path / "run.json").write_text('{"name": "x", "stages": [], "outputs": {"sft": ["a"]}}')
    with pytest.raises(Exception, match="does not exist yet"):
        export(tmp_path)


def test_a_report_on_a_stopped_run_says_what_is_on_disk(run_dir, tmp_path):
    """A run stopped before its end has stage data but no summary or datasets yet: the report counts
    what the stages hold and says the run has not finished (it read "not run yet" and "0 records")."""
    import shutil

    stopped = tmp_path / "stopped"
    shutil.copytree(run_dir, stopped)
    for name in ("summary.json", "sft.jsonl", "dpo.jsonl"):
        (stopped / name).unlink()
    text = format_report(stopped)
    topics = sum(1 for _ in read_jsonl(stopped / "data" / "topics.jsonl"))
    assert f"(unfinished: {topics} records so far)" in text
    assert f"{stopped / 'sft.jsonl'}: not written yet" in text
    assert "status: the run has not finished (stopped, or still running); rerun the same command" in text
