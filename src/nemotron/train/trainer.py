"""The training loop shared by every stage: AdamW, warmup + cosine schedule, gradient clipping and
accumulation, activation checkpointing, fp32 on CPU / bf16 autocast on GPU, periodic checkpoints
with exact resume, progress logging and metrics in OUT/metrics.jsonl.

Stages differ in their batches and their objective (objectives.py): pretraining and SFT minimise
next-token loss (SFT targets are IGNORE outside the assistant turns), DPO / RPO a preference loss
against a frozen reference, reward models regression and Bradley-Terry losses.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from nemotron.errors import ConfigError
from nemotron.tokenizer import Tokenizer
from nemotron.train.checkpoint import (latest_checkpoint, load_checkpoint, load_weights, read_checkpoint,
                                       restore_rng, save_checkpoint, save_model_dir)
from nemotron.train.data import BatchSource
from nemotron.train.distributed import DataParallel, full_state, load_full_state, shard_model, sum_across
from nemotron.train.modes import eval_mode
from nemotron.train.objectives import LanguageModeling, Objective
from nemotron.train.schedule import ScheduleConfig, learning_rate


BEST, BEST_FILE = "best", "best.json"  # keep_best: OUT/best holds the weights of the best validation


@dataclass(slots=True, frozen=True)
class OptimConfig:
    weight_decay: float = 0.1  # applied to matrices only; norms, biases and embeddings are exempt
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off

    def __post_init__(self) -> None:
        if self.weight_decay < 0 or self.grad_clip < 0 or self.eps <= 0:
            raise ConfigError("OptimConfig.weight_decay and grad_clip must be >= 0, eps > 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"OptimConfig betas must be in [0, 1), got {self.beta1}, {self.beta2}")


@dataclass(slots=True, frozen=True)
class TrainConfig:
    out_dir: str
    log_every: int = 10
    checkpoint_every: int = 500  # steps; 0 = only when the run ends
    keep_checkpoints: int = 2
    eval_every: int = 0  # steps; 0 = only when the run ends
    eval_batches: int = 8
    device: str = "auto"  # auto: cuda when available
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere; or "fp32", "bf16"
    resume: bool = True  # continue from the newest checkpoint in out_dir
    stop_at_step: int | None = None  # end this run early (time-boxed runs; resume continues)
    micro_batch_size: int | None = None  # rows per forward; a smaller value accumulates gradients
    activation_checkpointing: bool = False  # recompute each layer's activations in backward (less memory)
    progress: bool = False  # a tqdm bar with loss, tokens/s and ETA (the CLI turns it on for terminals)
    keep_best: bool = False  # end with the weights of the best validation (accuracy if reported, else loss)

    def __post_init__(self) -> None:
        for name in ("log_every", "keep_checkpoints", "eval_batches"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"TrainConfig.{name} must be positive, got {getattr(self, name)}")
        if self.micro_batch_size is not None and self.micro_batch_size <= 0:
            raise ConfigError(f"TrainConfig.micro_batch_size must be positive, got {self.micro_batch_size}")
        for name in ("checkpoint_every", "eval_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.keep_best and not self.eval_every:
            raise ConfigError("TrainConfig.keep_best needs eval_every > 0 (the evaluations to choose among)")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"TrainConfig.precision must be auto, fp32 or bf16, got {self.precision!r}")


@dataclass(slots=True)
class TrainResult:
    step: int
    train_loss: float  # mean over the last logging window
    valid_loss: float | None
    tokens_per_second: float  # trained (target) tokens per second over this run; SFT: assistant tokens
    checkpoint: Path | None


def optimizer_for(model: nn.Module, config: OptimConfig, lr: float) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:  # frozen (the base weights of a LoRA run)
            continue
        exempt = param.ndim < 2 or "embed_tokens" in name  # norms, biases, embeddings
        (no_decay if exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(config.beta1, config.beta2), eps=config.eps)


def evaluate(model: nn.Module, data: BatchSource, num_batches: int, device: torch.device,
             autocast: Callable[[], contextlib.AbstractContextManager],
             objective: Objective | None = None, parallel: DataParallel | None = None) -> float:
    """Mean loss over the first num_batches batches of `data`, each weighted by its size
    (target tokens for language modelling, pairs for preferences)."""
    return evaluate_metrics(model, data, num_batches, device, autocast, objective, parallel)["loss"]


@torch.no_grad()
def evaluate_metrics(model: nn.Module, data: BatchSource, num_batches: int, device: torch.device,
                     autocast: Callable[[], contextlib.AbstractContextManager],
                     objective: Objective | None = None, parallel: DataParallel | None = None) -> dict[str, float]:
    """Every metric the objective reports (loss, accuracy, ...), each averaged over batches weighted by
    its own count (the objective's `weight`: pairs for accuracy, rated attributes for MSE, ...)."""
    objective = objective or LanguageModeling()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}  # each metric's own: a batch without pairs reports no accuracy
    with eval_mode(model):
        for i in range(num_batches):
            batch = data.batch(i)
            totals = batch.totals()
            local = batch.shard(parallel.rank, parallel.world_size) if parallel else batch
            with autocast():
                _, metrics = objective.loss(model, local.to(device), totals)
            for key, value in sum_across(metrics, parallel).items():
                n = objective.weight(totals, key)
                sums[key] = sums.get(key, 0.0) + value * n
                counts[key] = counts.get(key, 0) + n
    return {key: value / max(counts[key], 1) for key, value in sums.items()}


