"""`nemotron sdg`: synthetic data generation with the Nemotron-4 340B recipe.

    nemotron sdg run sft_prompts --out data/ --endpoint http://127.0.0.1:8000/v1 --model nemotron
    nemotron sdg run sft_prompts --out data/ --set stages.topics.count=5 --set seed=3
    nemotron sdg report data/
    nemotron sdg export data/ --format parquet      # or --format hf: a `datasets` folder with a card
    nemotron sdg configs                       # the ready-made pipelines

Model settings, strongest first: a flag (--endpoint, --model ... set models.generator, --reward-*
models.reward, --judge-* models.judge), then `--set models.ALIAS.KEY=VALUE`, then the config file.
A flag changes only its own model entry: stages that name another model (`model: big`) keep it,
and the run warns when that means a flag does not reach every stage.

`sdg run` exits 0 when complete, 2 on an error (bad config, output disk full or read-only), 3 when
units gave up (rerun to retry them), 4 when a stage kept no records (see nemotron/sdg/status.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

API_KEY_ENV = "NEMOTRON_API_KEY"


def register(commands) -> None:
    sdg = commands.add_parser("sdg", help="generate synthetic training data (prompts, dialogues, preference pairs)")
    sub = sdg.add_subparsers(dest="sdg_command", required=True, metavar="SUBCOMMAND")

    run = sub.add_parser("run", help="run (or resume) a pipeline; rerunning the same command resumes it",
                         epilog="exit status: 0 complete; 2 error (bad config, output disk full or read-only); "
                                "3 some units gave up after their retries (rerun to retry them); "
                                "4 a stage kept no records")
    run.add_argument("pipeline",
                     help="pipeline YAML file, or the name of a ready-made one (see `nemotron sdg configs`)")
    run.add_argument("--out", required=True, help="output directory (created; reused to resume)")
    run.add_argument("--endpoint", help="OpenAI-compatible base URL of the generator (models.generator.endpoint); "
                                        "several, comma-separated, share one window (replicas of one model)")
    run.add_argument("--model", help="generator model name (models.generator.model)")
    run.add_argument("--api-key", help=f"generator API key (default: the model's api_key_env, else ${API_KEY_ENV})")
    run.add_argument("--reward-endpoint", help="base URL of the reward model (models.reward.endpoint)")
    run.add_argument("--reward-model", help="reward model name (models.reward.model)")
    run.add_argument("--reward-api-key", help="reward model API key (default: like --api-key)")
    run.add_argument("--judge-endpoint", help="base URL of an LLM judge for preference stages (models.judge.endpoint; "
                     "stages that judge and name no judge_model use it)")
    run.add_argument("--judge-model", help="judge model name (models.judge.model)")
    run.add_argument("--judge-api-key", help="judge API key (default: like --api-key)")
    run.add_argument("--max-concurrency", type=int, help="calls in flight per model at most (models.*.max_concurrency)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value (YAML syntax): stages.topics.count=5, seed=3, "
                          "models.generator.max_concurrency=64, sampling.temperature=0.5; repeatable")
    run.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    run.set_defaults(func=_run)

    report = sub.add_parser("report", help="counts, rejection reasons, token usage and plots of a run")
    report.add_argument("out", help="a pipeline's output directory")
    report.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    report.set_defaults(func=_report)

    export = sub.add_parser("export", help="write a run's datasets in another format")
    export.add_argument("out", help="a pipeline's output directory")
    export.add_argument("--format", default="parquet", choices=["parquet", "hf"],
                        help="parquet: DIR/<dataset>.parquet; hf: DIR/hf/, a folder `datasets.load_dataset` reads, "
                             "with a dataset card (schema, counts, models, config hash)")
    export.set_defaults(func=_export)

    configs = sub.add_parser("configs", help="list the ready-made pipeline configs")
    configs.set_defaults(func=_configs)


def _resolve_pipeline(name: str) -> Path:
    from nemotron.errors import NemotronError
    from nemotron.sdg.configs import config_path, names

    path = Path(name)
    if path.exists():
        return path
    if name in names():
        return config_path(name)
    raise NemotronError(f"no pipeline file {name!r}, and no ready-made pipeline of that name ({', '.join(names())})")


def apply_sets(data: dict, assignments: list[str]) -> dict:
    """The raw config with `--set a.b.c=VALUE` applied (VALUE read as YAML); `stages.NAME` finds a
    stage by name. Unknown keys are left for the config's own checks to name."""
    import copy

    import yaml

    from nemotron.errors import NemotronError

    data = copy.deepcopy(data)
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise NemotronError(f"--set {assignment!r}: expected KEY=VALUE, e.g. stages.topics.count=5")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise NemotronError(f"--set {key}: the value is not valid YAML ({err})") from None
        node, parts = data, key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):  # inside stages: find the stage by name
                stage = next((s for s in node if isinstance(s, dict) and s.get("name") == part), None)
                if stage is None:
                    names = [s.get("name") for s in node if isinstance(s, dict)]
                    raise NemotronError(f"--set {key}: no stage named {part!r} (stages: {names})")
                node = stage
                continue
            child = node.get(part) if isinstance(node, dict) else None
            if child is None and isinstance(node, dict):
                child = node[part] = {}
            if not isinstance(child, (dict, list)):
                raise NemotronError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a mapping")
            node = child
        node[parts[-1]] = value
    return data


