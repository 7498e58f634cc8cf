"""`nemotron train tokenizer | pretrain | sft | dpo | rpo | reward | reward-eval | average | report | demo`:
argparse wiring for the training package.

`add_train_commands(subparsers)` adds the `train` command to the main parser; `run_train(args)` runs it.
Building the parser imports nothing heavy: torch and the training modules load when a stage runs.
"""
from __future__ import annotations

import argparse
import dataclasses

from nemotron.errors import ConfigError


def _add_loop_options(parser: argparse.ArgumentParser, steps: int, lr: float) -> None:
    parser.add_argument("--data", nargs="+", required=True, help=".jsonl ({'text'} or {'messages'} per line) "
                        "or plain text files (documents separated by blank lines)")
    parser.add_argument("--valid", nargs="+", help="held-out files in the same format, for a validation loss")
    parser.add_argument("--out", required=True, help="checkpoints go to OUT/checkpoint-N, the final model to OUT/final")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    parser.add_argument("--warmup", type=int, default=100, help="warmup steps")
    parser.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine floor as a fraction of --lr")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--keep-checkpoints", type=int, default=2,
                        help="how many of the newest checkpoints to keep (e.g. to average the last ones)")
    parser.add_argument("--eval-every", type=int, default=0, help="0: at the end only")
    parser.add_argument("--eval-batches", type=int, default=8, help="validation batches per evaluation")
    parser.add_argument("--keep-best", action="store_true",
                        help="end with the weights of the best evaluation (every --eval-every steps): the highest "
                             "validation accuracy where the stage reports one (DPO, RPO, reward), else the lowest loss")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 autocast on CUDA, fp32 on CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUT has checkpoints")
    parser.add_argument("--micro-batch-size", type=int,
                        help="rows per forward pass; smaller than --batch-size accumulates gradients (same result)")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="recompute layer activations in backward: less memory, ~1/3 more compute")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    _add_threads(parser)


def _add_lora_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("LoRA (train low-rank adapters only; the result is a PEFT adapter)")
    group.add_argument("--lora-r", type=int, default=0, help="adapter rank; 0 trains every weight")
    group.add_argument("--lora-alpha", type=float, help="scale numerator (default: 2 x rank)")
    group.add_argument("--lora-dropout", type=float, default=0.0)
    group.add_argument("--lora-targets", nargs="+",
                       default=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
                       help="linear layers to adapt, by name")


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (0: its default); 1 is faster on a machine others keep busy")