def training_device(name: str) -> torch.device:
    """TrainConfig.device as a device: "auto" is CUDA when there is one, else the CPU."""
    return torch.device(name if name != "auto" else "cuda" if torch.cuda.is_available() else "cpu")


def checkpoint_activations(model: nn.Module) -> nn.Module:
    """Training transform: each decoder layer keeps only its input and recomputes the rest in
    backward (memory of one layer's activations instead of all of them, for ~1/3 more compute)."""
    from torch.utils.checkpoint import checkpoint

    for layer in model.model.layers:
        if not getattr(layer, "_checkpointed", False):
            forward = layer.forward
            layer.forward = lambda *args, _f=forward: checkpoint(_f, *args, use_reentrant=False)
            layer._checkpointed = True
    return model


class Trainer:
    def __init__(self, model: nn.Module, tokenizer: Tokenizer | None, train_data: BatchSource,
                 schedule: ScheduleConfig, optim: OptimConfig, config: TrainConfig,
                 valid_data: BatchSource | None = None, log: Callable[[str], None] = print,
                 objective: Objective | None = None, parallel: DataParallel | None = None) -> None:
        self.parallel = parallel
        self.device = parallel.device if parallel else training_device(config.device)
        self.model = model.to(self.device).train()
        if config.activation_checkpointing:
            checkpoint_activations(self.model)
        if parallel is not None:
            shard_model(self.model, parallel)
        self.is_main = parallel is None or parallel.is_main
        self.objective = objective or LanguageModeling()
        self.tokenizer, self.train_data, self.valid_data = tokenizer, train_data, valid_data
        self.schedule, self.optim, self.config = schedule, optim, config
        self.log = log if self.is_main else (lambda _: None)
        self.optimizer = optimizer_for(self.model, optim, learning_rate(schedule, 0))
        use_bf16 = config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda")
        self._autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if use_bf16 \
            else contextlib.nullcontext
        self.out_dir = Path(config.out_dir)
        self.step = 0
        self._best: tuple | None = None  # keep_best: (score, step, validation metrics) of the weights in OUT/best
        if config.keep_best and valid_data is None:
            raise ConfigError("TrainConfig.keep_best needs validation data (--valid) to choose among")
        if config.keep_best and parallel is not None:
            raise ConfigError("keeping the best validation's weights is single-process only (not under torchrun)")

    def _resume(self) -> None:
        found = latest_checkpoint(self.out_dir) if self.config.resume else None
        if found is None:
            return
        if self.parallel is None:
            state = load_checkpoint(found, self.model, self.optimizer)
        else:
            weights, state, adapter = read_checkpoint(found)
            if state.get("optimizer_format") != "sharded":
                raise ConfigError(f"{found} was written by a single-process run; resume it without torchrun "
                                  "(or start over with --no-resume)")
            load_full_state(self.model, self.optimizer, weights, state["optimizer"], strict=not adapter)
            restore_rng(state)
        self.step = state["step"]
        self._best = self._read_best() if self.config.keep_best else None
        self.log(f"resumed from {found} at step {self.step}")

    def _save(self) -> Path:
        extra = {"schedule": asdict(self.schedule), "optim": asdict(self.optim)}
        if self.parallel is None:
            return save_checkpoint(self.out_dir, self.step, self.model, self.tokenizer, self.optimizer, extra,
                                   self.config.keep_checkpoints)
        model_state, optimizer_state = full_state(self.model, self.optimizer)  # every rank takes part
        if self.is_main:
            save_checkpoint(self.out_dir, self.step, self.model, self.tokenizer, self.optimizer,
                            {**extra, "optimizer_format": "sharded"}, self.config.keep_checkpoints,
                            model_state=model_state, optimizer_state=optimizer_state)
        torch.distributed.barrier()
        return latest_checkpoint(self.out_dir)

    def export(self, directory: str | Path, dtype: torch.dtype = torch.float32) -> Path:
        """The trained model (or LoRA adapter) as a loadable directory; with FSDP every rank calls it."""
        state = full_state(self.model, self.optimizer)[0] if self.parallel is not None else None
        if self.is_main:
            save_model_dir(self.model, self.tokenizer, directory, dtype=dtype, state=state)
        if self.parallel is not None:
            torch.distributed.barrier()
        return Path(directory)

    def _evaluate(self) -> dict[str, float]:
        return evaluate_metrics(self.model, self.valid_data, self.config.eval_batches, self.device, self._autocast,
                                self.objective, self.parallel)

    def _remember_if_best(self, valid: dict[str, float]) -> None:
        """Keep the weights of the best validation so far in OUT/best (a resume goes on from them):
        highest accuracy when the objective reports one, then lowest loss; the first of equals."""
        if self._best is None or _score(valid) > self._best[0]:
            self._best = (_score(valid), self.step, valid)
            best, tmp = self.out_dir / BEST, self.out_dir / f".tmp-{BEST}"
            shutil.rmtree(tmp, ignore_errors=True)
            save_model_dir(self.model, self.tokenizer, tmp, dtype=torch.float32)
            (tmp / BEST_FILE).write_text(json.dumps({"step": self.step, "valid": valid}), encoding="utf-8")
            shutil.rmtree(best, ignore_errors=True)
            tmp.rename(best)  # weights and their score replace the old ones together

    def _read_best(self) -> tuple | None:
        path = self.out_dir / BEST / BEST_FILE
        if not path.is_file():
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        return _score(record["valid"]), record["step"], record["valid"]

    def train_step(self) -> tuple[float, int]:
        """One optimizer step on batch number self.step -> (loss, trained tokens)."""
        loss, tokens, _ = self._step()
        return loss, tokens

    def _step(self) -> tuple[float, int, dict[str, float]]:
        lr = learning_rate(self.schedule, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self.train_data.batch(self.step)
        totals = batch.totals()  # of the global batch: every share is normalised by it
        parallel, size = self.parallel, self.config.micro_batch_size
        local = batch.shard(parallel.rank, parallel.world_size) if parallel else batch
        micros = local.split(size) if size else [local]
        metrics: dict[str, float] = {}
        for k, micro in enumerate(micros):
            if parallel is not None:  # reduce gradients across ranks once, after the last micro-batch
                self.model.set_requires_gradient_sync(k == len(micros) - 1)
            with self._autocast():
                loss, parts = self.objective.loss(self.model, micro.to(self.device), totals)
            loss.backward()
            for key, value in parts.items():
                metrics[key] = metrics.get(key, 0.0) + value
        metrics = sum_across(metrics, parallel)
        loss_value = metrics["loss"]
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss became {loss_value} at step {self.step}; "
                                     "lower the learning rate or check the data")
        if self.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss_value, batch.num_target_tokens, metrics

    def run(self) -> TrainResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # The reference (DPO / RPO) is the model as given, before a resume loads trained weights.
        self.objective.prepare(self.model, self.out_dir, self.device, self._autocast)
        self._resume()
        if not self.is_main:
            return self._loop(None)
        with (self.out_dir / "metrics.jsonl").open("a", encoding="utf-8") as metrics:
            return self._loop(metrics)

    def _logged_losses(self) -> tuple[float, float | None, None]:
        """Losses of earlier runs in out_dir, so a run resumed at its end still reports them."""
        path, loss, valid = self.out_dir / "metrics.jsonl", float("nan"), None
        for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else ():
            record = json.loads(line)
            loss, valid = record.get("loss", loss), record.get("valid_loss", valid)
        return loss, valid, None

    def _loop(self, metrics) -> TrainResult:
        cfg, total = self.config, self.schedule.total_steps
        end = min(total, cfg.stop_at_step) if cfg.stop_at_step is not None else total
        window: dict[str, list[float]] = {}  # metric -> (sum, steps that reported it)
        window_steps, window_tokens, run_tokens, first_step = 0, 0, 0, self.step
        started = window_start = time.perf_counter()
        last_loss, valid_loss, saved = self._logged_losses()
        bar = _progress_bar(self.step, end) if cfg.progress and self.is_main else None
        while self.step < end:
            loss, tokens, parts = self._step()
            for key, value in parts.items():
                total_and_count = window.setdefault(key, [0.0, 0])
                total_and_count[0] += value
                total_and_count[1] += 1
            window_steps, window_tokens, run_tokens = window_steps + 1, window_tokens + tokens, run_tokens + tokens
            elapsed = time.perf_counter() - started
            eta = elapsed / (self.step - first_step) * (end - self.step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{run_tokens / max(elapsed, 1e-9):,.0f}")
            record: dict = {}
            if self.step % cfg.log_every == 0 or self.step == end:
                span = time.perf_counter() - window_start
                last_loss = window["loss"][0] / window["loss"][1]
                record = {"step": self.step, **{k: round(v / n, 4) for k, (v, n) in window.items()},
                          "lr": learning_rate(self.schedule, self.step - 1),
                          "tokens_per_s": round(window_tokens / max(span, 1e-9))}
                window, window_steps, window_tokens, window_start = {}, 0, 0, time.perf_counter()
            if self.valid_data is not None and ((cfg.eval_every and self.step % cfg.eval_every == 0)
                                                or self.step == end):
                valid = self._evaluate()
                valid_loss = valid["loss"]
                record = {**record, "step": self.step, "valid_loss": round(valid_loss, 4)}
                record.update({f"valid_{k}": round(v, 4) for k, v in valid.items() if k != "loss"})  # accuracy, ...
                if cfg.keep_best:
                    self._remember_if_best(valid)
                    if self.step == total:
                        _, step, best = self._best
                        record["best_step"], valid_loss = step, best["loss"]
            if record and metrics is not None:
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                line = _format(record, total, elapsed, eta)
                self.log(line) if bar is None else bar.write(line)
            if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or self.step == end:
                saved = self._save()
        if bar is not None:
            bar.close()
        if cfg.keep_best and self.step == total and self._best is not None:
            # After the last checkpoint (the last weights, which a time-boxed stop would go on from):
            # the model the run hands over (OUT/final) is the best one.
            load_weights(self.out_dir / BEST, self.model)
        return TrainResult(self.step, last_loss, valid_loss, run_tokens / max(time.perf_counter() - started, 1e-9),
                           saved)


def _score(valid: dict[str, float]) -> tuple[float, float]:
    return valid.get("accuracy", 0.0), -valid["loss"]


def _progress_bar(step: int, end: int):
    from tqdm import tqdm

    return tqdm(total=end, initial=step, unit="step", dynamic_ncols=True, leave=True)


def _format(record: dict, total: int, elapsed: float, eta: float = 0.0) -> str:
    parts = [f"step {record['step']}/{total}"]
    if "loss" in record:
        parts += [f"loss {record['loss']:.4f}", f"lr {record['lr']:.2e}", f"{record['tokens_per_s']:,} tok/s"]
    for key in ("accuracy", "margin", "mse", "lm_loss", "distill"):
        if key in record:
            parts.append(f"{key} {record[key]:.3f}")
    if "valid_loss" in record:
        parts.append(f"valid loss {record['valid_loss']:.4f}")
    if "valid_accuracy" in record:
        parts.append(f"valid accuracy {record['valid_accuracy']:.3f}")
    if "best_step" in record:
        parts.append(f"kept step {record['best_step']}")
    parts.append(f"{elapsed / 60:.1f} min")
    if eta:
        parts.append(f"ETA {eta / 60:.1f} min")
    return " | ".join(parts)
