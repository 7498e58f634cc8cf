"""Preference and rating data for DPO, RPO and reward-model training.

Rows are read from `.jsonl` or `.parquet` files in any of these layouts:
- `nemotron sdg` preference output: `prompt` (messages), `chosen` / `rejected` (text or messages),
  `chosen_reward` / `rejected_reward`, `judge`;
- TRL preference rows: standard (`prompt`, `chosen`, `rejected` strings), conversational
  (`prompt` messages, `chosen` / `rejected` assistant messages) or with the prompt implicit in
  `chosen` / `rejected` full conversations; `score_chosen` / `score_rejected` as rewards;
- HelpSteer2-Preference pairs: `prompt`, `response_1`, `response_2`, `preference_strength`
  (negative: response 1 is better; its magnitude is the margin);
- HelpSteer2 rated responses: `prompt`, `response` and any of helpfulness, correctness,
  coherence, complexity, verbosity (plus the other Nemotron-4 340B Reward attributes).
A `category` (or `subset`) field groups rows in reward-model evaluation tables.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from nemotron.model.config import REWARD_ATTRIBUTES
from nemotron.tokenizer import CHAT_STOP, Tokenizer, render_chat, render_reward_prompt
from nemotron.train.data import IGNORE, BatchConfig, DataError, EpochOrder, jsonl_objects, rank_rows

Messages = list[dict]


@dataclass(slots=True, frozen=True)
class PreferenceRow:
    prompt: Messages  # the conversation up to the reply being judged (ends with a user turn)
    chosen: str
    rejected: str
    chosen_reward: float | None = None
    rejected_reward: float | None = None
    margin: float | None = None  # preference strength (HelpSteer2-Preference), for scaled Bradley-Terry
    category: str | None = None

    @property
    def reward_gap(self) -> float | None:
        if self.chosen_reward is None or self.rejected_reward is None:
            return None
        return self.chosen_reward - self.rejected_reward


@dataclass(slots=True, frozen=True)
class RatedRow:
    prompt: Messages
    response: str
    ratings: dict[str, float]  # attribute -> score, attributes from REWARD_ATTRIBUTES
    category: str | None = None


def read_rows(paths: Iterable[str | Path]) -> Iterator[tuple[str, dict]]:
    """(where, row) for every row of the given .jsonl / .parquet files."""
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"training data file {path} does not exist")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq  # optional extra, only for Parquet input

            for k, row in enumerate(pq.read_table(path).to_pylist(), 1):
                yield f"{path}: row {k}", row
            continue
        for line_no, row in jsonl_objects(path):
            yield f"{path}:{line_no}", row


def parse_row(row: Mapping, where: str) -> PreferenceRow | RatedRow:
    """One row in any supported layout -> a preference pair or a rated response."""
    category = row.get("category", row.get("subset"))
    category = None if category is None else str(category)
    try:
        if "response_1" in row and "preference_strength" in row:
            strength = float(row["preference_strength"])
            first, second = _reply(row["response_1"]), _reply(row["response_2"])
            chosen, rejected = (first, second) if strength < 0 else (second, first)
            return PreferenceRow(_prompt(row["prompt"]), chosen, rejected, margin=abs(strength), category=category)
        if "chosen" in row and "rejected" in row:
            if "prompt" in row and row["prompt"] is not None:
                prompt, chosen, rejected = _prompt(row["prompt"]), _reply(row["chosen"]), _reply(row["rejected"])
            else:
                prompt, chosen, rejected = _implicit_prompt(row["chosen"], row["rejected"])
            rewards = [row.get(k, row.get(alt)) for k, alt in (("chosen_reward", "score_chosen"),
                                                                ("rejected_reward", "score_rejected"))]
            margin = row.get("margin")
            return PreferenceRow(prompt, chosen, rejected, *(None if r is None else float(r) for r in rewards),
                                 margin=None if margin is None else float(margin), category=category)
        if "response" in row and "prompt" in row:
            ratings = {a: float(row[a]) for a in REWARD_ATTRIBUTES if row.get(a) is not None}
            if not ratings:
                raise DataError(f"no attribute ratings (any of {', '.join(REWARD_ATTRIBUTES)})")
            return RatedRow(_prompt(row["prompt"]), _reply(row["response"]), ratings, category)
    except (TypeError, ValueError, KeyError) as err:
        raise DataError(f"{where}: {err}") from None
    raise DataError(f"{where}: not a preference row (prompt/chosen/rejected, response_1/response_2/"
                    "preference_strength) nor a rated response (prompt/response/attributes)")


def read_preference_data(paths: Sequence[str | Path]) -> list[PreferenceRow | RatedRow]:
    rows = [parse_row(row, where) for where, row in read_rows(paths)]
    if not rows:
        raise DataError(f"no rows in {', '.join(map(str, paths))}")
    return rows


def _prompt(value) -> Messages:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, Mapping) for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise DataError("'prompt' must be a string or a non-empty list of messages")


def _reply(value) -> str:
    """A response given as text, or as messages whose last one is the assistant's reply."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], Mapping) and value[-1].get("role") == "assistant":
        if len(value) > 1:
            raise DataError("a response given as messages must be the assistant reply alone "
                            "(put earlier turns in 'prompt')")
        return str(value[-1]["content"])
    raise DataError("a response must be a string or a list holding one assistant message")