def add_train_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    train = subparsers.add_parser("train", help="train a tokenizer or a model (pretraining, chat SFT, the demo model)")
    commands = train.add_subparsers(dest="train_command", required=True, metavar="STAGE")

    tok = commands.add_parser("tokenizer", help="train a SentencePiece tokenizer.model with Nemotron's special ids")
    tok.add_argument("--data", nargs="+", required=True,
                     help="text files (.jsonl records or plain text); chats are rendered in the chat format")
    tok.add_argument("--out", required=True, help="directory for tokenizer.model")
    tok.add_argument("--vocab-size", type=int, default=4096)
    tok.add_argument("--model-type", choices=["bpe", "unigram"], default="bpe")
    _add_threads(tok)

    pre = commands.add_parser("pretrain", help="next-token training on text documents")
    _add_loop_options(pre, steps=2000, lr=2e-3)
    pre.add_argument("--tokenizer", required=True, help="tokenizer.model (or a directory holding one)")
    pre.add_argument("--init", help="start from this Hugging Face model directory instead of random weights")
    for flag, default in (("--layers", 4), ("--hidden-size", 256), ("--ffn-size", 768), ("--heads", 8),
                          ("--kv-heads", 4), ("--head-dim", 32), ("--context", 1024)):
        pre.add_argument(flag, type=int, default=default, help="architecture of a new model (ignored with --init)")

    sft = commands.add_parser("sft", help="chat fine-tuning, loss on assistant turns only")
    _add_loop_options(sft, steps=600, lr=1e-3)
    sft.add_argument("--model", required=True, help="Hugging Face model directory to start from")
    _add_lora_options(sft)

    pairs_help = (".jsonl / .parquet preference rows: nemotron sdg output (prompt, chosen, rejected, "
                  "chosen_reward, rejected_reward), TRL rows, or HelpSteer2-Preference pairs")
    for name, text in (("dpo", "Direct Preference Optimization, with an optional SFT loss on the chosen replies"),
                       ("rpo", "Reward-aware Preference Optimization (Nemotron-4 340B report), from the data's "
                               "reward gaps")):
        stage = commands.add_parser(name, help=text)
        _add_loop_options(stage, steps=300, lr=1e-5)
        stage.set_defaults(batch_size=8, warmup=10)
        stage.add_argument("--model", required=True, help="the policy to start from (also the reference policy)")
        stage.add_argument("--beta", type=float, default=0.1, help="KL regularisation towards the reference")
        stage.add_argument("--sft-weight", type=float, default=0.0,
                           help="weight of the SFT loss on the chosen replies (the 340B report adds one)")
        if name == "rpo":
            stage.add_argument("--eta", type=float, default=1.0, help="scale of the reward gap")
        _add_lora_options(stage)
        stage.epilog = "DATA: " + pairs_help

    reward = commands.add_parser("reward", help="train a reward model (Nemotron-4 340B Reward shape)")
    _add_loop_options(reward, steps=300, lr=1e-5)
    reward.set_defaults(batch_size=8, warmup=10)
    reward.add_argument("--model", required=True,
                        help="a language model (its trunk gets a new attribute head) or a reward model to continue")
    reward.add_argument("--loss", choices=["regression", "bt", "combined"], default="combined",
                        help="MSE on attribute ratings, Bradley-Terry on pairs, or both summed")
    reward.add_argument("--bt-weight", type=float, default=1.0)
    reward.add_argument("--regression-weight", type=float, default=1.0)
    reward.add_argument("--lm-weight", type=float, default=0.0,
                        help="auxiliary next-token loss on the chosen replies through the language model's "
                             "frozen output layer (keeps the trunk's knowledge; needs a language model)")
    reward.add_argument("--distill-weight", type=float, default=0.0,
                        help="soft Bradley-Terry towards the starting language model's own preference between the "
                             "replies, σ(S × its log-likelihood margin) (needs a language model)")
    reward.add_argument("--distill-scale", type=float, default=0.1, metavar="S",
                        help="scale of the language model's log-likelihood in --distill-weight's and --dense-weight's "
                             "targets")
    reward.add_argument("--dense-weight", type=float, default=0.0,
                        help="dense distillation: the head at every reply token regresses towards S × the starting "
                             "language model's log-likelihood of the reply so far, relative to the head on the prompt "
                             "alone (needs a language model)")
    reward.add_argument("--dense-target", choices=["so-far", "per-token"], default="so-far",
                        help="so-far: r(t) − r(reply start − 1) towards S × log p(reply up to t); per-token: each step "
                             "r(t) − r(t − 1) towards S × log p(token t)")
    reward.add_argument("--add-layers", type=int, default=0,
                        help="grow a language model's trunk by this many identity-initialised decoder layers first")
    reward.add_argument("--train-added-only", action="store_true",
                        help="with --add-layers: train only the added layers, the final norm and the head")
    reward.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                        help="WARM: train one reward model per seed (its batch order) from the same start into "
                             "OUT/seed-SEED, then average their weights into OUT/final (one model of the same "
                             "shape); each member's and the average's validation accuracy go to OUT/warm.json")
    _add_lora_options(reward)
    reward.epilog = "DATA: " + pairs_help + ", and/or HelpSteer2 rated responses (prompt, response, helpfulness, ...)"

    rev = commands.add_parser("reward-eval", help="pairwise accuracy and per-attribute error of a reward model")
    rev.add_argument("model", help="reward model directory")
    rev.add_argument("--data", nargs="+", required=True, help="held-out preference pairs and/or rated responses")
    rev.add_argument("--lora", help="a LoRA adapter directory to apply to the model first")
    rev.add_argument("--seq-len", type=int, default=1024)
    rev.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    _add_threads(rev)

    avg = commands.add_parser("average", help="average the weights of models of one shape (WARM; the last "
                              "checkpoints of a run) into one model")
    avg.add_argument("out", help="directory for the averaged model")
    avg.add_argument("models", nargs="+", help="model directories fine-tuned from one start (OUT/final, "
                     "OUT/checkpoint-N, ...); the first one's config and tokenizer are kept")
    avg.add_argument("--weights", type=float, nargs="+", help="each model's share (normalised; default equal)")
    avg.set_defaults(threads=0)

    report = commands.add_parser("report", help="draw a run's curves (loss, validation loss, ...) as PNG")
    report.add_argument("out", help="a training OUT directory (reads OUT/metrics.jsonl)")
    report.add_argument("--png", help="where the picture goes (default OUT/curves.png)")
    report.set_defaults(threads=0)

    demo = commands.add_parser("demo", help="rebuild the embedded demo model from scratch")
    demo.add_argument("--out", help="where the final model goes (default: the package's assets/demo)")
    demo.add_argument("--work-dir", default="build/demo", help="corpus and checkpoints; a rerun resumes from them")
    demo.add_argument("--pretrain-steps", type=int)
    demo.add_argument("--sft-steps", type=int)
    demo.add_argument("--measure", action="store_true",
                      help="only measure training tokens/s of the candidate shapes on this machine")
    _add_threads(demo)
    return train


