"""An openly licensed training corpus generated offline: simple stories, simple facts and chat data.

Everything is built from this package's own tables and templates (demo_world, demo_plots,
demo_facts, demo_chat), deterministically from a seed, so the demo model can be rebuilt anywhere
without downloads. The text is released with the package under its license (Apache-2.0).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from random import Random

from nemotron.errors import ConfigError
from nemotron.train.demo_chat import conversation
from nemotron.train.demo_facts import (
    ADDITIONS, ANIMALS, CALENDAR_QA, COLOUR_MIXES, COUNTRIES, DAYS, MONTHS, NUMBER_WORDS, ORDINALS, PRODUCTS,
    SCIENCE, SUBTRACTIONS, THING_COLOURS, a_or_an, cap, end, relations,
)
from nemotron.train.demo_stories import tell_story


@dataclass(slots=True, frozen=True)
class CorpusConfig:
    seed: int = 0
    num_stories: int = 20000
    num_fact_documents: int = 6000
    num_chats: int = 20000
    num_validation: int = 500  # held-out pretraining documents

    def __post_init__(self) -> None:
        for name in ("num_stories", "num_fact_documents", "num_chats", "num_validation"):
            if getattr(self, name) < 0:
                raise ConfigError(f"CorpusConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(slots=True, frozen=True)
class CorpusFiles:
    train_text: Path  # {"text": document} per line
    valid_text: Path
    chat: Path  # {"messages": [...]} per line


def _country_doc(rng: Random) -> str:
    out = []
    for name, capital, continent, language in rng.sample(COUNTRIES, rng.randint(1, 4)):
        parts = [rng.choice((f"{cap(name)} is a country in {continent}.", f"{cap(name)} is in {continent}.")),
                 end(rng.choice((f"The capital of {name} is {capital}", f"Its capital city is {capital}"))),
                 rng.choice((f"People in {name} speak {language}.", f"The people there speak {language}."))]
        if rng.random() < 0.5:
            parts[:2] = [end(f"{capital} is the capital of {name}"), f"{cap(name)} is a country in {continent}."]
        out.append(" ".join(parts))
    return " ".join(out)


def _animal_doc(rng: Random) -> str:
    out = []
    for name, plural, sound, home, food, legs, baby, kind in rng.sample(ANIMALS, rng.randint(1, 3)):
        facts = [f"{cap(a_or_an(name))} is {a_or_an(kind)}.", f"{cap(plural)} live {home}.",
                 f"{cap(plural)} eat {food}.", f"{cap(a_or_an(name))} {sound}.",
                 f"A baby {name} is called {a_or_an(baby)}.",
                 f"{cap(a_or_an(name))} has {'no' if legs == 0 else NUMBER_WORDS[legs]} legs."]
        first, rest = facts[0], facts[1:]
        rng.shuffle(rest)
        out.append(" ".join([first] + rest[:rng.randint(3, 5)]))
    return " ".join(out)


def _colour_doc(rng: Random) -> str:
    things = [f"{cap(t)} {v} {c}." for t, v, c in rng.sample(THING_COLOURS, rng.randint(3, 6))]
    mixes = [f"If you mix {a} and {b}, you get {c}." for a, b, c in rng.sample(COLOUR_MIXES, rng.randint(0, 2))]
    return " ".join(things + mixes)


def _number_doc(rng: Random) -> str:
    kind = rng.randrange(7)
    if kind == 5:
        k = rng.randint(0, 10)
        return f"Adding {k}. " + " ".join(f"{i} plus {k} is {i + k}." for i in range(0, 11))
    if kind == 6:
        k = rng.randint(0, 10)
        return f"Taking away {k}. " + " ".join(f"{i} minus {k} is {i - k}." for i in range(k, min(k + 11, 21)))
    if kind == 0:
        n = rng.randint(5, 20)
        return f"Let us count to {NUMBER_WORDS[n]}: " + ", ".join(str(i) for i in range(1, n + 1)) + "."
    if kind == 1:
        k = rng.randint(1, 10)
        return f"The {k} times table. " + " ".join(f"{i} times {k} is {i * k}." for i in range(1, 11))
    if kind == 2:
        sums = [f"{x} + {y} = {x + y}" for x, y in rng.sample(ADDITIONS, 5)]
        sums += [f"{x} - {y} = {x - y}" for x, y in rng.sample(SUBTRACTIONS, 3)]
        rng.shuffle(sums)
        return "Some sums: " + ", ".join(sums) + "."
    if kind == 3:
        lines = [f"{x} plus {y} is {x + y}." for x, y in rng.sample(ADDITIONS, 3)]
        lines += [f"{x} minus {y} is {x - y}." for x, y in rng.sample(SUBTRACTIONS, 2)]
        lines += [f"{x} times {y} is {x * y}." for x, y in rng.sample(PRODUCTS, 2)]
        rng.shuffle(lines)
        return " ".join(lines)
    n = rng.randint(0, 20)
    parity = "even" if n % 2 == 0 else "odd"
    return f"The number {n} is written {NUMBER_WORDS[n]}. It is an {parity} number. After {n} comes {n + 1}."


def _arithmetic_doc(rng: Random) -> str:
    """A drill: the sums, differences and products the chat data asks about, in the answers' words."""
    lines = []
    for _ in range(rng.randint(4, 8)):
        op = rng.randrange(3)
        if op == 0:
            x, y = rng.choice(ADDITIONS)
            question, answer = f"What is {x} plus {y}?", f"{x} plus {y} is {x + y}."
        elif op == 1:
            x, y = rng.choice(SUBTRACTIONS)
            question, answer = f"What is {x} minus {y}?", f"{x} minus {y} is {x - y}."
        else:
            x, y = rng.choice(PRODUCTS)
            question, answer = f"What is {x} times {y}?", f"{x} times {y} is {x * y}."
        lines.append(f"{question} {answer}" if rng.random() < 0.5 else answer)
    return " ".join(lines)