def _implicit_prompt(chosen, rejected) -> tuple[Messages, str, str]:
    """TRL's implicit-prompt rows: two full conversations sharing every turn but the last."""
    if not (isinstance(chosen, list) and isinstance(rejected, list) and len(chosen) == len(rejected) >= 2):
        raise DataError("without 'prompt', 'chosen' and 'rejected' must be whole conversations of equal length")
    prompt = _prompt(chosen[:-1])
    if prompt != _prompt(rejected[:-1]):
        raise DataError("'chosen' and 'rejected' conversations differ before their last message")
    return prompt, _reply(chosen[-1:]), _reply(rejected[-1:])


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode_reply(prompt: Messages, reply: str, tokenizer: Tokenizer) -> tuple[list[int], int]:
    """Token ids of prompt + reply in the chat format, and where the reply starts. The trained
    part is the reply plus the "\\n<extra_id_1>" that ends the turn, as in SFT (data.encode_chat).
    The split is where encoding the prompt alone stops agreeing with the whole (tokens may merge
    across the boundary; the whole is what inference sees)."""
    prompt_text = render_chat(prompt, add_generation_prompt=True)
    full = render_chat([*prompt, {"role": "assistant", "content": reply}], add_generation_prompt=False).then(CHAT_STOP)
    ids = tokenizer.encode(full)
    return ids, common_prefix(tokenizer.encode(prompt_text), ids)


def encode_scored(prompt: Messages, reply: str, tokenizer: Tokenizer) -> list[int]:
    """The reward model's input for one reply (its scores are read at the last token)."""
    return tokenizer.encode(render_reward_prompt([*prompt, {"role": "assistant", "content": reply}]))


# --- policy pairs (DPO / RPO) --------------------------------------------------------------------

@dataclass(slots=True)
class PairExample:
    chosen: tuple[list[int], int]  # (ids, reply start)
    rejected: tuple[list[int], int]
    reward_gap: float | None


@dataclass(slots=True)
class PreferenceBatch:
    """B pairs as 2B rows: the chosen responses, then the rejected ones, right-padded."""

    inputs: Tensor  # (2B, T)
    targets: Tensor  # (2B, T) next tokens inside the replies, IGNORE elsewhere
    index: Tensor  # (B,) example numbers in their dataset
    reward_gap: Tensor | None  # (B,) r(x, y_c) - r(x, y_l), when every pair has rewards
    reference: Tensor | None  # (B, 2) the reference policy's summed log-probs of (chosen, rejected)

    @property
    def num_pairs(self) -> int:
        return self.index.numel()

    @property
    def num_target_tokens(self) -> int:
        return int((self.targets != IGNORE).sum())

    def totals(self) -> dict[str, int]:
        return {"pairs": self.num_pairs, "chosen_tokens": int((self.targets[:self.num_pairs] != IGNORE).sum())}

    def split(self, rows: int) -> list[PreferenceBatch]:
        """Micro-batches of `rows` pairs each (gradient accumulation)."""
        return [self.split_at(s, min(s + rows, self.num_pairs)) for s in range(0, self.num_pairs, rows)]

    def shard(self, rank: int, world_size: int) -> PreferenceBatch:
        """This rank's pairs of a data-parallel global batch."""
        rows = rank_rows(self.num_pairs, rank, world_size)
        return self.split_at(rows.start, rows.stop)

    def split_at(self, start: int, stop: int) -> PreferenceBatch:
        b = self.num_pairs
        take = torch.cat([torch.arange(start, stop), torch.arange(b + start, b + stop)])
        cut = lambda t: None if t is None else t[start:stop]  # noqa: E731
        return PreferenceBatch(self.inputs[take], self.targets[take], self.index[start:stop], cut(self.reward_gap),
                               cut(self.reference))

    def to(self, device) -> PreferenceBatch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return PreferenceBatch(self.inputs.to(device), self.targets.to(device), self.index.to(device),
                               move(self.reward_gap), move(self.reference))