def run_train(args: argparse.Namespace) -> None:
    import torch

    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    stages = {"tokenizer": _tokenizer, "pretrain": _pretrain, "sft": _sft, "dpo": _preference, "rpo": _preference,
              "reward": _reward, "reward-eval": _reward_eval, "average": _average, "report": _report, "demo": _demo}
    stages[args.train_command](args)


def _tokenizer(args: argparse.Namespace) -> None:
    import torch

    from nemotron.train.data import read_texts
    from nemotron.train.tokenizer_training import TokenizerTrainingConfig, train_tokenizer

    config = TokenizerTrainingConfig(vocab_size=args.vocab_size, model_type=args.model_type,
                                     num_threads=args.threads or torch.get_num_threads())
    tokenizer = train_tokenizer(read_texts(args.data), config, args.out)
    print(f"wrote {args.out}/tokenizer.model ({tokenizer.vocab_size} pieces)")


def _loop(args: argparse.Namespace, model, tokenizer, source_cls=None, *, train=None, valid=None,
          objective=None):
    """Train `model` on --data (read by source_cls, or the given datasets) and write OUT/final."""
    import sys

    import torch

    from nemotron.train.data import BatchConfig
    from nemotron.train.distributed import from_environment
    from nemotron.train.schedule import ScheduleConfig
    from nemotron.train.trainer import OptimConfig, Trainer, TrainConfig

    if args.seq_len > model.config.max_position_embeddings:
        raise ConfigError(f"--seq-len {args.seq_len} is longer than the model's context "
                          f"({model.config.max_position_embeddings} tokens)")
    if train is None:
        batches = BatchConfig(args.batch_size, args.seq_len, args.seed)
        train = source_cls.from_files(args.data, tokenizer, batches)
        valid = source_cls.from_files(args.valid, tokenizer, dataclasses.replace(batches, seed=args.seed + 7)) \
            if args.valid else None
    schedule = ScheduleConfig(args.lr, args.steps, min(args.warmup, args.steps), args.min_lr_ratio)
    optim = OptimConfig(weight_decay=args.weight_decay, grad_clip=args.grad_clip)
    config = TrainConfig(args.out, log_every=args.log_every, checkpoint_every=args.checkpoint_every,
                         keep_checkpoints=args.keep_checkpoints,
                         eval_every=args.eval_every, eval_batches=args.eval_batches, keep_best=args.keep_best,
                         device=args.device, precision=args.precision,
                         resume=not args.no_resume, micro_batch_size=args.micro_batch_size,
                         activation_checkpointing=args.activation_checkpointing,
                         progress=not args.no_progress and sys.stderr.isatty())
    parallel = from_environment()  # torchrun: data-parallel over the ranks, FSDP-sharded
    trainer = Trainer(model, tokenizer, train, schedule, optim, config, valid, objective=objective, parallel=parallel)
    result = trainer.run()
    final = trainer.export(f"{args.out}/final", dtype=torch.float32)
    if trainer.is_main:
        kind = "adapter" if (final / "adapter_config.json").is_file() else "model"
        ranks = f" on {parallel.world_size} ranks" if parallel else ""
        print(f"step {result.step}: train loss {result.train_loss:.4f}, {result.tokens_per_second:,.0f} tok/s"
              f"{ranks}; {kind} written to {final}")
    return trainer


