"""`nemotron sdg`: synthetic data generation with the Nemotron-4 340B recipe.

    nemotron sdg run sft_prompts --out data/ --endpoint http://127.0.0.1:8000/v1 --model nemotron
    nemotron sdg report data/
    nemotron sdg export data/ --format parquet
    nemotron sdg configs                       # the ready-made pipelines
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

    run = sub.add_parser("run", help="run (or resume) a pipeline; rerunning the same command resumes it")
    run.add_argument("pipeline",
                     help="pipeline YAML file, or the name of a ready-made one (see `nemotron sdg configs`)")
    run.add_argument("--out", required=True, help="output directory (created; reused to resume)")
    run.add_argument("--endpoint", help="OpenAI-compatible base URL of the generator (models.generator.endpoint)")
    run.add_argument("--model", help="generator model name (models.generator.model)")
    run.add_argument("--api-key", help=f"generator API key (default: the model's api_key_env, else ${API_KEY_ENV})")
    run.add_argument("--reward-endpoint", help="base URL of the reward model (models.reward.endpoint)")
    run.add_argument("--reward-model", help="reward model name (models.reward.model)")
    run.add_argument("--reward-api-key", help="reward model API key (default: like --api-key)")
    run.add_argument("--max-concurrency", type=int, help="calls in flight per model at most (models.*.max_concurrency)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    run.set_defaults(func=_run)

    report = sub.add_parser("report", help="counts, rejection reasons, token usage and plots of a run")
    report.add_argument("out", help="a pipeline's output directory")
    report.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    report.set_defaults(func=_report)

    export = sub.add_parser("export", help="write a run's datasets in another format")
    export.add_argument("out", help="a pipeline's output directory")
    export.add_argument("--format", default="parquet", choices=["parquet"])
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


def apply_overrides(config, args: argparse.Namespace):
    """The config with command-line model settings applied."""
    from nemotron.sdg.config import ModelSpec

    models = dict(config.models)

    def override(alias: str, kind: str, endpoint: str | None, model: str | None) -> None:
        if not (endpoint or model):
            return
        base = models.get(alias) or ModelSpec(name=alias, model=model or "model", kind=kind)
        changes = {"model": model} if model else {}
        if endpoint:
            changes.update(endpoint=endpoint, engine=None)
        models[alias] = dataclasses.replace(base, **changes)

    override("generator", "chat", args.endpoint, args.model)
    override("reward", "reward", args.reward_endpoint, args.reward_model)
    if args.max_concurrency:
        models = {k: dataclasses.replace(v, max_concurrency=args.max_concurrency) for k, v in models.items()}
    return dataclasses.replace(config, models=models)


def _api_keys(config, args: argparse.Namespace) -> dict[str, str | None]:
    keys = {}
    for alias, spec in config.models.items():
        flag = args.api_key if alias != "reward" else (args.reward_api_key or args.api_key)
        keys[alias] = flag or os.environ.get(spec.api_key_env or API_KEY_ENV)
    return keys


def _run(args: argparse.Namespace) -> None:
    import asyncio

    from nemotron.sdg.config import load_config
    from nemotron.sdg.pipeline import run_pipeline
    from nemotron.sdg.report import format_report

    path = _resolve_pipeline(args.pipeline)
    config = apply_overrides(load_config(path), args)
    asyncio.run(run_pipeline(config, args.out, _api_keys(config, args), base_dir=path.resolve().parent,
                             progress=not args.no_progress))
    print(format_report(args.out))


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
