"""Build the embedded demo model from nothing: corpus -> tokenizer -> pretraining -> SFT -> export.

The result (config.json, model.safetensors, tokenizer.model, README.md) goes to
src/nemotron/assets/demo/, which the package ships and uses when no model is named. Intermediate
files (corpus, checkpoints) go to a work directory; rerunning the build resumes from them.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nemotron.engine.generate import generate
from nemotron.engine.sampling import SamplingParams
from nemotron.errors import ConfigError
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import NemotronForCausalLM, init_random_weights
from nemotron.tokenizer import CHAT_STOP, Tokenizer, render_chat
from nemotron.train.checkpoint import save_model_dir
from nemotron.train.data import BatchConfig, ChatDataset, TokenStream, read_documents
from nemotron.train.demo_card import write_model_card
from nemotron.train.demo_corpus import CorpusConfig, write_corpus
from nemotron.train.schedule import ScheduleConfig
from nemotron.train.tokenizer_training import TokenizerTrainingConfig, train_tokenizer
from nemotron.train.trainer import OptimConfig, Trainer, TrainConfig

DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"


@dataclass(slots=True, frozen=True)
class DemoShape:
    """The architecture without the vocabulary (which comes from the trained tokenizer)."""

    hidden_size: int = 192
    intermediate_size: int = 576
    num_layers: int = 4
    num_heads: int = 6
    num_kv_heads: int = 2
    head_dim: int = 32
    max_position_embeddings: int = 1024

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, rotary_fraction=0.5, torch_dtype="float32",
                           **dataclasses.asdict(self))


@dataclass(slots=True, frozen=True)
class DemoBuildConfig:
    out_dir: str = str(DEMO_DIR)
    work_dir: str = "build/demo"
    seed: int = 0
    corpus: CorpusConfig = field(default_factory=lambda: CorpusConfig(num_stories=40000, num_fact_documents=24000,
                                                                       num_chats=12000))
    tokenizer: TokenizerTrainingConfig = field(default_factory=TokenizerTrainingConfig)
    shape: DemoShape = field(default_factory=DemoShape)
    pretrain_steps: int = 1600
    pretrain_lr: float = 3e-3
    sft_steps: int = 300
    sft_lr: float = 1e-3
    batch_size: int = 16
    seq_len: int = 256
    sft_text_fraction: float = 0.2  # plain stories mixed into SFT so plain continuation is kept

    def __post_init__(self) -> None:
        if self.pretrain_steps <= 0 or self.sft_steps < 0:
            raise ConfigError("DemoBuildConfig.pretrain_steps must be positive and sft_steps >= 0")
        if not 0.0 <= self.sft_text_fraction < 1.0:
            raise ConfigError(f"DemoBuildConfig.sft_text_fraction must be in [0, 1), got {self.sft_text_fraction}")


def build_demo_model(config: DemoBuildConfig, log: Callable[[str], None] = print) -> Path:
    work = Path(config.work_dir)
    _claim_work_dir(work, config)
    log = clock = _BuildClock(work / "build_seconds", log)
    log(f"[1/5] corpus -> {work / 'corpus'}")
    files = write_corpus(config.corpus, work / "corpus")
    chats = [json.loads(line) for line in files.chat.read_text(encoding="utf-8").splitlines()]
    documents = list(read_documents([files.train_text]))

    log(f"[2/5] tokenizer ({config.tokenizer.vocab_size} pieces)")
    rendered = [render_chat(c["messages"], add_generation_prompt=False) + CHAT_STOP for c in chats]
    tokenizer = train_tokenizer(documents + rendered, config.tokenizer, work / "tokenizer")

    model_config = config.shape.model_config(tokenizer.vocab_size)
    model = NemotronForCausalLM(model_config)
    init_random_weights(model, seed=config.seed)
    log(f"[3/5] pretraining {model_config.num_parameters() / 1e6:.2f}M parameters for {config.pretrain_steps} steps")
    batches = BatchConfig(config.batch_size, config.seq_len, config.seed)
    train = TokenStream.from_files([files.train_text], tokenizer, batches)
    valid = TokenStream.from_files([files.valid_text], tokenizer, dataclasses.replace(batches, seed=config.seed + 7))
    pretrain = Trainer(model, tokenizer, train, ScheduleConfig(config.pretrain_lr, config.pretrain_steps,
                                                                warmup_steps=min(100, config.pretrain_steps // 10)),
                       OptimConfig(), TrainConfig(str(work / "pretrain"), log_every=50, checkpoint_every=500,
                                                  eval_batches=16, device="cpu"), valid, log).run()

    log(f"[4/5] chat SFT for {config.sft_steps} steps")
    num_valid = config.corpus.num_validation
    sft_dir = work / "sft_data"
    sft_dir.mkdir(parents=True, exist_ok=True)
    num_text = int(len(chats) * config.sft_text_fraction / (1 - config.sft_text_fraction))
    _write_jsonl(sft_dir / "train.jsonl", chats[num_valid:] + [{"text": d} for d in documents[:num_text]])
    _write_jsonl(sft_dir / "valid.jsonl", chats[:num_valid])
    sft_batches = BatchConfig(config.batch_size, config.seq_len, config.seed + 1)
    sft_train = ChatDataset.from_files([sft_dir / "train.jsonl"], tokenizer, sft_batches)
    sft_valid = ChatDataset.from_files([sft_dir / "valid.jsonl"], tokenizer, sft_batches)
    sft = pretrain
    if config.sft_steps:
        sft = Trainer(model, tokenizer, sft_train, ScheduleConfig(config.sft_lr, config.sft_steps,
                                                                  warmup_steps=min(30, config.sft_steps // 10)),
                      OptimConfig(), TrainConfig(str(work / "sft"), log_every=50, checkpoint_every=300,
                                                 eval_batches=16, device="cpu"), sft_valid, log).run()

    log(f"[5/5] export -> {config.out_dir}")
    model.eval()
    out = save_model_dir(model, tokenizer, config.out_dir, dtype=torch.float32)
    samples = demo_samples(model, tokenizer)
    for title, prompt, reply in samples:
        log(f"--- {title}\n{prompt!r} -> {reply!r}")
    minutes = clock.minutes()
    write_model_card(out / "README.md", config, model_config, pretrain, sft, minutes, samples)
    log(f"done in {minutes:.1f} min: {out}")
    return out


class _BuildClock:
    """A logger that also keeps the build time, summed over interrupted and resumed runs, on disk."""

    def __init__(self, path: Path, log: Callable[[str], None]) -> None:
        self.path, self._log = path, log
        self.before = float(path.read_text()) if path.is_file() else 0.0
        self.started = time.perf_counter()

    def minutes(self) -> float:
        return (self.before + time.perf_counter() - self.started) / 60

    def __call__(self, message: str) -> None:
        self._log(message)
        self.path.write_text(f"{self.minutes() * 60:.0f}")


def _claim_work_dir(work: Path, config: DemoBuildConfig) -> None:
    """Resuming is only right for the same settings: refuse a work dir left by a different build."""
    settings = json.dumps(dataclasses.asdict(dataclasses.replace(config, out_dir="")), indent=1, sort_keys=True)
    marker = work / "build_config.json"
    if marker.is_file() and marker.read_text() != settings:
        raise ConfigError(f"{work} holds checkpoints of a build with other settings; delete it or choose "
                          "another --work-dir")
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(settings)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def complete(model: NemotronForCausalLM, tokenizer: Tokenizer, prompt: str, max_new_tokens: int = 120,
             temperature: float = 0.0, seed: int = 0, stop: str | None = None) -> str:
    """Greedy (temperature 0) or sampled continuation, cut at `stop` (kept out of the result) or EOS."""
    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, seed=seed,
                            stop=[stop] if stop else [])
    return generate(model, tokenizer, tokenizer.encode(prompt), params).text.strip()


STORY_PROMPT = "Once upon a time, there was a little girl named Lily. She loved to"
CHAT_PROMPTS = ("What is the capital of France?", "What is 7 plus 5?", "Tell me a short story about a dog.")


def demo_samples(model: NemotronForCausalLM, tokenizer: Tokenizer) -> list[tuple[str, str, str]]:
    """(title, prompt, reply) samples for the log and the model card."""
    out = [("story, greedy", STORY_PROMPT, complete(model, tokenizer, STORY_PROMPT)),
           ("story, sampled (T=0.8)", STORY_PROMPT, complete(model, tokenizer, STORY_PROMPT, temperature=0.8))]
    for question in CHAT_PROMPTS:
        prompt = render_chat([{"role": "user", "content": question}])
        out.append(("chat, greedy", question, complete(model, tokenizer, prompt, 300, stop=CHAT_STOP)))
    prompt = render_chat([{"role": "user", "content": CHAT_PROMPTS[-1]}])
    out.append(("chat, sampled (T=0.8)", CHAT_PROMPTS[-1],
                complete(model, tokenizer, prompt, 300, temperature=0.8, stop=CHAT_STOP)))
    return out


CANDIDATE_SHAPES = {
    "A-4x256-ffn768": DemoShape(hidden_size=256, intermediate_size=768, num_heads=8, num_kv_heads=4),
    "B-4x192-ffn576": DemoShape(),  # the chosen one
    "C-6x256-ffn512": DemoShape(hidden_size=256, intermediate_size=512, num_layers=6, num_heads=8, num_kv_heads=4),
}


def measure_throughput(config: DemoBuildConfig, steps: int = 12, log: Callable[[str], None] = print
                       ) -> dict[str, float]:
    """Training tokens/s of each candidate shape on this machine (a small corpus, `steps` steps after
    two warm-up steps), to size the build to the time budget."""
    small = dataclasses.replace(config.corpus, num_stories=2000, num_fact_documents=500, num_chats=0,
                                num_validation=10)
    work = Path(config.work_dir) / "measure"
    files = write_corpus(small, work)
    tokenizer = train_tokenizer(read_documents([files.train_text]), config.tokenizer)
    stream = TokenStream.from_files([files.train_text], tokenizer,
                                    BatchConfig(config.batch_size, config.seq_len, config.seed))
    results = {}
    for name, shape in CANDIDATE_SHAPES.items():
        model_config = shape.model_config(config.tokenizer.vocab_size)
        model = NemotronForCausalLM(model_config)
        init_random_weights(model, seed=config.seed)
        trainer = Trainer(model, None, stream, ScheduleConfig(1e-3, steps + 2), OptimConfig(),
                          TrainConfig(str(work / name), resume=False, device="cpu"))
        for _ in range(2):
            trainer.train_step()
        start, tokens = time.perf_counter(), 0
        for _ in range(steps):
            tokens += trainer.train_step()[1]
        results[name] = tokens / (time.perf_counter() - start)
        log(f"{name}: {model_config.num_parameters() / 1e6:.2f}M parameters, "
            f"{model_config.num_parameters() * 4 / 1e6:.1f} MB fp32, {results[name]:,.0f} tok/s")
    return results
