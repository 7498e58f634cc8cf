"""Training batches: a token stream for pretraining and a chat dataset for SFT.

Both hand out batch number `step` as a pure function of (seed, step), so a resumed run sees exactly
the batches an uninterrupted run would have seen, with no data-loader state to checkpoint.

Input files: `.jsonl` with one {"text": ...} (documents) or {"messages": [...]} (chats) per line;
any other file is plain text with documents separated by blank lines.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from nemotron.errors import ConfigError, NemotronError
from nemotron.tokenizer import CHAT_STOP, Tokenizer, render_chat

IGNORE = -100  # target id that takes no loss (cross_entropy's ignore_index)


class DataError(NemotronError, ValueError):
    """A training data file is missing or malformed."""


@dataclass(slots=True)
class Batch:
    inputs: Tensor  # (B, T) token ids
    targets: Tensor  # (B, T) the next token at each position, IGNORE where no loss is taken

    @property
    def num_target_tokens(self) -> int:
        return int((self.targets != IGNORE).sum())

    def totals(self) -> dict[str, int]:
        return {"tokens": self.num_target_tokens}

    def split(self, rows: int) -> list[Batch]:
        """Micro-batches of `rows` rows each (gradient accumulation)."""
        return [Batch(i, t) for i, t in zip(self.inputs.split(rows), self.targets.split(rows))]

    def shard(self, rank: int, world_size: int) -> Batch:
        """This rank's rows of a data-parallel global batch."""
        rows = rank_rows(self.inputs.shape[0], rank, world_size)
        return Batch(self.inputs[rows], self.targets[rows])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True))


def rank_rows(count: int, rank: int, world_size: int) -> slice:
    """Rank `rank`'s contiguous share of `count` rows (the first ranks take one more when uneven)."""
    if count < world_size:
        raise ConfigError(f"a batch of {count} rows cannot feed {world_size} data-parallel ranks; "
                          "raise the batch size")
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


class BatchSource(Protocol):
    def batch(self, step: int) -> Batch: ...


@dataclass(slots=True, frozen=True)
class BatchConfig:
    batch_size: int = 16
    seq_len: int = 256  # tokens per row (longer chats are cut)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"BatchConfig.batch_size must be positive, got {self.batch_size}")
        if self.seq_len < 2:
            raise ConfigError(f"BatchConfig.seq_len must be at least 2, got {self.seq_len}")


def _records(path: Path) -> Iterator[dict | str]:
    if not path.is_file():
        raise DataError(f"training data file {path} does not exist")
    if path.suffix != ".jsonl":
        text = path.read_text(encoding="utf-8")
        yield from (doc.strip("\n") for doc in text.split("\n\n") if doc.strip())
        return
    for line_no, record in jsonl_objects(path):
        if not ({"text", "messages"} & record.keys()):
            raise DataError(f"{path}:{line_no} has neither a 'text' nor a 'messages' field")
        yield record


def jsonl_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; a line that is not a JSON
    object is an error naming it."""
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{line_no} is not valid JSON ({err})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line_no} is not a JSON object")
            yield line_no, record


def _text(path: Path, k: int, record: dict | str) -> str:
    if isinstance(record, str):
        return record
    if not isinstance(record.get("text"), str):
        raise DataError(f"{path}: record {k} has no 'text' string")
    return record["text"]


def read_documents(paths: Iterable[str | Path]) -> Iterator[str]:
    """The text documents of the given files ({"text"} records or blank-line separated text)."""
    for path in map(Path, paths):
        for k, record in enumerate(_records(path), 1):
            yield _text(path, k, record)


def read_texts(paths: Iterable[str | Path]) -> Iterator[str]:
    """Every text of the given files, chats rendered in the chat format (to train a tokenizer on)."""
    for path in map(Path, paths):
        for k, record in enumerate(_records(path), 1):
            if isinstance(record, dict) and "messages" in record:
                yield render_chat(record["messages"], add_generation_prompt=False) + CHAT_STOP
            else:
                yield _text(path, k, record)


def tokenize_documents(documents: Iterable[str], tokenizer: Tokenizer) -> Tensor:
    """One long stream: each document's tokens followed by EOS. -> (N,) int64"""
    if tokenizer.eos_id is None:
        raise DataError("the tokenizer has no EOS token to separate documents")
    ids: list[int] = []
    for doc in documents:
        ids.extend(tokenizer.encode(doc))
        ids.append(tokenizer.eos_id)
    return torch.tensor(ids, dtype=torch.long)


