"""The demo model's README.md (model card), filled with the numbers of the build that made it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from nemotron.model.config import ModelConfig

if TYPE_CHECKING:
    from nemotron.train.demo import DemoBuildConfig
    from nemotron.train.trainer import TrainResult


def write_model_card(path: Path, build: DemoBuildConfig, model: ModelConfig, pretrain: TrainResult,
                     sft: TrainResult, minutes: float, samples: list[tuple[str, str, str]]) -> None:
    c, corpus = model, build.corpus
    size_mb = (path.parent / "model.safetensors").stat().st_size / 1e6
    shown = "\n\n".join(f"**{title}** — prompt `{prompt!r}`\n\n```\n{reply.strip()}\n```"
                        for title, prompt, reply in samples)
    valid = lambda r: "n/a" if r.valid_loss is None else f"{r.valid_loss:.3f}"  # noqa: E731
    path.write_text(f"""# nemotron demo model

A tiny Nemotron-architecture language model trained from scratch by this project, so that
`nemotron generate`, `nemotron chat` and `nemotron serve` show real text out of the box with no
download. It is a toy: it writes short, simple children's stories and answers a small set of easy
questions in the Nemotron-4 Instruct chat format. It is **not** a distilled or shrunken Nemotron
and knows nothing beyond its synthetic training text.

## Architecture

Nemotron-4 layout (LayerNorm1p, squared-ReLU MLP without gate, GQA, partial rotary embedding on
the first half of each head, untied output layer): {c.num_layers} layers, hidden {c.hidden_size},
FFN {c.intermediate_size}, {c.num_heads} query heads and {c.num_kv_heads} KV heads of dimension
{c.head_dim}, rotary fraction {c.rotary_fraction}, context {c.max_position_embeddings} tokens,
vocabulary {c.vocab_size}. {c.num_parameters():,} parameters, stored as float32
(`model.safetensors`, {size_mb:.1f} MB).

## Training

- **Data**: generated offline by `nemotron.train.demo_corpus` (seed {corpus.seed}):
  {corpus.num_stories:,} short stories (ten plot outlines over a cast of children and animals,
  places, toys and feelings, each beat with several phrasings), {corpus.num_fact_documents:,} short
  factual texts (countries and capitals, animals, colors, numbers and arithmetic, days and months,
  everyday science) and {corpus.num_chats:,} chat conversations whose answers are computed from
  the same tables. Released with the package under its license (Apache-2.0).
- **Tokenizer**: SentencePiece BPE trained on that text (`nemotron train tokenizer`): pad 0, unk 1,
  `<s>` 2, `</s>` 3, `<extra_id_0..2>` as user-defined symbols, digits split, byte fallback.
- **Pretraining**: {build.pretrain_steps} steps of {build.batch_size} x {build.seq_len} tokens
  (AdamW, peak learning rate {build.pretrain_lr}, warmup + cosine decay, gradient clipping 1.0),
  final train loss {pretrain.train_loss:.3f}, validation loss {valid(pretrain)}.
- **SFT**: {build.sft_steps} steps on the chat data, loss on assistant turns only (each reply plus
  the `<extra_id_1>` that ends it), {build.sft_text_fraction:.0%} plain stories mixed in; final train
  loss {sft.train_loss:.3f}, validation loss {valid(sft)}.
- **Build time**: {minutes:.1f} minutes on {os.cpu_count()} CPU cores, fp32. Reproduce with
  `nemotron train demo` (or `python scripts/build_demo_model.py`); on a machine that other jobs keep
  busy, `--threads 1` is several times faster than torch's default of one thread per core.

## What it can and cannot do

It can continue a story opening in simple English, tell a short story on request ("Tell me a
story about a cat"), answer the kinds of questions it was trained on (capitals of about forty
countries, what animals say and eat, colors, sums up to 10 + 10, differences up to 20 - 10, times
tables up to 10, months of the year, a few science facts) and end its reply with `<extra_id_1>` as Nemotron Instruct models do.

It often gets the order of the days of the week wrong, and in longer stories it sometimes gives
two characters the same name. It cannot follow open-ended instructions, reason, write code, or know
anything outside its tiny synthetic corpus; asked about something else it answers with a plausible-sounding but made-up
sentence in the same style. Its stories repeat the patterns of the training templates. Do not use
it for anything but trying out the tooling.

## Samples from this build

{shown}
""", encoding="utf-8")