def pad_rows(rows: Sequence[tuple[list[int], int]], pad_id: int, seq_len: int) -> tuple[Tensor, Tensor]:
    """(ids, trained-from) rows -> inputs, targets (N, W), cut at seq_len + 1 tokens."""
    width = min(seq_len, max(len(ids) for ids, _ in rows) - 1)
    inputs = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for r, (ids, start) in enumerate(rows):
        ids_t = torch.tensor(ids[:width + 1])
        n = len(ids_t) - 1
        inputs[r, :n] = ids_t[:-1]
        # target position t predicts token t + 1: the reply's first token is predicted at start - 1
        targets[r, max(start - 1, 0):n] = ids_t[max(start, 1):]
    return inputs, targets


class PreferenceDataset:
    """Pairs for DPO and RPO, shuffled per epoch."""

    def __init__(self, examples: list[PairExample], pad_id: int, config: BatchConfig) -> None:
        if not examples:
            raise DataError("the preference dataset has no usable pairs")
        self.examples, self.pad_id, self.config = examples, pad_id, config
        self.order = EpochOrder(len(examples), config.seed)
        self.reference: Tensor | None = None  # (N, 2), set once the reference policy has scored the pairs

    @classmethod
    def from_rows(cls, rows: Iterable[PreferenceRow | RatedRow], tokenizer: Tokenizer, config: BatchConfig,
                  need_rewards: bool = False) -> PreferenceDataset:
        examples = []
        for k, row in enumerate(rows, 1):
            if isinstance(row, RatedRow):
                raise DataError(f"row {k} is a rated response, not a preference pair; DPO and RPO need pairs")
            if need_rewards and row.reward_gap is None:
                raise DataError(f"row {k} has no chosen_reward / rejected_reward; RPO needs the reward gap")
            chosen, rejected = (encode_reply(row.prompt, r, tokenizer) for r in (row.chosen, row.rejected))
            if max(chosen[1], rejected[1]) >= config.seq_len:
                continue  # the prompt alone fills the window: no reply token would be trained
            examples.append(PairExample(chosen, rejected, row.reward_gap))
        return cls(examples, tokenizer.pad_id if tokenizer.pad_id is not None else 0, config)

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, step: int) -> PreferenceBatch:
        picks = self.order.picks(step, self.config.batch_size)
        return self.collate(picks)

    def collate(self, picks: Sequence[int]) -> PreferenceBatch:
        pairs = [self.examples[i] for i in picks]
        inputs, targets = pad_rows([p.chosen for p in pairs] + [p.rejected for p in pairs], self.pad_id,
                                   self.config.seq_len)
        gaps = [p.reward_gap for p in pairs]
        reward_gap = None if any(g is None for g in gaps) else torch.tensor(gaps, dtype=torch.float32)
        index = torch.tensor(list(picks), dtype=torch.long)
        reference = None if self.reference is None else self.reference[index]
        return PreferenceBatch(inputs, targets, index, reward_gap, reference)


# --- reward model (Bradley-Terry pairs and attribute regression) --------------------------------

@dataclass(slots=True)
class RewardExample:
    ids: list[list[int]]  # one sequence for a rated response, two (chosen, rejected) for a pair
    starts: list[int]  # where each sequence's reply begins
    ratings: list[float | None] | None  # per attribute, None where unrated
    margin: float | None
    category: str | None