def _with_lora(args: argparse.Namespace, model, heads: tuple[str, ...] = ()):
    if not args.lora_r:
        return model
    from nemotron.model.lora import LoraConfig, apply_lora

    alpha = args.lora_alpha if args.lora_alpha is not None else 2.0 * args.lora_r
    return apply_lora(model, LoraConfig(r=args.lora_r, alpha=alpha, dropout=args.lora_dropout,
                                        target_modules=tuple(args.lora_targets), trainable_heads=heads))


def _load_for_training(spec: str, need_tokenizer: bool = True):
    import torch

    from nemotron.checkpoint.load import load_model
    from nemotron.errors import CheckpointError

    loaded = load_model(spec, dtype=torch.float32)
    if need_tokenizer and loaded.tokenizer is None:
        raise CheckpointError(f"{spec} has no tokenizer.model or tokenizer.json to encode the data with")
    return loaded


def _pretrain(args: argparse.Namespace) -> None:
    import torch

    from nemotron.checkpoint.load import load_model
    from nemotron.model.config import ModelConfig
    from nemotron.model.nemotron import NemotronForCausalLM, init_random_weights
    from nemotron.tokenizer import Tokenizer
    from nemotron.train.data import TokenStream

    tokenizer = Tokenizer.from_file(args.tokenizer)
    if args.init:
        model = load_model(args.init, dtype=torch.float32).model
    else:
        config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=args.hidden_size,
                             intermediate_size=args.ffn_size, num_layers=args.layers, num_heads=args.heads,
                             num_kv_heads=args.kv_heads, head_dim=args.head_dim,
                             max_position_embeddings=args.context, torch_dtype="float32")
        model = NemotronForCausalLM(config)
        init_random_weights(model, seed=args.seed)
    torch.manual_seed(args.seed)
    _loop(args, model, tokenizer, TokenStream)


def _sft(args: argparse.Namespace) -> None:
    import torch

    from nemotron.errors import CheckpointError
    from nemotron.model.nemotron import NemotronForCausalLM
    from nemotron.train.data import ChatDataset

    loaded = _load_for_training(args.model)
    if not isinstance(loaded.model, NemotronForCausalLM):
        raise CheckpointError(f"{args.model} is a reward model; SFT needs a language model")
    torch.manual_seed(args.seed)
    _loop(args, _with_lora(args, loaded.model.train()), loaded.tokenizer, ChatDataset)


def _preference(args: argparse.Namespace) -> None:
    import torch

    from nemotron.errors import CheckpointError
    from nemotron.model.nemotron import NemotronForCausalLM
    from nemotron.train.data import BatchConfig
    from nemotron.train.objectives import PreferenceConfig, PreferenceOptimization
    from nemotron.train.preference_data import PreferenceDataset, read_preference_data

    loaded = _load_for_training(args.model)
    if not isinstance(loaded.model, NemotronForCausalLM):
        raise CheckpointError(f"{args.model} is a reward model; {args.train_command.upper()} trains a language model")
    rpo = args.train_command == "rpo"
    batches = BatchConfig(args.batch_size, args.seq_len, args.seed)
    make = lambda paths, seed: PreferenceDataset.from_rows(  # noqa: E731
        read_preference_data(paths), loaded.tokenizer, dataclasses.replace(batches, seed=seed), need_rewards=rpo)
    train = make(args.data, args.seed)
    valid = make(args.valid, args.seed + 7) if args.valid else None
    config = PreferenceConfig("rpo" if rpo else "dpo", beta=args.beta, eta=getattr(args, "eta", 1.0),
                              sft_weight=args.sft_weight)
    objective = PreferenceOptimization(config, [d for d in (train, valid) if d is not None])
    torch.manual_seed(args.seed)
    print(f"{len(train)} pairs for training" + (f", {len(valid)} held out" if valid else ""))
    _loop(args, _with_lora(args, loaded.model.train()), loaded.tokenizer, train=train, valid=valid,
          objective=objective)


