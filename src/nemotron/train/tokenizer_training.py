"""Train a SentencePiece `tokenizer.model` laid out like Nemotron's: pad 0, unk 1, `<s>` 2, `</s>` 3,
then the chat markers `<extra_id_0>` `<extra_id_1>` `<extra_id_2>` as user-defined symbols (so they
are parsed out of text and never split), digits split one per piece, byte fallback for anything
unseen, and text kept as it is (no normalisation), so newlines and spacing survive a round trip."""
from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import sentencepiece

from nemotron.errors import ConfigError
from nemotron.tokenizer import REWARD_TOKEN, SYSTEM_TOKEN, TURN_TOKEN, Tokenizer

SPECIAL_IDS = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}


@dataclass(slots=True, frozen=True)
class TokenizerTrainingConfig:
    vocab_size: int = 4096
    model_type: str = "bpe"  # or "unigram"
    # "\n" is a symbol of its own: chat turns end in one, and it must never merge with the text next to it.
    user_symbols: tuple[str, ...] = field(default=(SYSTEM_TOKEN, TURN_TOKEN, REWARD_TOKEN, "\n"))
    character_coverage: float = 1.0
    max_sentence_length: int = 1 << 16  # bytes; a document is one "sentence"
    num_threads: int = 2

    def __post_init__(self) -> None:
        minimum = len(SPECIAL_IDS) + len(self.user_symbols) + 256 + 16  # specials, symbols, bytes, a few merges
        if self.vocab_size < minimum:
            raise ConfigError(f"TokenizerTrainingConfig.vocab_size must be at least {minimum}, got {self.vocab_size}")
        if self.model_type not in ("bpe", "unigram"):
            raise ConfigError(f"TokenizerTrainingConfig.model_type must be bpe or unigram, got {self.model_type!r}")
        if not 0.9 <= self.character_coverage <= 1.0:
            raise ConfigError("TokenizerTrainingConfig.character_coverage must be in [0.9, 1]")


def train_tokenizer(texts: Iterable[str], config: TokenizerTrainingConfig, out_dir: str | Path | None = None
                    ) -> Tokenizer:
    """Train on `texts` (documents); writes out_dir/tokenizer.model when out_dir is given."""
    texts = [t for t in texts if t]  # read first: errors raised inside the trainer's iterator get garbled
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model,
        vocab_size=config.vocab_size, model_type=config.model_type,
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>",
        eos_piece="</s>", user_defined_symbols=list(config.user_symbols), byte_fallback=True,
        split_digits=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, character_coverage=config.character_coverage,
        max_sentence_length=config.max_sentence_length, num_threads=config.num_threads,
        hard_vocab_limit=False, minloglevel=2)
    tokenizer = Tokenizer.from_sentencepiece_bytes(model.getvalue(), source="trained tokenizer")
    if out_dir is not None:
        tokenizer.save(out_dir)
    return tokenizer
