"""`nemotron train tokenizer | pretrain | sft | demo`: argparse wiring for the training package.

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
    parser.add_argument("--eval-every", type=int, default=0, help="0: at the end only")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 autocast on CUDA, fp32 on CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUT has checkpoints")
    _add_threads(parser)


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
    {"tokenizer": _tokenizer, "pretrain": _pretrain, "sft": _sft, "demo": _demo}[args.train_command](args)


def _tokenizer(args: argparse.Namespace) -> None:
    import torch

    from nemotron.train.data import read_texts
    from nemotron.train.tokenizer_training import TokenizerTrainingConfig, train_tokenizer

    config = TokenizerTrainingConfig(vocab_size=args.vocab_size, model_type=args.model_type,
                                     num_threads=args.threads or torch.get_num_threads())
    tokenizer = train_tokenizer(read_texts(args.data), config, args.out)
    print(f"wrote {args.out}/tokenizer.model ({tokenizer.vocab_size} pieces)")


def _loop(args: argparse.Namespace, model, tokenizer, source_cls) -> None:
    import torch

    from nemotron.train.checkpoint import save_model_dir
    from nemotron.train.data import BatchConfig
    from nemotron.train.schedule import ScheduleConfig
    from nemotron.train.trainer import OptimConfig, Trainer, TrainConfig

    if args.seq_len > model.config.max_position_embeddings:
        raise ConfigError(f"--seq-len {args.seq_len} is longer than the model's context "
                          f"({model.config.max_position_embeddings} tokens)")
    batches = BatchConfig(args.batch_size, args.seq_len, args.seed)
    train = source_cls.from_files(args.data, tokenizer, batches)
    valid = source_cls.from_files(args.valid, tokenizer, dataclasses.replace(batches, seed=args.seed + 7)) \
        if args.valid else None
    schedule = ScheduleConfig(args.lr, args.steps, min(args.warmup, args.steps), args.min_lr_ratio)
    optim = OptimConfig(weight_decay=args.weight_decay, grad_clip=args.grad_clip)
    config = TrainConfig(args.out, log_every=args.log_every, checkpoint_every=args.checkpoint_every,
                         eval_every=args.eval_every, device=args.device, precision=args.precision,
                         resume=not args.no_resume)
    result = Trainer(model, tokenizer, train, schedule, optim, config, valid).run()
    final = save_model_dir(model.cpu(), tokenizer, f"{args.out}/final", dtype=torch.float32)
    print(f"step {result.step}: train loss {result.train_loss:.4f}, {result.tokens_per_second:,.0f} tok/s; "
          f"model written to {final}")


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

    from nemotron.checkpoint.load import load_model
    from nemotron.errors import CheckpointError
    from nemotron.model.nemotron import NemotronForCausalLM
    from nemotron.train.data import ChatDataset

    loaded = load_model(args.model, dtype=torch.float32)
    if loaded.tokenizer is None:
        raise CheckpointError(f"{args.model} has no tokenizer.model or tokenizer.json to encode the chats with")
    if not isinstance(loaded.model, NemotronForCausalLM):
        raise CheckpointError(f"{args.model} is a reward model; SFT needs a language model")
    torch.manual_seed(args.seed)
    _loop(args, loaded.model.train(), loaded.tokenizer, ChatDataset)


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