def _reward(args: argparse.Namespace) -> None:
    if args.seeds:
        _reward_warm(args)
    else:
        _reward_member(args)


def _reward_warm(args: argparse.Namespace) -> None:
    """WARM: one reward model per seed from the same start (the head starts at zero and added layers
    are copies, so only the batch order differs), their weights averaged into OUT/final."""
    import json
    from pathlib import Path

    from nemotron.checkpoint.load import load_model
    from nemotron.train.averaging import average_model_dirs
    from nemotron.train.distributed import from_environment
    from nemotron.train.preference_data import read_preference_data
    from nemotron.train.reward import evaluate_reward_model
    from nemotron.train.trainer import training_device

    if len(set(args.seeds)) != len(args.seeds) or len(args.seeds) < 2:
        raise ConfigError(f"--seeds needs at least 2 different seeds, got {args.seeds}")
    if args.lora_r:
        raise ConfigError("--seeds averages full weights; it does not combine with LoRA (--lora-r)")
    if from_environment() is not None:
        raise ConfigError("--seeds runs in one process; under torchrun train each seed (--seed N --out OUT/seed-N) "
                          "and merge them with `nemotron train average`")
    out = Path(args.out)
    members = {seed: out / f"seed-{seed}" for seed in args.seeds}
    for seed, member in members.items():
        print(f"WARM member seed {seed} -> {member}", flush=True)
        _reward_member(argparse.Namespace(**{**vars(args), "seed": seed, "out": str(member), "seeds": None}))
    final = average_model_dirs([m / "final" for m in members.values()], out / "final")
    report = {"seeds": args.seeds, "members": {}, "average": None}
    if args.valid:
        device = training_device(args.device)
        loaded = load_model(final, device=device)
        evaluation = evaluate_reward_model(loaded.model, read_preference_data(args.valid), loaded.tokenizer,
                                           args.seq_len, device=device)
        _report_reward_eval(out, evaluation)
        for seed, member in members.items():
            report["members"][str(seed)] = json.loads((member / "reward_eval.json").read_text())["accuracy"]
        report["average"] = evaluation.accuracy
    (out / "warm.json").write_text(json.dumps(report) + "\n")
    accuracy = lambda a: "n/a" if a is None else f"{a:.3f}"  # noqa: E731
    print(f"WARM: {len(members)} members averaged into {final}; validation accuracy of the members "
          + ", ".join(f"seed {k} {accuracy(a)}" for k, a in report["members"].items())
          + f"; of the average {accuracy(report['average'])}")