@dataclass(slots=True)
class RewardBatch:
    """P pairs (rows 0..P-1 chosen, P..2P-1 rejected), then R rated responses, right-padded."""

    inputs: Tensor  # (2P + R, T)
    lengths: Tensor  # (2P + R,)
    starts: Tensor  # (2P + R,) where each reply begins
    num_pairs: int
    margin: Tensor | None  # (P,)
    ratings: Tensor  # (R, A), 0 where unrated
    rated: Tensor  # (R, A) bool: which ratings exist
    teacher: Tensor | None = None  # (P,) a frozen language model's log p(chosen) - log p(rejected)
    teacher_logps: Tensor | None = None  # (2P + R, T) its log-prob of each reply token at its position, 0 elsewhere

    @property
    def num_target_tokens(self) -> int:
        return int(self.lengths.sum())

    def totals(self) -> dict[str, int]:
        # The chosen replies' tokens and the newline closing them (not the final <extra_id_2>).
        lm_tokens = int((self.lengths[:self.num_pairs] - 1 - self.starts[:self.num_pairs]).clamp(min=0).sum())
        # Every row's reply positions and its final token, where the prompt is in the window (dense distillation).
        dense_tokens = int(((self.lengths - self.starts).clamp(min=0) * (self.starts >= 1)).sum())
        return {"pairs": self.num_pairs, "ratings": int(self.rated.sum()), "lm_tokens": lm_tokens,
                "dense_tokens": dense_tokens}

    def split(self, rows: int) -> list[RewardBatch]:
        """Micro-batches of about `rows` sequences: pairs stay whole."""
        p, r, out = self.num_pairs, self.ratings.shape[0], []
        pair_chunks = [(s, min(s + max(rows // 2, 1), p)) for s in range(0, p, max(rows // 2, 1))]
        for s, e in pair_chunks:
            take = torch.cat([torch.arange(s, e), torch.arange(p + s, p + e)])
            out.append(RewardBatch(self.inputs[take], self.lengths[take], self.starts[take], e - s,
                                   None if self.margin is None else self.margin[s:e],
                                   self.ratings[:0], self.rated[:0], _cut(self.teacher, slice(s, e)),
                                   _cut(self.teacher_logps, take)))
        for s in range(0, r, rows):
            rated = slice(2 * p + s, 2 * p + min(s + rows, r))
            out.append(RewardBatch(self.inputs[rated], self.lengths[rated], self.starts[rated], 0, None,
                                   self.ratings[s:s + rows], self.rated[s:s + rows],
                                   _cut(self.teacher, slice(0, 0)),  # no pairs, but distillation still runs
                                   _cut(self.teacher_logps, rated)))
        return out

    def shard(self, rank: int, world_size: int) -> RewardBatch:
        """This rank's share of a data-parallel global batch: pairs and rated responses count as
        one unit each, pairs first, and each rank takes a contiguous run of units."""
        p, r = self.num_pairs, self.ratings.shape[0]
        units = rank_rows(p + r, rank, world_size)
        pairs = slice(min(units.start, p), min(units.stop, p))
        rated = slice(max(units.start - p, 0), max(units.stop - p, 0))
        take = torch.cat([torch.arange(pairs.start, pairs.stop), torch.arange(p + pairs.start, p + pairs.stop),
                          torch.arange(2 * p + rated.start, 2 * p + rated.stop)])
        return RewardBatch(self.inputs[take], self.lengths[take], self.starts[take], pairs.stop - pairs.start,
                           None if self.margin is None else self.margin[pairs], self.ratings[rated], self.rated[rated],
                           _cut(self.teacher, pairs), _cut(self.teacher_logps, take))

    def to(self, device) -> RewardBatch:
        return RewardBatch(self.inputs.to(device), self.lengths.to(device), self.starts.to(device), self.num_pairs,
                           None if self.margin is None else self.margin.to(device), self.ratings.to(device),
                           self.rated.to(device), _move(self.teacher, device), _move(self.teacher_logps, device))


class RewardDataset:
    """Pairs and rated responses for reward-model training, shuffled per epoch."""

    def __init__(self, examples: list[RewardExample], pad_id: int, config: BatchConfig,
                 num_attributes: int) -> None:
        if not examples:
            raise DataError("the reward dataset is empty")
        self.examples, self.pad_id, self.config = examples, pad_id, config
        self.num_attributes = num_attributes
        self.order = EpochOrder(len(examples), config.seed)
        self.teacher: Tensor | None = None  # (N,) per example, set by a distilling objective (NaN: rated)
        # Per example and sequence, a frozen LM's log-prob of each reply token (dense distillation).
        self.teacher_logps: list[list[Tensor]] | None = None

    @classmethod
    def from_rows(cls, rows: Iterable[PreferenceRow | RatedRow], tokenizer: Tokenizer, config: BatchConfig,
                  num_attributes: int = len(REWARD_ATTRIBUTES)) -> RewardDataset:
        names = REWARD_ATTRIBUTES[:num_attributes]
        examples = []
        for row in rows:
            replies = [row.response] if isinstance(row, RatedRow) else [row.chosen, row.rejected]
            # A reply begins where its ids stop agreeing with the same conversation's with an empty reply
            # (a token merged across the boundary counts as reply).
            empty = encode_scored(row.prompt, "", tokenizer)
            scored = [encode_scored(row.prompt, r, tokenizer) for r in replies]
            ids, starts = zip(*(_keep_end(s, common_prefix(s, empty), config.seq_len) for s in scored))
            ratings = [row.ratings.get(a) for a in names] if isinstance(row, RatedRow) else None
            examples.append(RewardExample(list(ids), list(starts), ratings,
                                          None if isinstance(row, RatedRow) else row.margin, row.category))
        return cls(examples, tokenizer.pad_id if tokenizer.pad_id is not None else 0, config, num_attributes)

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, step: int) -> RewardBatch:
        return self.collate(self.order.picks(step, self.config.batch_size))

    def collate(self, picks: Sequence[int]) -> RewardBatch:
        chosen = [self.examples[i] for i in picks]
        pair_picks = [i for i in picks if self.examples[i].ratings is None]
        pairs = [self.examples[i] for i in pair_picks]
        rated = [e for e in chosen if e.ratings is not None]
        seqs = [e.ids[0] for e in pairs] + [e.ids[1] for e in pairs] + [e.ids[0] for e in rated]
        width = max(len(s) for s in seqs)
        inputs = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        for r, s in enumerate(seqs):
            inputs[r, :len(s)] = torch.tensor(s)
        lengths = torch.tensor([len(s) for s in seqs])
        starts = torch.tensor([e.starts[0] for e in pairs] + [e.starts[1] for e in pairs] + [e.starts[0] for e in rated])
        margins = [e.margin for e in pairs]
        margin = None if not pairs or any(m is None for m in margins) else torch.tensor(margins)
        values = [[0.0 if v is None else v for v in e.ratings] for e in rated]
        ratings = torch.tensor(values, dtype=torch.float32).reshape(len(rated), self.num_attributes)
        mask = torch.tensor([[v is not None for v in e.ratings] for e in rated],
                            dtype=torch.bool).reshape(len(rated), self.num_attributes)
        teacher = None if self.teacher is None else self.teacher[torch.tensor(pair_picks, dtype=torch.long)]
        teacher_logps = None
        if self.teacher_logps is not None:  # the rows' order: pairs' chosen, their rejected, rated responses
            found = [self.teacher_logps[i] for i in pair_picks]
            rows = [s[0] for s in found] + [s[1] for s in found] + [self.teacher_logps[i][0] for i in picks
                                                                      if self.examples[i].ratings is not None]
            teacher_logps = torch.zeros(len(seqs), width)
            for r, row in enumerate(rows):
                teacher_logps[r, :len(row)] = row
        return RewardBatch(inputs, lengths, starts, len(pairs), margin, ratings, mask, teacher, teacher_logps)


def _cut(t: Tensor | None, rows: slice | Tensor) -> Tensor | None:
    return None if t is None else t[rows]


def _move(t: Tensor | None, device) -> Tensor | None:
    return None if t is None else t.to(device)


def _keep_end(ids: list[int], start: int, seq_len: int) -> tuple[list[int], int]:
    """The reward model reads its scores at the last token: cut long inputs from the front."""
    cut = max(len(ids) - seq_len, 0)
    return ids[cut:], max(start - cut, 0)
