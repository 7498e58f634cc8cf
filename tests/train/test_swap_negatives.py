"""The alignment loop's swapped-answer pairs (benchmarks/alignment_loop.py --swap-negatives): exact
hard negatives for the reward model, from the training facts only."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from nemotron.sdg.answers import check_reference


@pytest.fixture(scope="module")
def loop():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "alignment_loop.py"
    spec = importlib.util.spec_from_file_location("alignment_loop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_swapped_answers_are_wrong_differ_only_in_the_answer_and_come_from_training_facts(loop):
    train, _, held = loop.questions(seed=0, held_out=0.2, valid=0.1, phrasings=3)
    rows = loop.swap_negatives(train, per_question=2, seed=0)
    key = lambda prompt, reference: (prompt, reference)  # noqa: E731 (one wording can ask two relations)
    by_key = {key(q["prompt"], q["reference"]): q for q in train}
    per_question: dict[tuple, int] = {}
    for row in rows:
        k = key(row["prompt"][0]["content"], row["chosen"])
        per_question[k] = per_question.get(k, 0) + 1
    # Every question but the free-form science ones gets its two pairs; even/odd has one wrong answer.
    assert {q["relation"] for k, q in by_key.items() if k not in per_question} == {"science"}
    assert {by_key[k]["relation"] for k, n in per_question.items() if n != 2} == {"even"}
    assert {n for k, n in per_question.items() if by_key[k]["relation"] == "even"} == {1}
    examples = {}
    for row in rows:
        q = by_key[key(row["prompt"][0]["content"], row["chosen"])]
        assert row["category"] == q["category"]
        assert row["rejected"] != row["chosen"] and not check_reference(row["rejected"], q["reference"])
        prefix = len(_common_prefix(row["chosen"], row["rejected"]))
        suffix = len(_common_prefix(row["chosen"][::-1], row["rejected"][::-1]))
        assert prefix + suffix >= len(row["chosen"]) - len(loop._answer_slot(q["relation"])(q["entity"], [])[0])
        examples.setdefault(q["relation"], (row["chosen"], row["rejected"]))
    assert {"add", "capital", "baby", "legs", "even", "day_before"} <= set(examples)
    assert examples["add"][1].rsplit(" ", 1)[0] == examples["add"][0].rsplit(" ", 1)[0]  # "x plus y is" kept
    # Swapped-in values are those of training facts: no held-out capital appears in a capital pair.
    held_capitals = {q["entity"][1] for q in held if q["relation"] == "capital"}
    train_capitals = {q["entity"][1] for q in train if q["relation"] == "capital"}
    assert held_capitals - train_capitals
    for row in rows:
        if by_key[key(row["prompt"][0]["content"], row["chosen"])]["relation"] == "capital":
            assert not any(c in row["rejected"] for c in held_capitals - train_capitals)
    assert loop.swap_negatives(train, 2, seed=0) == rows  # seeded


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]