def _calendar_doc(rng: Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        i = rng.randrange(7)
        return (f"There are seven days in a week. The days are {', '.join(DAYS[:-1])} and Sunday. "
                f"After {DAYS[i]} comes {DAYS[(i + 1) % 7]}. Saturday and Sunday are the weekend.")
    if kind == 1:
        return " ".join(f"After {DAYS[i]} comes {DAYS[(i + 1) % 7]}." for i in range(7))
    if kind == 2:
        return "There are twelve months in a year. " + " ".join(
            f"{MONTHS[i]} is the {ORDINALS[i]} month." for i in range(12))
    i = rng.randrange(12)
    return (f"There are twelve months in a year. {MONTHS[0]} is the first month and {MONTHS[-1]} is the last. "
            f"{MONTHS[i]} comes after {MONTHS[i - 1]}.")


def _qa_doc(rng: Random) -> str:
    rels = relations()
    lines = []
    for _ in range(rng.randint(2, 5)):
        rel = rng.choice(rels)
        entity = rng.choice(rel.entities)
        lines.append(f"Question: {rel.ask(rng, entity)}\nAnswer: {rel.answer(entity)}")
    return "\n".join(lines)


def fact_document(rng: Random) -> str:
    """One short factual document about one topic."""
    kind = rng.choices(range(8), weights=(3, 3, 1, 6, 2, 1, 3, 8))[0]
    if kind == 7:
        return _arithmetic_doc(rng)
    if kind == 4:
        return _calendar_doc(rng)
    if kind == 5:
        picks = rng.sample(SCIENCE + CALENDAR_QA, rng.randint(2, 4))
        return " ".join(answer for _, answer in picks)
    return (_country_doc, _animal_doc, _colour_doc, _number_doc, None, None, _qa_doc)[kind](rng)


def pretraining_documents(config: CorpusConfig) -> list[str]:
    """Stories and fact documents, shuffled, deterministic from config.seed."""
    rng = Random(config.seed)
    docs = [tell_story(rng) for _ in range(config.num_stories)]
    docs += [fact_document(rng) for _ in range(config.num_fact_documents)]
    rng.shuffle(docs)
    return docs


def chat_records(config: CorpusConfig) -> list[dict]:
    rng = Random(config.seed + 1)
    rels = relations()
    return [{"messages": conversation(rng, rels)} for _ in range(config.num_chats)]


def write_corpus(config: CorpusConfig, directory: str | Path) -> CorpusFiles:
    """Write train/valid text (JSON lines of {"text": ...}) and chat data (JSON lines of messages)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    docs = pretraining_documents(config)
    valid, train = docs[:config.num_validation], docs[config.num_validation:]
    files = CorpusFiles(directory / "train.jsonl", directory / "valid.jsonl", directory / "chat.jsonl")
    for path, records in ((files.train_text, [{"text": d} for d in train]),
                          (files.valid_text, [{"text": d} for d in valid]), (files.chat, chat_records(config))):
        with path.open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return files