class TokenStream:
    """Random fixed-length windows of a token stream (pretraining)."""

    def __init__(self, tokens: Tensor, config: BatchConfig) -> None:
        if tokens.numel() <= config.seq_len + 1:
            raise DataError(f"the token stream has {tokens.numel()} tokens; windows of {config.seq_len + 1} "
                            "need more text")
        self.tokens, self.config = tokens, config

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], tokenizer: Tokenizer, config: BatchConfig) -> TokenStream:
        return cls(tokenize_documents(read_documents(paths), tokenizer), config)

    def batch(self, step: int) -> Batch:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        starts = torch.randint(0, self.tokens.numel() - cfg.seq_len - 1, (cfg.batch_size,), generator=generator)
        rows = torch.stack([self.tokens[s:s + cfg.seq_len + 1] for s in starts.tolist()])  # (B, T + 1)
        return Batch(rows[:, :-1], rows[:, 1:])


def encode_chat(messages: Sequence[dict], tokenizer: Tokenizer) -> tuple[list[int], list[bool]]:
    """Token ids of a rendered conversation and which of them are trained on: each assistant
    reply plus the "\\n<extra_id_1>" that closes it (so the model learns to stop), nothing else.

    Token boundaries are found by encoding the text up to each span edge, so the ids are exactly
    those of encoding the whole conversation at once (as inference will)."""
    if not messages or messages[-1].get("role") != "assistant":
        raise DataError("an SFT conversation must end with an assistant message")
    if not all(isinstance(m.get("content"), str) for m in messages):
        raise DataError("every SFT message needs a 'content' string")
    text = render_chat(messages, add_generation_prompt=False) + CHAT_STOP
    turns = messages[1:] if messages[0].get("role") == "system" else messages
    cursor = text.index(CHAT_STOP)  # past the system block
    spans = []
    for message in turns:
        header = f"{CHAT_STOP}{'User' if message['role'] == 'user' else 'Assistant'}\n"
        start = text.index(header + message["content"] + "\n", cursor) + len(header)
        cursor = start + len(message["content"]) + 1  # past the content and its newline
        if message["role"] == "assistant":
            spans.append((start, cursor + len(CHAT_STOP)))  # "...reply\n<extra_id_1>"
    ids = tokenizer.encode(text)
    mask = [False] * len(ids)
    for start, stop in spans:
        first, last = len(tokenizer.encode(text[:start])), len(tokenizer.encode(text[:stop]))
        mask[first:last] = [True] * (last - first)
    return ids, mask


def encode_text(text: str, tokenizer: Tokenizer) -> tuple[list[int], list[bool]]:
    """A plain document inside an SFT mix: trained on every token, EOS included."""
    ids = tokenizer.encode(text) + [tokenizer.eos_id]
    return ids, [True] * len(ids)


class EpochOrder:
    """Which examples batch number `step` holds: every example once per epoch, in an order that is
    a pure function of (seed, epoch), so a resumed run sees the batches an uninterrupted one would."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._orders = {epoch: torch.randperm(self.size, generator=generator).tolist()}
        return self._orders[epoch]

    def picks(self, step: int, batch_size: int) -> list[int]:
        n = self.size
        return [self._order(k // n)[k % n] for k in range(step * batch_size, (step + 1) * batch_size)]


class ChatDataset:
    """SFT examples, shuffled per epoch, right-padded into batches."""

    def __init__(self, examples: list[tuple[list[int], list[bool]]], pad_id: int, config: BatchConfig) -> None:
        if not examples:
            raise DataError("the SFT dataset is empty")
        self.examples, self.pad_id, self.config = examples, pad_id, config
        self.order = EpochOrder(len(examples), config.seed)

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], tokenizer: Tokenizer, config: BatchConfig) -> ChatDataset:
        examples = []
        for path in map(Path, paths):
            for k, record in enumerate(_records(path), 1):
                if isinstance(record, str) or "messages" not in record:
                    examples.append(encode_text(_text(path, k, record), tokenizer))
                    continue
                try:
                    examples.append(encode_chat(record["messages"], tokenizer))
                except (ValueError, KeyError, TypeError) as err:
                    raise DataError(f"{path}: record {k}: {err}") from None
        return cls(examples, tokenizer.pad_id if tokenizer.pad_id is not None else 0, config)

    def batch(self, step: int) -> Batch:
        cfg = self.config
        rows = [self.examples[i] for i in self.order.picks(step, cfg.batch_size)]
        width = min(cfg.seq_len, max(len(ids) for ids, _ in rows) - 1)
        inputs = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for r, (ids, mask) in enumerate(rows):
            ids_t = torch.tensor(ids[:width + 1])
            keep = torch.tensor(mask[1:width + 1])
            inputs[r, :len(ids_t) - 1] = ids_t[:-1]
            targets[r, :len(ids_t) - 1] = torch.where(keep, ids_t[1:], IGNORE)
        return Batch(inputs, targets)