def apply_overrides(config, args: argparse.Namespace, warn=None):
    """The config with command-line model settings applied; `warn(line)` hears about flags that do
    not reach every stage (stages on other models) or that replace an endpoint the config names."""
    from nemotron.errors import ConfigError
    from nemotron.sdg.config import ModelSpec
    from nemotron.sdg.stages import STAGE_KINDS

    warn = warn or (lambda line: print(f"warning: {line}", file=sys.stderr))
    models = dict(config.models)

    def override(alias: str, kind: str, endpoint: str | None, model: str | None, flag: str) -> None:
        if not (endpoint or model):
            return
        base = models.get(alias) or ModelSpec(name=alias, model=model or "model", kind=kind)
        changes = {"model": model} if model else {}
        if endpoint:
            if base.endpoint and base.endpoint != endpoint:
                warn(f"{flag} {endpoint} replaces models.{alias}.endpoint {base.endpoint} from the config")
            changes.update(endpoint=endpoint, engine=None)
        models[alias] = dataclasses.replace(base, **changes)
        # Stages of this kind of model that name another alias do not follow the flag.
        for spec in config.stages:
            key = {"chat": "model", "reward": "reward_model"}[kind] if alias != "judge" else "judge_model"
            named = getattr(spec, key)
            if kind == "chat" and alias == "generator" and not STAGE_KINDS[spec.kind].uses_generator:
                continue
            if named and named != alias and named in models and models[named].kind == kind:
                where = models[named].endpoint or models[named].engine or "no endpoint"
                warn(f"{flag} sets models.{alias}; stage {spec.name} uses {key} {named!r} ({where}), not it")

    override("generator", "chat", args.endpoint, args.model, "--endpoint" if args.endpoint else "--model")
    override("reward", "reward", args.reward_endpoint, args.reward_model,
             "--reward-endpoint" if args.reward_endpoint else "--reward-model")
    override("judge", "chat", args.judge_endpoint, args.judge_model,
             "--judge-endpoint" if args.judge_endpoint else "--judge-model")
    stages = config.stages
    if args.judge_endpoint or args.judge_model:
        stages = tuple(dataclasses.replace(s, judge_model="judge")
                       if STAGE_KINDS[s.kind].uses_judge and s.judge_model is None else s for s in stages)
    if args.max_concurrency is not None:
        if args.max_concurrency < 1:
            raise ConfigError(f"--max-concurrency must be >= 1, got {args.max_concurrency}")
        models = {k: dataclasses.replace(v, max_concurrency=args.max_concurrency) for k, v in models.items()}
    return dataclasses.replace(config, models=models, stages=stages)


def _api_keys(config, args: argparse.Namespace) -> dict[str, str | None]:
    keys = {}
    for alias, spec in config.models.items():
        flag = {"reward": args.reward_api_key, "judge": args.judge_api_key}.get(alias) or args.api_key
        keys[alias] = flag or os.environ.get(spec.api_key_env or API_KEY_ENV)
    return keys


def _run(args: argparse.Namespace) -> int:
    from nemotron.sdg import loop
    from nemotron.sdg.config import parse_config, read_config
    from nemotron.sdg.pipeline import run_pipeline
    from nemotron.sdg.report import format_report

    path = _resolve_pipeline(args.pipeline)
    data = apply_sets(read_config(path), args.set)
    config = apply_overrides(parse_config(data, where=str(path)), args)
    loop.loop_name(config.event_loop)  # a missing uvloop is an error before anything starts
    summary = loop.run(run_pipeline(config, args.out, _api_keys(config, args), base_dir=path.resolve().parent,
                                    progress=not args.no_progress), config.event_loop)
    print(format_report(args.out))
    status = summary["status"]
    if status["exit"]:
        print(f"error: {status['message']}", file=sys.stderr)
    return status["exit"]


def _report(args: argparse.Namespace) -> None:
    from nemotron.sdg.report import format_report, plot

    print(format_report(args.out))
    if not args.no_plots:
        for path in plot(args.out):
            print(f"plot: {path}")


def _export(args: argparse.Namespace) -> None:
    from nemotron.sdg.export import export

    for path in export(args.out, args.format):
        print(path)


def _configs(args: argparse.Namespace) -> None:
    from nemotron.sdg.configs import config_path, describe, names

    for name in names():
        print(f"{name:<20}{describe(name)}  ({config_path(name)})", file=sys.stdout)


def build_args(argv: list[str]) -> argparse.Namespace:
    """The parsed arguments of a `nemotron sdg ...` command line (for tests and scripts)."""
    from nemotron.cli.main import build_parser

    return build_parser().parse_args(argv)