def _reward_member(args: argparse.Namespace) -> None:
    from pathlib import Path

    import torch

    from nemotron.train.data import BatchConfig
    from nemotron.train.objectives import RewardConfig, RewardModeling
    from nemotron.train.preference_data import RewardDataset, read_preference_data
    from nemotron.model.heads import add_identity_layers, reward_model_from
    from nemotron.model.nemotron import NemotronForCausalLM
    from nemotron.train.reward import evaluate_reward_model

    if args.add_layers < 0:
        raise ConfigError(f"--add-layers must be >= 0, got {args.add_layers}")
    loaded = _load_for_training(args.model)
    lm_head = loaded.model.lm_head if isinstance(loaded.model, NemotronForCausalLM) else None
    if (args.lm_weight or args.distill_weight or args.dense_weight) and lm_head is None:
        raise ConfigError("--lm-weight, --distill-weight and --dense-weight need a language model to start from (its "
                          "output layer scores the tokens)")
    model = reward_model_from(loaded.model)
    if args.train_added_only:
        if not args.add_layers or args.lora_r:
            raise ConfigError("--train-added-only needs --add-layers and no LoRA")
        model.requires_grad_(False)
    model = add_identity_layers(model, args.add_layers)
    if args.train_added_only:
        for module in (*model.model.layers[-args.add_layers:], model.model.norm, model.rm_head):
            module.requires_grad_(True)
    batches = BatchConfig(args.batch_size, args.seq_len, args.seed)
    train_rows = read_preference_data(args.data)
    valid_rows = read_preference_data(args.valid) if args.valid else None
    n = model.config.num_reward_attributes
    train = RewardDataset.from_rows(train_rows, loaded.tokenizer, batches, n)
    valid = RewardDataset.from_rows(valid_rows, loaded.tokenizer, dataclasses.replace(batches, seed=args.seed + 7),
                                    n) if valid_rows else None
    config = RewardConfig(args.loss, bt_weight=args.bt_weight, regression_weight=args.regression_weight,
                          lm_weight=args.lm_weight, distill_weight=args.distill_weight,
                          distill_scale=args.distill_scale, dense_weight=args.dense_weight,
                          dense_target=args.dense_target)
    objective = RewardModeling(config, lm_head, [d for d in (train, valid) if d is not None])
    torch.manual_seed(args.seed)
    trainer = _loop(args, _with_lora(args, model.train(), heads=("rm_head",)), loaded.tokenizer, train=train,
                    valid=valid, objective=objective)
    if valid_rows:  # with FSDP every rank runs the (sharded) forward passes; the first one reports
        evaluation = evaluate_reward_model(trainer.model.eval(), valid_rows, loaded.tokenizer, args.seq_len,
                                           device=trainer.device)
        if trainer.is_main:
            _report_reward_eval(Path(args.out), evaluation)


def _report_reward_eval(out, evaluation) -> None:
    """OUT/reward_eval.json (what WARM reads back for each member) and the table on the terminal."""
    import json

    (out / "reward_eval.json").write_text(json.dumps(evaluation.to_dict(), indent=2) + "\n")
    print(evaluation.table())


def _reward_eval(args: argparse.Namespace) -> None:
    import json

    from nemotron.checkpoint.peft import load_adapter
    from nemotron.errors import CheckpointError
    from nemotron.model.nemotron import NemotronForRewardModel
    from nemotron.train.preference_data import read_preference_data
    from nemotron.train.reward import evaluate_reward_model

    loaded = _load_for_training(args.model)
    if not isinstance(loaded.model, NemotronForRewardModel):
        raise CheckpointError(f"{args.model} is a language model, not a reward model")
    model = load_adapter(loaded.model, args.lora) if args.lora else loaded.model
    evaluation = evaluate_reward_model(model, read_preference_data(args.data), loaded.tokenizer, args.seq_len)
    print(json.dumps(evaluation.to_dict(), indent=2) if args.json else evaluation.table())


def _average(args: argparse.Namespace) -> None:
    from nemotron.train.averaging import average_model_dirs

    out = average_model_dirs(args.models, args.out, args.weights)
    print(f"averaged {len(args.models)} models into {out}")


def _report(args: argparse.Namespace) -> None:
    from nemotron.train.report import draw_curves

    print(f"wrote {draw_curves(args.out, args.png)}")


def _demo(args: argparse.Namespace) -> None:
    from nemotron.train.demo import DemoBuildConfig, build_demo_model, measure_throughput

    changes = {k: v for k, v in (("out_dir", args.out), ("work_dir", args.work_dir),
                                 ("pretrain_steps", args.pretrain_steps), ("sft_steps", args.sft_steps))
               if v is not None}
    config = dataclasses.replace(DemoBuildConfig(), **changes)
    if args.measure:
        measure_throughput(config)
    else:
        build_demo_model(config)
